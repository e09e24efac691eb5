"""bench/small_data.py: finished runs → the model beside its probe, per dataset and size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench


@pytest.fixture(scope="module")
def small_data():
    return load_bench("small_data")


def _run(folder: Path, seed: int, f1: float, probe_f1: float, errors: int, probe_errors: int,
         kept: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "evaluate").mkdir()
    (folder / "train").mkdir()
    manifest = {"seed": seed, "config": {"stages": {"ingest": {
        "source": "/data/neu", "max_train_per_class": 40}}},
        "stages": {"train": {"seconds": 200.0}, "evaluate": {"seconds": 10.5}}}
    part = {"n": 180, "macro_f1": f1, "errors": errors}
    probe = {"val": {"errors": 3}, "test": {"n": 180, "macro_f1": probe_f1,
                                            "errors": probe_errors},
             "test_unit": "test", "gained_errors": {"val": 1, "test": probe_errors - errors}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "evaluate" / "metrics.json").write_text(json.dumps(
        {"val": {"errors": 2}, "test": part, "probe": probe}))
    (folder / "train" / "train_info.json").write_text(json.dumps(
        {"seconds": 190.0, "phases": {"finetune": {"kept_start": kept}}}))
    return folder


def test_rows_and_the_summary_say_where_the_model_beats_its_probe(small_data, tmp_path,
                                                                   capsys) -> None:
    _run(tmp_path / "defect" / "a", 1, 0.99, 0.97, 2, 5)
    _run(tmp_path / "defect" / "b", 2, 0.95, 0.97, 9, 5, kept=False)
    _run(tmp_path / "defect" / "c", 3, 0.97, 0.97, 5, 5, kept=True)
    (tmp_path / "defect" / "unfinished").mkdir()
    sys.argv = ["small_data.py", str(tmp_path / "defect")]
    small_data.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| neu |")]
    assert len(rows) == 4  # three runs and one summary
    assert rows[0].startswith("| neu | 40 | 1 | image | 180 | 0.9900 | 2 | 0.9700 | 5 | 1 | 3 |")
    assert "| 1 |" in rows[2]  # seed 3 ended on its probe
    assert rows[3] == "| neu | 40 | 3 | 2 of 3 | 0.9700 | 0.9700 | 1.0000 | 210 |"


def test_nothing_to_read_is_a_clear_exit(small_data, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    sys.argv = ["small_data.py", str(tmp_path / "empty")]
    with pytest.raises(SystemExit, match="no finished run with probe numbers"):
        small_data.main()
