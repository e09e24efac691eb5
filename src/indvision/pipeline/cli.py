"""The pipeline's command line, ``python -m indvision.pipeline``: parses, then runs one run
(:func:`indvision.pipeline.library.run_pipeline`), K folds (:mod:`indvision.folds`) or folds
on Ray (:mod:`indvision.ray_folds`); its ``--help`` text is :data:`HELP`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from indvision import config as config_mod
from indvision import folds, ray_folds
from indvision.errors import ConfigError, IndvisionError
from indvision.pipeline.library import run_pipeline

HELP = """\
Run a pipeline: ``python -m indvision.pipeline NAME|FILE [--data DIR] [--from PARENT] ...``.

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
(:mod:`indvision.ray_folds`).
"""


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indvision.pipeline", description=HELP,
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
        runner = ray_folds.fold_runner(args.ray or None, Path(args.out), args.folds,
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
