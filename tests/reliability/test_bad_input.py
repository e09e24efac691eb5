"""Bad input end to end: every kind of broken or odd file at once through the real CLIs.

Each bad file must get a message naming it and the reason, never a library traceback, and the
work goes on where it sensibly can (ingest lists rejects in ``rejected.csv``; the edge runtime
prints an error line for that image and predicts the others). Unit-level cases already covered
by tests/test_images.py and tests/stages/test_ingest.py are not repeated here.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic, images, pipeline
from indvision.errors import IndvisionError
from tests.conftest import PROJECT_ROOT, make_tree, write_pipeline
from tests.reliability.corpus import BAD, ODD_GOOD, cmyk_jpeg, make_bad_tree
from tests.stages.conftest import exported_run, trained_run, verified_run  # noqa: F401

INGEST_ONLY = "name: bad\nseed: 1\nstages:\n  ingest: {min_per_class: 6}\n"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONIOENCODING": "utf-8"}


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def only_run(out: Path) -> Path:
    (run,) = (out / "bad").iterdir()
    return run


@pytest.fixture
def ingest_yaml(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "bad.yaml", INGEST_ONLY)


# ----------------------------------------------------------------------------- ingest CLI


def ingest_cli_ok(yaml_path: Path, data: Path, out: Path) -> str:
    """Run the ingest-only pipeline CLI on ``data``: it must exit 0 without a traceback.
    Returns everything it printed."""
    result = run_module("indvision.pipeline", str(yaml_path), "--data", str(data),
                        "--out", str(out))
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    assert "Traceback" not in printed
    return printed


def test_ingest_cli_survives_every_bad_file_at_once(tmp_path: Path, ingest_yaml: Path) -> None:
    tree = make_bad_tree(tmp_path / "tree")
    out = tmp_path / "exports"
    printed = ingest_cli_ok(ingest_yaml, tree, out)
    run = only_run(out)
    rejected = {Path(r["path"]).relative_to(tree).as_posix(): r["reason"]
                for r in read_csv(run / "ingest" / "rejected.csv")}
    for name, reason in BAD.items():
        assert name in rejected, f"{name} not rejected (rejected: {sorted(rejected)})"
        assert reason in rejected[name], (name, rejected[name])
        assert f"rejected {tree / name}: " in printed  # printed with its reason too
    assert "gone.png" in rejected["ok/dangling.png"]  # named by the link, saying its target
    kept = {Path(r["path"]) for r in read_csv(run / "ingest" / "splits.csv")}
    for name in ODD_GOOD:
        if name == "spot/cmyk.jpg" and cmyk_jpeg() is None:
            continue
        assert (tree / name).resolve() in kept, f"{name} should be accepted"
    assert not any("loop" in p.parts for p in kept)  # the symlinked folder is not followed
    assert f"class folder {tree / 'empty_class'} has no images" in printed
    assert json.loads((run / "ingest" / "classes.json").read_text()) == ["ok", "scratch", "spot"]


def test_cmyk_jpeg_decodes_to_the_right_rgb(tmp_path: Path) -> None:
    data = cmyk_jpeg()
    if data is None:
        pytest.skip("Pillow is not installed: no way to write a CMYK JPEG here")
    rgb = images.decode(data, "cmyk.jpg")
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - [255, 128, 128]).max() <= 3  # C0 M50% Y50% K0 → salmon


def test_ingest_cli_csv_with_every_problem(tmp_path: Path, ingest_yaml: Path) -> None:
    tree = make_tree(tmp_path / "tree", per_class=8, size=40)
    (tree / "ok" / "zero.png").write_bytes(b"")
    rows = [f"{label}/{i:03d}_a.png,{label},front" for label in ("ok", "scratch", "spot")
            for i in range(8)]
    rows += ["ok/zero.png,ok,x", "ok/missing.png,ok,x", "ok/000_a.png,,x", ",ok,x"]
    listing = tree / "list.csv"
    listing.write_text("\ufeffpath,label,camera\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "exports"
    printed = ingest_cli_ok(ingest_yaml, listing, out)
    assert "ignoring unknown column(s) camera" in printed
    reasons = {r["reason"].split(" (")[0]: r["path"]
               for r in read_csv(only_run(out) / "ingest" / "rejected.csv")}
    assert reasons["empty file"].endswith("zero.png")
    assert reasons["file not found"].endswith("missing.png")
    assert reasons["empty label"].endswith("000_a.png")
    assert reasons["empty path"] == f"{listing}:29"  # the CSV line, as there is no file name


def test_ingest_cli_single_class_is_one_clear_error(tmp_path: Path, ingest_yaml: Path) -> None:
    tree = make_tree(tmp_path / "tree", classes=("ok",), per_class=8, size=40)
    result = run_module("indvision.pipeline", str(ingest_yaml), "--data", str(tree),
                        "--out", str(tmp_path / "exports"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "need at least two classes" in errors[0]
    assert str(tree) in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--set", "ingest.min_per_class=many"], 2, "ingest.min_per_class: expected an integer"),
        (["--set", "ingest.min_per_clas=3"], 2, "did you mean 'min_per_class'"),
        (["--resume", "20990101-000000-abcdef"], 1, "no run at"),
    ],
)
def test_pipeline_cli_bad_arguments(tmp_path: Path, ingest_yaml: Path,
                                    capsys: pytest.CaptureFixture, args: list[str], code: int,
                                    expected: str) -> None:
    tree = make_tree(tmp_path / "tree", per_class=6, size=40)
    status = pipeline.main([str(ingest_yaml), "--data", str(tree),
                            "--out", str(tmp_path / "exports"), *args])
    err = capsys.readouterr().err
    assert status == code
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if expected in line)]


def test_pipeline_cli_missing_pipeline_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pipeline.main([str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: pipeline file not found: {tmp_path / 'nope.yaml'}"


def test_pipeline_cli_out_is_a_file(tmp_path: Path, ingest_yaml: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "tree", per_class=6, size=40)
    blocker = tmp_path / "exports"
    blocker.write_text("a file where the runs folder should be\n")
    status = pipeline.main([str(ingest_yaml), "--data", str(tree), "--out", str(blocker)])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert err.startswith("error: cannot create a run folder under") and str(blocker) in err
    assert blocker.read_text() == "a file where the runs folder should be\n"


# ----------------------------------------------------------------------------- full disk


def enospc_after(monkeypatch: pytest.MonkeyPatch, allowed: int, spare: str | None = None) -> None:
    """``os.replace`` (the last step of every atomic write) fails with ENOSPC after ``allowed``
    calls, except for targets named ``spare``."""
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > allowed and Path(dst).name != spare:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_full_disk_names_the_file_and_leaves_no_partial_file(
        tmp_path: Path, ingest_yaml: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "tree", per_class=6, size=40)
    enospc_after(monkeypatch, allowed=0, spare="manifest.json")
    status = pipeline.main([str(ingest_yaml), "--data", str(tree),
                            "--out", str(tmp_path / "exports")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("error: stage 'ingest' failed: cannot write ")
    assert "splits.csv: No space left on device" in err[-1]
    run = only_run(tmp_path / "exports")
    assert not (run / "ingest" / "splits.csv").exists() and no_temp_files(run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "No space left" in manifest["stages"]["ingest"]["error"]


def test_full_disk_everywhere_still_reports_the_stage_error(
        tmp_path: Path, ingest_yaml: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "tree", per_class=6, size=40)
    enospc_after(monkeypatch, allowed=2)  # the new run's manifest and "ingest started" fit
    status = pipeline.main([str(ingest_yaml), "--data", str(tree),
                            "--out", str(tmp_path / "exports")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    # the stage's own error first, then why the manifest could not say so
    assert "splits.csv: No space left on device" in err[-1]
    assert "manifest could not be updated" in err[-1] and "Traceback" not in "\n".join(err)
    assert no_temp_files(only_run(tmp_path / "exports"))


def test_write_into_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("x")
    with pytest.raises(IndvisionError, match=r"cannot write .*golden\.json: cannot create"):
        atomic.write_json(blocker / "golden.json", {})


# ----------------------------------------------------------------------------- edge CLI


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two good images around four bad ones, in the bundle's class folders."""
    root = make_tree(tmp_path_factory.mktemp("edge_bad") / "tree", per_class=2, size=40)
    bad = {"ok/zero.png": b"", "ok/text.jpg": b"not an image\n",
           "scratch/huge.png": (root / "ok" / "000_a.png").read_bytes()[:16]
           + (30000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00",
           "spot/cut.jpg": b"\xff\xd8\xff\xe0" + bytes(200)}
    for name, data in bad.items():
        (root / name).write_bytes(data)
    return root, [root / name for name in bad]


def test_edge_predict_reports_each_bad_image_and_goes_on(
        verified_run: Path, bad_images: tuple[Path, list[Path]]) -> None:  # noqa: F811
    root, bad = bad_images
    good = [root / "ok" / "000_a.png", root / "spot" / "001_a.png"]
    paths = [good[0], *bad, good[1]]
    result = run_module("indvision.edge", "predict", str(verified_run / "bundle"),
                        *map(str, paths))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in paths]
    assert "label" in lines[0] and "label" in lines[-1]
    reasons = {Path(line["path"]).name: line["error"] for line in lines[1:-1]}
    assert reasons == {"zero.png": "empty file (0 bytes)",
                       "text.jpg": "not a decodable image (corrupt, truncated or not an image)",
                       "huge.png": f"header claims 30000x30000 pixels, over the limit of "
                                   f"{images.MAX_PIXELS}",
                       "cut.jpg": "truncated JPEG (no end-of-image marker)"}
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 4 of 6 images could not be read (see their 'error' lines)")


