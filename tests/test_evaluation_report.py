"""The evaluation report page on hand-made results: escaping, the per-object table, the curves.

No model here: ``result`` dicts are built with :func:`indvision.metrics.classification_metrics`,
as the evaluate stage builds them (tests/stages/test_evaluate.py covers the page of real runs).
"""

from __future__ import annotations

import base64
import re
from importlib import resources
from typing import Any

from indvision import evaluation_report, metrics
from indvision.evaluation_report import accuracy_text, percent, render_report

PNG = b"\x89PNG\r\n\x1a\n"  # only ever base64-encoded into the page, never decoded
NO_GATE = {"fail_below": None, "fail_below_defect_recall": None, "passed": True,
           "failures": [], "notes": []}


def _result(classes: list[str], good: str | None, **extra: Any) -> dict[str, Any]:
    """A result as ``metrics.json`` holds it: val and test of three images, one wrong."""
    labels, predicted = [0, 1, 1], [0, 0, 1]
    return {"good_class": good, "threshold": 0.75 if good else None,
            "escape_rate_target": 0.01, "gate": NO_GATE,
            **{part: metrics.classification_metrics(labels, predicted, classes, good)
               for part in ("val", "test")}, **extra}


def _card(path: str, true: str, predicted: str, escape: bool) -> dict[str, Any]:
    return {"path": path, "true": true, "predicted": predicted, "score": 0.875,
            "escape": escape, "good_score": 0.875 if escape else 0.125, "png": PNG}


def test_every_user_text_is_escaped_quotes_included():
    hostile = 'ok"><script>alert(1)</script>'
    path = "/data/<img src=x onerror='alert(2)'>.png"
    gate = {**NO_GATE, "fail_below": 0.99, "passed": False,
            "failures": ['test accuracy is below "0.99" <gate>'], "notes": ["<b>note</b>"]}
    result = _result([hostile, "d&nt"], hostile, gate=gate)
    page = render_report({"pipeline": "<i>pipe", "images from": path}, result, PNG, None,
                         [_card(path, "d&nt", hostile, escape=True)], 1)
    assert "<script" not in page and "<img src=x" not in page and "<b>note" not in page
    assert "<i>pipe" not in page and "&lt;i&gt;pipe" in page and "<gate>" not in page
    # as html.escape writes them: &quot; and &#x27;, in text and in attributes alike
    assert "ok&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'title="/data/&lt;img src=x onerror=&#x27;alert(2)&#x27;&gt;.png"' in page
    assert 'alt="&lt;img src=x onerror=&#x27;alert(2)&#x27;&gt;.png"' in page
    assert "d&amp;nt" in page and "&lt;b&gt;note&lt;/b&gt;" in page
    assert "FAILED</span>: test accuracy is below &quot;0.99&quot; &lt;gate&gt;" in page
    assert '<div class="card escape"' in page  # the escape is outlined red
    assert "<style>" in page and ".card.escape{border:2px solid #b00020}" in page  # CSS as is


def test_a_grouped_result_shows_the_per_object_table():
    classes = ["ok", "dent"]
    objects = metrics.classification_metrics([0, 1], [1, 1], classes, "ok")
    page = render_report({}, _result(classes, "ok", test_groups=objects), PNG, None, [], 0)
    assert "<th>test, per object</th>" in page and accuracy_text(objects) in page
    table = page.split("Per object (rows: true, columns: predicted):", 1)[1].split("</table>")[0]
    assert re.findall(r"<tr><th class=\"l\">(\w+)</th><td>(\d+)</td><td>(\d+)</td></tr>",
                      table) == [("ok", "0", "1"), ("dent", "0", "1")]
    ungrouped = render_report({}, _result(classes, "ok"), PNG, None, [], 0)
    assert "Per object" not in ungrouped and "per object" not in ungrouped


def test_a_run_without_curves_says_so_and_one_with_curves_embeds_them():
    result = _result(["ok", "dent"], None)
    without = render_report({}, result, PNG, None, [], 0)
    assert "No training curves in this run." in without
    assert without.count("data:image/png;base64,") == 1  # the confusion matrix only
    curves = b"\x89PNG curves"
    with_curves = render_report({}, result, PNG, curves, [], 0)
    assert "No training curves" not in with_curves
    assert f'src="data:image/png;base64,{base64.b64encode(curves).decode()}"' in with_curves
    assert "None: every test image was decided correctly." in with_curves
    assert "arg-max" in with_curves and "threshold on P(" not in with_curves


def test_cards_beyond_the_limit_are_counted_and_the_threshold_shown():
    result = _result(["ok", "dent"], "ok")
    cards = [_card("/d/a.png", "dent", "ok", True), _card("/d/b.png", "ok", "dent", False)]
    page = render_report({"run": "r1"}, result, PNG, None, cards, 7)
    assert "Misclassified test images (7)" in page and "first 2 of 7" in page
    assert [m for m in re.findall(r'<div class="card( escape)?"', page)] == [" escape", ""]
    assert "P(ok) 0.875" in page and "P(ok) 0.125" in page
    assert "<b>0.7500</b>" in page and percent(0.01) in page


def test_a_capped_threshold_names_the_defects_that_pass_at_it() -> None:
    calibration = {"threshold": 0.82, "on": "images", "capped": True, "escape_threshold": 0.9991,
                   "false_rejects_at_escape_threshold": 20, "n_good": 20,
                   "false_reject_cap": 0.82, "escaping": ["/d/dent/7.jpg"]}
    page = render_report({}, _result(["ok", "dent"], "ok", calibration=calibration), PNG, None,
                         [], 0)
    assert "Escape target not met on validation" in page
    assert "rejected 20 of 20 good validation images" in page and "/d/dent/7.jpg" in page
    quiet = render_report({}, _result(["ok", "dent"], "ok", calibration={
        **calibration, "capped": False}), PNG, None, [], 0)
    assert "Escape target not met" not in quiet and "never one that rejects more" in quiet


def test_the_template_ships_as_package_data():
    template = resources.files("indvision") / "templates" / evaluation_report.TEMPLATE
    assert template.is_file()
