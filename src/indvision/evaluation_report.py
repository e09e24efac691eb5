"""The evaluation report (``evaluate/report.html``): the page an engineer opens first.

:func:`render_report` fills the Jinja2 template ``templates/evaluation_report.html.j2`` (package
data) from the result that ``metrics.json`` holds. The page is one self-contained file: every
image (confusion matrix, training curves, thumbnails of wrong decisions) is a data URI, and it
links nothing, so it can be mailed or archived on its own. Autoescaping is on, with
:func:`html.escape` (quotes included) for every value: class names, paths and settings come from
the user's folder and pipeline file, and a file called ``<img onerror=...>.png`` must show as
text. Only :data:`CSS`, a constant, goes in as markup.

The figures and the wrong decisions are made here too (:func:`plot_confusion`,
:func:`thumbnail_png`, :func:`misclassified_items`), and the number formats that the evaluate
stage's console line and gate messages share with the page (:func:`percent`,
:func:`accuracy_text`). Jinja2 and matplotlib come with the ``[train]`` extra and are imported
on first use: the edge runtime never needs them.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indvision import images
from indvision.errors import IndvisionError
from indvision.formatting import percent

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "evaluation_report.html.j2"  # in indvision/templates/

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:1.4em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid
#ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.meta td{text-align:left;font-family:monospace;font-size:.9em;border:none;padding:2px 10px 2px 0}
.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:140px;font-size:.8em;
border:1px solid #ccc;padding:5px;word-break:break-all}.card img{width:128px;height:128px;
object-fit:contain;image-rendering:pixelated;background:#eee}.card.escape{border:2px solid #b00020}
.note{color:#555;font-size:.9em}
"""


# --- text ------------------------------------------------------------------------------------


def accuracy_text(part: dict[str, Any]) -> str:
    """'99.4 % (1 error / 180)'."""
    errors = part["errors"]
    return f"{percent(part['accuracy'])} ({errors} error{'' if errors == 1 else 's'} / {part['n']})"


# --- the page --------------------------------------------------------------------------------


def render_report(header: dict[str, str], result: dict[str, Any], confusion_png: bytes,
                  curves_png: bytes | None, cards: Sequence[dict[str, Any]],
                  n_wrong: int, changed_cards: Sequence[dict[str, Any]] = ()) -> str:
    """The self-contained HTML report: every image is a data URI, every text HTML-escaped.

    ``header`` is shown as a key/value table at the top; ``result`` is what ``metrics.json``
    holds; ``cards`` are the first wrong test decisions of :func:`misclassified_items`, each with
    its ``png`` thumbnail, out of ``n_wrong`` in all. ``changed_cards``: a child's images
    whose decision differs from its parent's (``item``, ``label``, ``parent``, ``child``,
    ``png``), shown in the promotion section.
    """
    columns = [("validation", result["val"]), ("test", result["test"])]
    if "test_groups" in result:
        columns.append(("test, per object", result["test_groups"]))
    template = _environment().get_template(TEMPLATE)
    return template.render(
        header=header, result=result, confusion_png=confusion_png, curves_png=curves_png,
        cards=cards, n_wrong=n_wrong, css=_markup(CSS), changed_cards=changed_cards,
        metric_columns=[name for name, _ in columns],
        metric_rows=[(name, [cell(part) for _, part in columns])
                     for name, cell in _metric_rows(result["good_class"] is not None)],
    )


def _metric_rows(with_good_class: bool) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """The rows of the metrics table: name and the cell text of one split's metrics."""
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("accuracy", accuracy_text),
        ("macro-F1", lambda m: f"{m['macro_f1']:.3f}"),
    ]
    if with_good_class:
        rows += [
            ("defect recall", lambda m: f"{percent(m.get('defect_recall'))} "
                                        f"({m.get('escapes', 0)} escapes)"),
            ("false-reject rate", lambda m: f"{percent(m.get('false_reject_rate'))} "
                                            f"({m.get('false_rejects', 0)} false rejects)"),
        ]
    return rows


@functools.cache
def _environment() -> jinja2.Environment:
    """The Jinja2 environment of the report: package templates, autoescape, strict names."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("indvision", "templates"),
        autoescape=True, finalize=_escape, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    environment.filters.update(data_uri=_data_uri, percent=percent,
                               accuracy_text=accuracy_text, file_name=lambda p: Path(p).name)
    environment.globals["zip"] = functools.partial(zip, strict=True)
    return environment


def _markup(text: str) -> Any:
    """Trusted markup (the constant CSS): not escaped."""
    import markupsafe

    return markupsafe.Markup(text)


def _escape(value: Any) -> Any:
    """Every value the template writes, escaped as :func:`html.escape` does.

    Jinja's own autoescape (MarkupSafe) writes quotes as ``&#34;``/``&#39;``; the report has
    always written ``&quot;``/``&#x27;``, so values are escaped here and handed on as markup,
    which the autoescape then leaves alone. Markup (the CSS) passes through as it is.
    """
    import markupsafe

    if isinstance(value, markupsafe.Markup):
        return value
    return markupsafe.Markup(html.escape(str(value), quote=True))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- figures and wrong decisions -------------------------------------------------------------


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """The confusion matrix as PNG bytes: counts written in the cells, colour = share of the row."""
    from matplotlib.figure import Figure

    n = len(classes)
    side = max(4.0, 0.7 * n + 2.5)
    figure = Figure(figsize=(side, side), dpi=100)
    axes = figure.add_subplot()
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=10,
                      color="white" if shares[i, j] > 0.5 else "black")
    axes.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(n), labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def thumbnail_png(path: str, spec: images.InputSpec) -> bytes:
    """The image as the model saw it (crop + resize of :func:`images.load`), as PNG bytes."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(images.load(path, spec), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - encoding an in-memory uint8 image does not fail
        raise IndvisionError(f"cannot encode a thumbnail of {path}")
    return encoded.tobytes()


def misclassified_items(rows: Sequence[dict[str, str]], labels: np.ndarray, predicted: np.ndarray,
                        scores: np.ndarray, classes: Sequence[str],
                        good_index: int | None) -> list[dict[str, Any]]:
    """Wrong test decisions, worst first: escapes (defects passed as good), then by confidence."""
    wrong = []
    for row, label, pred, score in zip(rows, labels, predicted, scores, strict=True):
        if label == pred:
            continue
        escape = good_index is not None and pred == good_index
        wrong.append({"path": row["path"], "group": row.get("group", ""),
                      "true": classes[label], "predicted": classes[pred],
                      "score": float(score[pred]), "escape": bool(escape),
                      "good_score": None if good_index is None else float(score[good_index])})
    wrong.sort(key=lambda w: (not w["escape"], -w["score"], w["path"]))
    return wrong