def test_edge_evaluate_skips_bad_images_and_an_unwritable_golden_fails_clearly(
        verified_run: Path, bad_images: tuple[Path, list[Path]],  # noqa: F811
        tmp_path: Path) -> None:
    root, bad = bad_images
    result = run_module("indvision.edge", "evaluate", str(verified_run / "bundle"), str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 6
    assert sorted(s["path"] for s in report["skipped"]) == sorted(map(str, bad))
    blocker = tmp_path / "golden"
    blocker.write_text("a file where a folder should be")
    result = run_module("indvision.edge", "evaluate", str(verified_run / "bundle"),
                        str(root), "--write-golden", str(blocker / "g.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {blocker / 'g.json'}: cannot create its folder")


def test_edge_missing_bundle_is_one_error_line(tmp_path: Path) -> None:
    image = make_tree(tmp_path / "tree", per_class=1, size=40) / "ok" / "000_a.png"
    result = run_module("indvision.edge", "predict", str(tmp_path / "no_bundle"), str(image))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path / 'no_bundle'}: no such bundle folder"


def test_a_late_csv_row_with_more_fields_than_the_header_is_rejected_not_a_crash(
        tmp_path: Path) -> None:
    """Rows are typed one by one: a bad row after hundreds of good ones is one rejection
    naming its line, never a traceback (it raised AttributeError: 'list' ... 'strip')."""
    from indvision import dataset

    tree = make_tree(tmp_path / "tree", per_class=2, size=40)
    good = [f"{p.relative_to(tree)},{p.parent.name}" for p in sorted(tree.rglob("*.png"))]
    listing = tree / "list.csv"
    listing.write_text("path,label\n" + "\n".join(good * 50 + ["ok/x.png,ok,extra,more"]) + "\n",
                       encoding="utf-8")
    items, rejected = dataset.list_csv(listing)
    assert len(items) == len(good) * 50
    assert rejected == [(f"{listing}:{len(good) * 50 + 2}", "",
                         "2 more field(s) than the header (an unquoted comma?)")]
