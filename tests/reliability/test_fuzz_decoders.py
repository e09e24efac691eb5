"""A fuzz corpus (tests/reliability/fuzz_corpus.py) of every format this OpenCV writes — valid,
bomb, truncated, header-forged, bit-flipped — through the three ways bytes reach the decoder:
``images.decode`` / ``read_image``, ``edge predict`` on a folder, and ``POST /predict``.

Every file gets one clear answer: an ``ImageError`` naming it, an error row, a 4xx JSON answer,
or a correct result; never a traceback, a 500 or a crash. A bomb is refused *for its size*
(the reason speaks of pixels or the limit), not by luck of a missing pixel. Each path runs in
a child process that reports its peak memory per file (VmHWM, reset before each file through
``/proc/self/clear_refs``); every file must stay under ``PEAK_MB``. The children run under an
address-space cap (``SAFETY_AS_BYTES``) so that a real bomb cannot take the shared machine's
memory: a file that hits it shows up as a memory error, which fails the test all the same.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import images
from tests.conftest import PROJECT_ROOT
from tests.reliability import fuzz_corpus
from tests.stages.conftest import exported_run, trained_run, verified_run  # noqa: F401

PEAK_MB = 1024.0
SAFETY_AS_BYTES = 6 * 1024 ** 3  # a cap well above the bound, for the shared machine's sake
BY_SIZE = re.compile(r"pixel|limit", re.IGNORECASE)  # how a bomb's refusal must read
OUT_OF_MEMORY = re.compile(r"memory|alloc", re.IGNORECASE)
CHILD_TIMEOUT = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    folder = tmp_path_factory.mktemp("fuzz") / "corpus"
    return folder, fuzz_corpus.write_corpus(folder)


#: runs its arguments and says the child's own peak RSS (RUSAGE_CHILDREN of a fresh parent)
LAUNCH = ("import resource, subprocess, sys\n"
          "code = subprocess.run(sys.argv[1:]).returncode\n"
          "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
          "print(f'fuzz-peak-kb: {peak}', file=sys.stderr)\n"
          "sys.exit(code if code >= 0 else 128 - code)\n")


def run_child(args: list[str], **env_changes: str | None
              ) -> tuple[int, list[dict], str, float]:
    """Run ``args`` (capped address space; ``env_changes``, None removes a variable); exit
    status, its JSON lines, stderr, and its peak RSS in MB (meaningful only where the child
    resets no peak)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (SAFETY_AS_BYTES, SAFETY_AS_BYTES))

    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(PROJECT_ROOT)]))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": path, **env_changes}
    env = {key: value for key, value in env.items() if value is not None}
    process = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=cap)
    try:
        out, err = process.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{args[:4]} ran past {CHILD_TIMEOUT} s; last lines: {out[-500:]}")
    found = re.findall(r"^fuzz-peak-kb: (\d+)$", err, re.MULTILINE)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return process.returncode, lines, err, int(found[-1]) / 1024 if found else float("inf")


def check_crash(returncode: int, rows: list[dict], names: list[str], err: str) -> list[str]:
    """A child that died (a signal, an uncaught error) names the first file it did not answer."""
    if returncode in (0, 1) and "Traceback" not in err:
        return []
    answered = {row.get("name") or Path(row.get("path", "")).name for row in rows}
    missing = [name for name in names if name not in answered]
    return [f"child exited {returncode} at {missing[:1] or 'the end'}; stderr tail: "
            f"{err[-400:]!r}"]


def judge_decode(name: str, kind: str, outcome: list) -> str | None:
    """What is wrong with one ``decode``/``read_image`` outcome, or None."""
    status = outcome[0]
    if status == "crash":
        return f"{outcome[1]} (not an ImageError): {outcome[2]}"
    if status == "error":
        if name not in outcome[2]:
            return f"the message does not name the file: {outcome[2]!r}"
        if "\n" in outcome[2]:
            return f"the message is not one line: {outcome[2]!r}"
        if OUT_OF_MEMORY.search(outcome[1]):
            return f"stopped only by the memory cap: {outcome[1]}"
        if kind == "bomb" and not BY_SIZE.search(outcome[1]):
            return f"a bomb refused by luck, not for its size: {outcome[1]}"
        if kind == "valid":
            return f"a valid image refused: {outcome[1]}"
        return None
    shape, dtype = outcome[1], outcome[2]
    if len(shape) != 3 or shape[2] != 3 or dtype != "uint8":
        return f"decoded to {shape} {dtype}, not H x W x 3 uint8"
    if kind == "bomb" or shape[0] * shape[1] > images.MAX_PIXELS:
        return f"decoded to {shape}: over the pixel limit"
    if kind == "valid" and shape != [fuzz_corpus.SIDE, fuzz_corpus.SIDE, 3]:
        return f"the valid image decoded to {shape}"
    return None


def report(failures: list[str], what: str) -> None:
    assert not failures, f"{len(failures)} {what} failures:\n" + "\n".join(failures)


def test_the_corpus_covers_every_format_this_opencv_writes(corpus) -> None:
    _, made = corpus
    written = {ext for ext, _ in made.values()}
    # the formats OpenCV 4.x/5.x wheels write; EXR needs OPENCV_IO_ENABLE_OPENEXR and a codec
    assert written >= {".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pgm", ".pbm",
                       ".pam", ".pfm", ".hdr", ".sr", ".ras"}, sorted(written)
    kinds = {kind.split("-")[0] for _, kind in made.values()}
    assert kinds == {"valid", "bomb", "cut", "forged", "flip"}
    print(f"fuzz corpus: {len(made)} files, formats {sorted(written)}")


