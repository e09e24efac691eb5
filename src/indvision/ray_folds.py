"""Training fan-out on Ray: ``python -m indvision.pipeline NAME --folds K --ray [ADDRESS]``.

Cross-validation's K runs are independent: each is an ordinary pipeline run in its own run
folder. With ``--ray`` every fold is one Ray task (:func:`fold_runner`) that reserves
``--task-cpus`` CPUs (and ``--task-gpus`` GPUs) and runs the pipeline in a Ray worker, with
TensorFlow's thread pools sized to the CPUs it reserved, so the tasks that run at once share
the node instead of fighting over it. Ray decides where and when each runs; this module
starts nothing of its own. The summary is written as each fold finishes (in any order), and
``--resume STAMP`` runs only the folds that summary does not list as done — after a kill, a
lost node or a failed fold.

Each fold is the same run as without ``--ray``: the same spec, the same seed, the same split;
only where it runs changes. The run folders, the bundle and the summary live under ``--out``,
which must be the same path on every node (a shared filesystem) for a cluster; a local Ray
(no address) needs nothing. Ray is the optional ``[scale]`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indvision.console import say
from indvision.errors import IndvisionError
from indvision.folds import FoldRunner, Outcome, fold_run


def _run_fold(spec: Any, out_dir: str, verbose: bool, cpus: int, fold: int,
              folds: int) -> tuple[int, str | None, str]:
    """One fold, inside a Ray worker: TensorFlow limited to the task's CPUs, then the
    pipeline as the sequential path runs it."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from indvision.pipeline.library import run_pipeline
    from indvision.training.devices import limit_threads

    limit_threads(cpus)
    try:
        run = run_pipeline(spec, Path(out_dir), verbose=verbose)
        return fold, str(run.root), "done"
    except IndvisionError as exc:
        found = fold_run(Path(out_dir) / spec.name, fold, folds)
        return fold, str(found) if found else None, f"failed: {exc}"


def fold_runner(address: str | None, out_dir: Path, folds: int, cpus: int = 1,
                gpus: float = 0, verbose: bool = False) -> FoldRunner:
    """A :data:`indvision.folds.FoldRunner` that runs each fold as a Ray task on the cluster at
    ``address`` (None: a local Ray started for the job) and yields folds as they finish."""
    from indvision.ray_cluster import start

    if cpus < 1 or gpus < 0:
        raise IndvisionError("--task-cpus must be at least 1 and --task-gpus at least 0")

    def runner(todo: list[tuple[int, Any]]) -> Iterator[Outcome]:
        ray = start(address, quiet=False)
        available = int(ray.cluster_resources().get("CPU", 0))
        if cpus > available:
            raise IndvisionError(f"--task-cpus {cpus}: the cluster has {available} CPUs")
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_run_fold)
        pending = {task.remote(spec, str(out_dir), verbose, cpus, index, folds): index
                   for index, spec in todo}
        say(f"folds: {len(pending)} fold(s) on Ray, {cpus} CPU(s) each; at most "
            f"{max(1, available // cpus)} at once on this cluster's {available} CPUs")
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                index = pending.pop(ref)
                try:
                    fold, root, status = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died, a node was lost
                    fold, root, status = index, None, f"failed: {str(exc).splitlines()[0]}"
                say(f"folds: fold {fold + 1}/{folds} {status.splitlines()[0]}")
                yield fold, Path(root) if root else None, status

    return runner
