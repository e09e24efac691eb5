"""bench/continual.py: finished runs → the add-class table, errors counted on the right splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench


@pytest.fixture(scope="module")
def continual():
    return load_bench("continual")


def fake_run(folder: Path, seconds: float, predictions: list[tuple[str, bool]],
             gate: dict | None = None, phases: dict | None = None) -> Path:
    """A finished run's files the bench reads; ``phases``: train_info's, 100 training images
    in batches of 32 (3 whole batches an epoch)."""
    (folder / "evaluate").mkdir(parents=True)
    (folder / "train").mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "stages": {"train": {"seconds": seconds}},
        "config": {"stages": {"train": {"batch_size": 32}}}}))
    (folder / "train" / "train_info.json").write_text(json.dumps({
        "images": {"train": 100}, "phases": phases or {"finetune": {"epochs_run": 10}}}))
    lines = ["path,true,correct"] + [f"/x/{i}.png,{label},{int(ok)}"
                                     for i, (label, ok) in enumerate(predictions)]
    (folder / "evaluate" / "predictions.csv").write_text("\n".join(lines) + "\n")
    if gate is not None:
        (folder / "evaluate" / "promotion.json").write_text(json.dumps(gate))
    return folder


def test_the_add_class_rows_count_old_new_and_overall_errors(continual, tmp_path: Path) -> None:
    scratch = fake_run(tmp_path / "a", 800.0, [("old", True)] * 9 + [("old", False)]
                       + [("new", True)] * 4)
    parent = fake_run(tmp_path / "parent", 700.0, [("old", True)] * 10)
    refused = {"n": 10, "child_errors": 10, "passed": False, "max_recall_drop": 0.0,
               "classes": {"old": {"drop": 1.0}}, "escape_rate": None}
    naive = fake_run(tmp_path / "b", 300.0, [("new", True)] * 4, refused)
    kept = {"n": 10, "child_errors": 0, "passed": True, "max_recall_drop": 0.0,
            "classes": {"old": {"drop": 0.0}}, "escape_rate": None}
    child = fake_run(tmp_path / "c", 400.0, [("new", True)] * 3 + [("new", False)], kept,
                     {"head": {"epochs_run": 9}, "finetune": {"epochs_run": 4}})
    rows = continual.add_class_rows(1, "new", {"a": scratch, "parent": parent, "b": naive,
                                               "c": child})
    assert rows[0][2:8] == ["90.0 % (1/10)", "100.0 % (0/4)", "92.9 % (1/14)", "30", "800",
                            "1.00"]
    assert rows[1][2] == "100.0 % (0/10)"
    assert rows[2][2] == "0.0 % (10/10)" and rows[2][8] == "refused (old −100.0 points)"
    # the child's head phase (fitted on features computed once) is not counted as steps
    assert rows[3][2:9] == ["100.0 % (0/10)", "75.0 % (1/4)", "92.9 % (1/14)", "12 (0.40)",
                            "400", "0.50", "promoted"]
