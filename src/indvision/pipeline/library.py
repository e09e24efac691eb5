"""The pipeline as a library: :func:`run_pipeline` runs a spec's stages in a run folder.

Each run gets a new folder ``exports/<pipeline>/<run_id>/``; the stages run in order and the
manifest is rewritten after each. A failing stage marks the run failed and raises one
:class:`~indvision.errors.IndvisionError`; Ctrl-C marks it interrupted. A resumed run continues
from its first unfinished stage. Each stage's full output is in ``<run>/logs/<stage>.log``. A
child that regresses an old class is marked ``not promoted`` (:mod:`indvision.promotion`).
The command line is :mod:`indvision.pipeline.cli`.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from indvision import config as config_mod
from indvision import console, promotion
from indvision.errors import ConfigError, IndvisionError
from indvision.rundir import Run

NOT_PROMOTED = "not promoted"  # a child run that regressed on its parent's test split


def log(message: str) -> None:
    """Progress to stderr, flushed at once (runs are long; users watch them)."""
    print(f"[indvision] {message}", file=sys.stderr, flush=True)


def run_pipeline(spec: config_mod.PipelineSpec, out_dir: Path, resume: str | None = None,
                 verbose: bool = False) -> Run:
    """Run every stage of ``spec`` in a new run folder (or resume one); return the run.

    Each stage's whole output (libraries included) goes to ``<run>/logs/<stage>.log``; the
    console gets indvision's own lines, and everything too with ``verbose``. Raises
    :class:`IndvisionError` (after marking the run failed) when a stage fails.
    """
    if resume:
        run = Run.open(Path(out_dir) / spec.name / resume)
        if run.manifest.get("config_hash") != spec.hash():
            raise ConfigError(f"run {resume} was made with another configuration; resume it "
                              "without --set/--data changes, or start a new run")
        run.set_status("running")
        log(f"resuming run {run.root}")
    else:
        run = Run.create(out_dir, spec.name, spec.seed, spec.to_dict(), spec.hash())
        log(f"run {run.root}")
    try:
        _run_stages(spec, run, verbose)
    except KeyboardInterrupt:  # also between stages: the manifest must not say 'running'
        if run.manifest.get("status") != "interrupted":
            _save_failure(run, None, "interrupted")
        log(f"interrupted; continue with --resume {run.run_id}")
        raise
    refused = promotion.refusal(run)
    if refused:  # exported and verified, but its parent stays on the device
        run.set_status(NOT_PROMOTED)
        raise IndvisionError(refused)
    run.set_status("done")
    log(f"run finished: {run.root}")
    return run


def _save_failure(run: Run, stage: str | None, status: str, message: str = "",
                  seconds: float = 0.0) -> str:
    """Mark ``stage`` (or, with None, the run) ``status`` in the manifest; if even that fails
    (a full disk), log it and return a note, instead of hiding the stage's own error."""
    try:
        if stage is None:
            run.set_status(status)
        else:
            run.fail_stage(stage, status, message, seconds)
    except IndvisionError as exc:
        log(f"could not record the failure in {run.root / 'manifest.json'}: {exc}")
        return f" (and the manifest could not be updated: {exc})"
    return ""


def _run_stages(spec: config_mod.PipelineSpec, run: Run, verbose: bool = False) -> None:
    """Run each stage not yet done, recording its outcome in the manifest."""
    total = len(spec.stages)
    checked = False
    for index, (stage, cfg) in enumerate(spec.stages, start=1):
        if run.stage_status(stage) == "done":
            log(f"[{index}/{total}] {stage}: done earlier, skipped")
            continue
        if not checked and run.stage_status("ingest") == "done":
            _check_stages(spec.stages[index - 1:], run)
            checked = True
        log(f"[{index}/{total}] {stage} ...")
        started = time.perf_counter()
        log_path = run.start_stage(stage)
        try:
            with console.stage_log(log_path, verbose):
                outputs = config_mod.stage_module(stage).run(cfg, run)
        except KeyboardInterrupt:
            seconds = time.perf_counter() - started
            _save_failure(run, stage, "interrupted", "interrupted by the user", seconds)
            raise
        except IndvisionError as exc:
            seconds = time.perf_counter() - started
            note = _save_failure(run, stage, "failed", str(exc), seconds)
            log(f"full log of {stage}: {log_path}")
            raise IndvisionError(f"stage '{stage}' failed: {exc}{note}") from exc
        except Exception as exc:  # a bug or a library failure: keep the traceback for the report
            trace_path = run.root / "error.log"
            try:
                trace_path.write_text(traceback.format_exc(), encoding="utf-8")
            except OSError:
                trace_path = None
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            seconds = time.perf_counter() - started
            note = _save_failure(run, stage, "failed", message, seconds)
            log(f"full log of {stage}: {log_path}")
            where = f" (traceback in {trace_path})" if trace_path else ""
            raise IndvisionError(f"stage '{stage}' failed: {message}{where}{note}") from exc
        seconds = time.perf_counter() - started
        run.finish_stage(stage, outputs, seconds)
        log(f"[{index}/{total}] {stage}: done in {seconds:.1f} s")


def _check_stages(stages: list[tuple[str, Any]], run: Run) -> None:
    """Once ingest knows the data, run every remaining stage's ``check(config, run)`` (where a
    stage has one) before any of them starts: a mistake that would stop evaluate after an hour
    of training stops the run now, with the stage it belongs to marked failed."""
    for stage, cfg in stages:
        check = getattr(config_mod.stage_module(stage), "check", None)
        if check is None:
            continue
        try:
            check(cfg, run)
        except IndvisionError as exc:
            note = _save_failure(run, stage, "failed", f"checked before it ran: {exc}")
            raise IndvisionError(f"stage '{stage}', checked right after ingest: "
                                 f"{exc}{note}") from exc
