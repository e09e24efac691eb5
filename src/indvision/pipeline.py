"""Run a pipeline: ``python -m indvision.pipeline NAME|FILE [--data DIR] [--from PARENT] ...``.

Each run gets a new folder ``exports/<pipeline>/<run_id>/``; the stages run in order and the
manifest is rewritten after each. A config error stops everything before any work (exit 2);
a failing stage marks the run failed and exits 1 with one clear line; Ctrl-C (or SIGTERM)
marks it interrupted (exit 130). ``--resume RUN_ID`` continues an unfinished run from its first
unfinished stage (training resumes from its last finished epoch). The console shows indvision's
own lines; each stage's full output, libraries included, is in ``<run>/logs/<stage>.log``
(``-v`` shows it on the console too).

``--from PARENT`` starts a child run from a finished, exported parent (a run folder, a bundle
in one, or ``exports/<pipeline>`` for its latest): the parent's classes in their order plus the
new ones, its replay images, its weights (:mod:`indvision.lineage`,
:mod:`indvision.training.warmstart`). A child that makes an old class worse on the parent's
test split is exported and verified but not promoted: ``latest.json`` stays on the parent, the
manifest says ``not promoted`` and the command exits 1 with one line saying which class
regressed and by how much (:mod:`indvision.promotion`).

``--folds K`` runs K cross-validation runs instead of one and prints their summary table
(:mod:`indvision.folds`); ``--folds K --resume STAMP`` runs only the folds the summary
``folds/STAMP`` does not list as done; ``--ray [ADDRESS]`` runs each fold as a Ray task
(:mod:`indvision.fanout`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from indvision import config as config_mod
from indvision import console, folds, promotion
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


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indvision.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a name in pipelines/ (defect, parcel) or a YAML file")
    parser.add_argument("--data", help="dataset: a folder-per-class tree or a CSV "
                        "(path,label[,group]); default: generated synthetic images")
    parser.add_argument("--from", dest="parent", metavar="PARENT",
                        help="start from a parent run (a run folder, a bundle in one, or "
                        "exports/<pipeline> for its latest): its model, classes and replay "
                        "images; promoted only if no old class regresses")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="STAGE.KEY=VALUE", help="override a setting (repeatable)")
    parser.add_argument("--out", default="exports", help="runs go to OUT/<pipeline>/<run_id>/")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an unfinished run")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="cross-validation: K runs, each testing a different K-th of every "
                        "class, and a summary table (none of them moves latest.json)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run each fold (--folds K), or each ensemble member "
                        "(train.ensemble >= 2), as a Ray task (pip install "
                        "'indvision[scale]'); no ADDRESS starts a local Ray, 'auto' or "
                        "ray://host:port joins a cluster (--out on a shared filesystem)")
    parser.add_argument("--task-cpus", type=int, default=1, metavar="N",
                        help="with --ray: CPUs each task reserves, and TensorFlow's threads "
                        "in it (default 1)")
    parser.add_argument("--task-gpus", type=float, default=0, metavar="N",
                        help="with --ray: GPUs each task reserves (default 0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' output (always in <run>/logs/<stage>.log)")
    return parser


def _main_folds(args: argparse.Namespace) -> int:
    """``--folds K``: K cross-validation runs and their summary; exit 1 if any fold failed."""
    if args.parent:
        raise ConfigError("--folds cannot be combined with --from: cross-validation starts "
                          "K new runs from ImageNet")
    if args.folds < 2:
        raise ConfigError(f"--folds needs 2 or more, got {args.folds}")
    runner = None
    if args.ray is not None:
        from indvision import fanout

        runner = fanout.fold_runner(args.ray or None, Path(args.out), args.folds,
                                    args.task_cpus, args.task_gpus, args.verbose)
    summary = folds.run_folds(
        lambda extra: config_mod.load_pipeline(args.pipeline, [*args.overrides, *extra],
                                               args.data),
        args.folds, Path(args.out),
        lambda spec: run_pipeline(spec, Path(args.out), verbose=args.verbose),
        resume=args.resume, runner=runner)
    print(folds.table(summary))
    if summary["failed"]:
        print(f"error: fold(s) {', '.join(str(f + 1) for f in summary['failed'])} of "
              f"{args.folds} failed (see the status column)", file=sys.stderr)
        return 1
    return 0


def _ray_overrides(args: argparse.Namespace) -> list[str]:
    """``--ray`` on a single run: the train stage's ensemble members become Ray tasks."""
    if args.ray is None:
        return []
    return [f"train.ray={args.ray or 'local'}", f"train.task_cpus={args.task_cpus}",
            f"train.task_gpus={args.task_gpus}"]


def _check_ray_members(spec: config_mod.PipelineSpec) -> None:
    train = dict(spec.stages).get("train")
    if train is None or train.ensemble < 2:
        raise ConfigError("--ray fans out --folds K or train.ensemble members (set "
                          "train.ensemble to 2 or more); one model trains on this machine "
                          "(train.devices for several of its devices)")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.ray is None and (args.task_cpus != 1 or args.task_gpus != 0):
            raise ConfigError("--task-cpus and --task-gpus go with --ray")
        if args.folds is not None:
            return _main_folds(args)
        spec = config_mod.load_pipeline(args.pipeline, args.overrides, args.data, args.parent)
        if args.ray is not None:  # checked on the plain spec, then the members go to Ray
            _check_ray_members(spec)
            spec = config_mod.load_pipeline(args.pipeline,
                                             [*args.overrides, *_ray_overrides(args)],
                                             args.data, args.parent)
        run_pipeline(spec, Path(args.out), resume=args.resume, verbose=args.verbose)
    except KeyboardInterrupt:
        print("interrupted: the run is marked 'interrupted' in its manifest.json; "
              "continue it with --resume RUN_ID", file=sys.stderr)
        return 130
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