def test_decode_gives_each_file_one_clear_answer_in_bounded_memory(corpus) -> None:
    folder, made = corpus
    # the header check alone: cv2 loads without OpenCV's own pixel wall (as in a program
    # that imports cv2 before indvision), so nothing but images.decode stands in the way
    code, rows, err, _ = run_child([sys.executable, "-m", "tests.reliability.fuzz_corpus",
                                    "decode", str(folder)], OPENCV_IO_MAX_IMAGE_PIXELS=None)
    failures = check_crash(code, rows, sorted(made), err)
    peaks = []
    for row in rows:
        name, (_, kind) = row["name"], made[row["name"]]
        for path, outcome in (("decode", row["decode"]), ("read_image", row["read_image"])):
            wrong = judge_decode(name, kind, outcome)
            if wrong:
                failures.append(f"{name} {path}: {wrong}")
        if row["decode"][:2] != row["read_image"][:2]:
            failures.append(f"{name}: decode and read_image disagree")
        if row["peak_mb"] > PEAK_MB:
            failures.append(f"{name}: peak RSS {row['peak_mb']:.0f} MB, over {PEAK_MB:.0f}")
        peaks.append((row["peak_mb"], name))
    # without clear_refs each peak is the process's so far: still a bound, perhaps blaming a
    # later file for an earlier one's peak
    per_file = "per file" if rows and rows[0]["per_file"] else "process-wide"
    print(f"decode: {len(rows)} files, largest peak RSS {max(peaks, default=(0, ''))[0]:.0f} "
          f"MB ({max(peaks, default=(0, ''))[1]}; {per_file})")
    report(failures, "decode")


def test_edge_predict_gives_each_file_one_line(corpus, verified_run: Path,  # noqa: F811
                                               tmp_path: Path) -> None:
    folder, made = corpus
    # a folder yields only IMAGE_EXTENSIONS files: the others go in a list file beside it
    others = [name for name in sorted(made)
              if Path(name).suffix.lower() not in images.IMAGE_EXTENSIONS]
    listing = tmp_path / "others.lst"
    listing.write_text("".join(f"{folder / name}\n" for name in others), encoding="utf-8")
    code, rows, err, peak = run_child([sys.executable, "-m", "indvision.edge", "predict",
                                       str(verified_run / "bundle"), str(folder),
                                       str(listing), "--no-progress"])
    failures = check_crash(code, rows, sorted(made), err)
    seen = [Path(row["path"]).name for row in rows]
    if sorted(seen) != sorted(made):
        failures.append(f"{len(seen)} lines for {len(made)} files")
    classes = None
    for row in rows:
        name = Path(row["path"]).name
        kind = made.get(name, ("", ""))[1]
        if "error" in row:
            reason = row["error"]
            if not isinstance(reason, str) or "\n" in reason or OUT_OF_MEMORY.search(reason):
                failures.append(f"{name}: error row {reason!r}")
            elif kind == "bomb" and not BY_SIZE.search(reason):
                failures.append(f"{name}: a bomb refused by luck, not for its size: {reason}")
            elif kind == "valid":
                failures.append(f"{name}: a valid image refused: {reason}")
        elif kind == "bomb" or set(row) < {"label", "score", "scores"}:
            failures.append(f"{name}: answered {row}")
        else:
            classes = classes or set(row["scores"])
            if row["label"] not in classes:
                failures.append(f"{name}: label {row['label']!r} not among {classes}")
    if peak > PEAK_MB:
        failures.append(f"edge predict: peak RSS {peak:.0f} MB, over {PEAK_MB:.0f}")
    print(f"edge predict: {len(rows)} lines, peak RSS at most {peak:.0f} MB")
    report(failures, "edge predict")


def test_post_predict_answers_each_file_with_json_never_a_500(corpus,
                                                              verified_run: Path  # noqa: F811
                                                              ) -> None:
    pytest.importorskip("fastapi", reason="the service is the optional [serve] extra")
    folder, made = corpus
    code, rows, err, _ = run_child([sys.executable, "-m", "tests.reliability.fuzz_corpus",
                                    "service", str(verified_run / "bundle"), str(folder)])
    failures = check_crash(code, rows, sorted(made), err)
    for row in rows:
        name, status, answer = row["name"], row["status"], row["answer"]
        kind = made[name][1]
        if status == 200:
            results = answer.get("results") or [{}]
            if kind in ("bomb",) or "label" not in results[0]:
                failures.append(f"{name}: 200 with {answer}")
        elif not (400 <= status < 500 and isinstance(answer.get("error"), str)):
            failures.append(f"{name}: {status} {answer}")
        else:
            reason = answer["error"]
            if name not in reason or "\n" in reason or OUT_OF_MEMORY.search(reason):
                failures.append(f"{name}: {status} {reason!r}")
            elif kind == "bomb" and not BY_SIZE.search(reason):
                failures.append(f"{name}: a bomb refused by luck, not for its size: {reason}")
            elif kind == "valid":
                failures.append(f"{name}: a valid image refused: {status} {reason}")
        if row["peak_mb"] > PEAK_MB:
            failures.append(f"{name}: peak RSS {row['peak_mb']:.0f} MB, over {PEAK_MB:.0f}")
    if "Traceback" in err:
        failures.append(f"the service logged a traceback: {err[-600:]}")
    peak = max((row["peak_mb"], row["name"]) for row in rows) if rows else (0, "")
    print(f"POST /predict: {len(rows)} answers, largest peak RSS {peak[0]:.0f} MB ({peak[1]})")
    report(failures, "POST /predict")
