"""Tests for indvision.synth: determinism, layout, caching, atomicity, baseline."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import synth
from indvision.errors import IndvisionError
from tests.synth_baseline import histogram_baseline_accuracy

PER_CLASS = 20


def _digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module", params=sorted(synth.KINDS))
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    kind = request.param
    out = tmp_path_factory.mktemp(f"synth_{kind}") / kind
    return kind, synth.generate(kind, out, seed=0, per_class=PER_CLASS)


def test_tables_consistent() -> None:
    assert synth.KINDS["defect"] == ("ok", "scratch", "inclusion", "patches", "crazing", "pitted")
    assert synth.KINDS["parcel"] == ("intact", "dented", "torn", "wet")
    assert set(synth.IMAGE_SIZES) == set(synth.KINDS)
    assert synth.IMAGE_SIZES["defect"] == (128, 128)
    assert synth.IMAGE_SIZES["parcel"] == (192, 108)


def test_layout(generated: tuple[str, Path]) -> None:
    kind, out = generated
    w, h = synth.IMAGE_SIZES[kind]
    classes = synth.KINDS[kind]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(classes)
    assert (out / "samples.png").is_file()
    samples = cv2.imread(str(out / "samples.png"), cv2.IMREAD_UNCHANGED)
    assert samples is not None and samples.ndim == 3 and samples.shape[0] >= len(classes) * h
    meta = json.loads((out / "synth.json").read_text())
    assert meta["kind"] == kind and meta["seed"] == 0 and meta["per_class"] == PER_CLASS
    assert meta["classes"] == list(classes)
    assert meta["version"] == synth.GENERATOR_VERSION
    uids = []
    pattern = r"^(\d+)_top\.png$" if kind == "parcel" else r"^(\d+)\.png$"
    for cls in classes:
        files = sorted((out / cls).iterdir())
        assert len(files) == PER_CLASS
        for f in files:
            m = re.match(pattern, f.name)
            assert m, f.name
            uids.append(int(m.group(1)))
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            assert img is not None
            assert img.dtype == np.uint8
            assert img.shape == (h, w, 3)
    assert len(set(uids)) == len(uids)  # one id per image across all classes
    # nothing left over from the atomic write
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_images_vary(generated: tuple[str, Path]) -> None:
    kind, out = generated
    files = sorted(out.rglob("*/*.png"))
    means = [cv2.imread(str(f)).mean() for f in files]
    assert len(set(_digests(out / synth.KINDS[kind][0]).values())) == PER_CLASS
    # random lighting: plates/parcels are not all equally bright
    assert np.ptp(means) > 40


@pytest.mark.parametrize("kind", sorted(synth.KINDS))
def test_deterministic(kind: str, tmp_path: Path) -> None:
    a = synth.generate(kind, tmp_path / "a", seed=3, per_class=PER_CLASS)
    b = synth.generate(kind, tmp_path / "b", seed=3, per_class=PER_CLASS)
    c = synth.generate(kind, tmp_path / "c", seed=4, per_class=PER_CLASS)
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert da == db
    assert da.keys() == dc.keys()
    pngs = [k for k in da if k.count("/") == 1]
    assert len(pngs) == PER_CLASS * len(synth.KINDS[kind])
    assert all(da[k] != dc[k] for k in pngs)
    assert da["samples.png"] != dc["samples.png"]


def test_render_is_order_independent() -> None:
    first = synth.render("parcel", "torn", 7, seed=1)
    for i in range(3):
        synth.render("parcel", "wet", i, seed=1)
    assert np.array_equal(first, synth.render("parcel", "torn", 7, seed=1))
    with pytest.raises(ValueError, match="scratch"):
        synth.render("defect", "wet", 0)


def test_ensure_reuses_and_regenerates(tmp_path: Path) -> None:
    out = synth.ensure("defect", tmp_path, seed=0, per_class=4)
    assert out == tmp_path / "defect"
    marker = out / "synth.json"
    mtime = marker.stat().st_mtime_ns
    img_mtime = next((out / "ok").iterdir()).stat().st_mtime_ns

    assert synth.ensure("defect", tmp_path, seed=0, per_class=4) == out
    assert marker.stat().st_mtime_ns == mtime
    assert next((out / "ok").iterdir()).stat().st_mtime_ns == img_mtime

    synth.ensure("defect", tmp_path, seed=0, per_class=5)
    assert json.loads(marker.read_text())["per_class"] == 5
    assert len(list((out / "pitted").glob("*.png"))) == 5

    synth.ensure("defect", tmp_path, seed=1, per_class=5)
    assert json.loads(marker.read_text())["seed"] == 1

    # an incomplete tree (a class folder lost a file) is regenerated too
    next((out / "crazing").iterdir()).unlink()
    synth.ensure("defect", tmp_path, seed=1, per_class=5)
    assert len(list((out / "crazing").glob("*.png"))) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interrupted_generation_leaves_old_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = synth.generate("parcel", tmp_path / "parcel", seed=0, per_class=2)
    before = _digests(out)
    real = synth.render
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth.images, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        synth.generate("parcel", out, seed=5, per_class=2)
    assert _digests(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["parcel"]


@pytest.mark.parametrize("call", [synth.generate, synth.ensure])
def test_unknown_kind(call, tmp_path: Path) -> None:
    with pytest.raises(IndvisionError,
                       match=r"unknown synthetic kind 'nope' \(valid: defect, parcel\)"):
        call("nope", tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synth.main(["defect", str(tmp_path / "cli"), "--seed", "2", "--per-class", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    meta = json.loads((tmp_path / "cli" / "synth.json").read_text())
    assert meta["seed"] == 2 and meta["per_class"] == 2



def test_check_kind() -> None:
    assert synth.check_kind("defect") == synth.KINDS["defect"]
    assert synth.check_kind("parcel") == ("intact", "dented", "torn", "wet")
    with pytest.raises(ValueError,
                       match=r"^unknown synthetic kind 'defct' \(did you mean 'defect'\?\)$"):
        synth.check_kind("defct")
    with pytest.raises(ValueError, match=r"\(valid: defect, parcel\)$"):
        synth.check_kind("zzz")


@pytest.mark.parametrize("call", ["render", "generate", "ensure"])
def test_unknown_kind_is_one_line_with_suggestion(call: str, tmp_path: Path) -> None:
    args = ("ok", 0) if call == "render" else (tmp_path / "x",)
    with pytest.raises(IndvisionError) as info:
        getattr(synth, call)("parcl", *args)
    assert str(info.value) == "unknown synthetic kind 'parcl' (did you mean 'parcel'?)"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["defct", "OUT"], "error: unknown synthetic kind 'defct' (did you mean 'defect'?)"),
        (["defect", "OUT", "--per-class", "0"], "error: --per-class must be >= 1, got 0"),
        (["defect", "OUT", "--seed", "x"], "error: argument --seed: invalid int value: 'x'"),
        (["defect"], "error: the following arguments are required: OUT_DIR"),
    ],
)
def test_cli_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        synth.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and not captured.out
    assert not list(tmp_path.iterdir())


def test_kinds_import_is_cv2_free() -> None:
    """ingest's Config validates ``ingest.synthetic`` at config time: no cv2/numpy for that."""
    code = (
        "import sys\n"
        "from indvision.synth.kinds import check_kind\n"
        "import indvision.synth\n"
        "check_kind('defect')\n"
        "assert indvision.synth.KINDS\n"
        "loaded = sorted(m for m in ('cv2', 'numpy') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def test_module_runs_as_command(tmp_path: Path) -> None:
    out = tmp_path / "set"
    done = subprocess.run(
        [sys.executable, "-m", "indvision.synth", "parcel", str(out), "--per-class", "1"],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert json.loads((out / "synth.json").read_text())["per_class"] == 1
    bad = subprocess.run(
        [sys.executable, "-m", "indvision.synth", "box", str(out)],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown synthetic kind")

@pytest.mark.parametrize("kind", sorted(synth.KINDS))
def test_histogram_baseline_needs_shapes(kind: str, tmp_path: Path) -> None:
    """A colour-histogram classifier stays far below a CNN (>= 0.95) on these sets."""
    out = synth.generate(kind, tmp_path / kind, seed=0, per_class=60)
    acc = histogram_baseline_accuracy(out, seed=0)
    assert 0.0 <= acc < 0.6, acc


LEARNABLE_PIPELINE = """
name: learnable
seed: 0
stages:
  ingest: {}
  augment: {transforms: [{HorizontalFlip: {p: 0.5}}, {VerticalFlip: {p: 0.5}}],
            preview_per_class: 1}
  train: {backbone: small_cnn, weights: none, height: 64, width: 64, head_steps: 175,
          batch_size: 16, workers: 1, patience_steps: 0}
  evaluate: {}
"""


@pytest.mark.slow
def test_a_cnn_beats_the_colour_histogram_by_far(tmp_path: Path) -> None:
    """The synthetic defects are shapes, not brightness: a small CNN trained for a minute
    beats a colour-histogram classifier on the same images by a wide margin."""
    from indvision import config, pipeline

    data = synth.generate("defect", tmp_path / "defect", per_class=40)
    histogram = histogram_baseline_accuracy(data)
    yaml_path = tmp_path / "learnable.yaml"
    yaml_path.write_text(LEARNABLE_PIPELINE, encoding="utf-8")
    run = pipeline.run_pipeline(config.load_pipeline(str(yaml_path), data=str(data)),
                                tmp_path / "exports")
    cnn = json.loads((run.root / "evaluate" / "metrics.json").read_text())["test"]["accuracy"]
    assert histogram < 0.5, histogram
    assert cnn >= histogram + 0.3, (cnn, histogram)
