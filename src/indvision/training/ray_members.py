"""Ensemble members as Ray tasks (``train.ray``, the pipeline's ``--ray``).

The members are independent once the linear probe is fitted. The train stage fits the probe
here, then runs each member as one Ray task (``train.task_cpus`` CPUs, ``train.task_gpus``
GPUs) that rebuilds its inputs from the run folder (:func:`indvision.training.prepare.prepare`)
and runs :func:`indvision.training.phases.train_member` as the sequential path does, in its own
``train/members/m<k>/``, ending with ``member.keras`` and ``member.json``. Back here the members
are averaged as the sequential path averages them and their states and TensorBoard logs merged.
A member whose ``member.keras`` exists is not trained again; an unfinished one resumes. The run
folder must be the same path on every node; Ray is the optional ``[scale]`` extra.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indvision import atomic, models
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.training import records
from indvision.training.plan import Phase, member_seed, uses_probe

if TYPE_CHECKING:
    from indvision.rundir import Run
    from indvision.training.config import Config
    from indvision.training.phases import Member

MEMBERS = "members"
MEMBER_MODEL = "member.keras"
MEMBER_INFO = "member.json"


def member_dir(out: Path, member: int) -> Path:
    return out / MEMBERS / f"m{member}"


def train_members(config: Config, run: Run, prepared: Any, out: Path,
                  state: dict[str, Any]) -> list[Member]:
    """Every member of ``config.ensemble``, each trained in a Ray task (see the module
    docstring); returns them loaded, in member order, and merges their states into
    ``state``."""
    from indvision.ray_cluster import start

    if uses_probe(config) and prepared.parent is None:
        _fit_probe_once(config, run, prepared, out, state)
    todo = []
    for member in range(1, config.ensemble + 1):
        folder = member_dir(out, member)
        if (folder / MEMBER_MODEL).is_file():
            say(f"train: ensemble member {member} finished earlier")
            continue
        _seed_member_folder(folder, out, state)
        todo.append(member)
    if todo:
        ray = start(config.ray if config.ray not in (None, "local") else None, quiet=False)
        task = ray.remote(num_cpus=config.task_cpus, num_gpus=config.task_gpus,
                          max_retries=0)(_member_task)
        say(f"train: {len(todo)} ensemble member(s) as Ray tasks, {config.task_cpus} CPU(s) "
            f"each ({int(ray.cluster_resources().get('CPU', 0))} in the cluster)")
        pending = {task.remote(str(run.root), config, member): member for member in todo}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            member = pending.pop(finished[0])
            try:
                ray.get(finished[0])
            except ray.exceptions.RayError as exc:
                raise IndvisionError(f"train: ensemble member {member} failed on Ray: "
                                     f"{_first_line(exc)}") from None
            say(f"train: ensemble member {member} done")
    return [_load_member(config, out, member, state)
            for member in range(1, config.ensemble + 1)]


def _first_line(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause if cause is not None else exc)
    return next((line for line in reversed(text.splitlines()) if line.strip()), text)


def _fit_probe_once(config: Config, run: Run, prepared: Any, out: Path,
                    state: dict[str, Any]) -> None:
    """The linear probe every member starts from, fitted here once (as member 1 fits it on
    the sequential path: its seed, its freshly built model)."""
    import keras

    from indvision.training.phases import start_from_probe
    from indvision.training.plan import member_name

    seed = member_seed(run.seed, 1)
    keras.utils.set_random_seed(seed)
    model, _ = models.build_classifier_with_source(
        config.backbone, prepared.feed.n_classes, config.height, config.width,
        prepared.weights, config.alpha, config.dropout, name=member_name(config.backbone, 1))
    start_from_probe(model, prepared.feed, out, state, seed)


def _seed_member_folder(folder: Path, out: Path, state: dict[str, Any]) -> None:
    """A member's own folder: the probe's head and record copied in (once)."""
    from indvision.training.phases import PROBE_HEAD

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / records.STATE).is_file():
        return  # an unfinished member: it continues from its own state
    if (out / PROBE_HEAD).is_file():
        shutil.copyfile(out / PROBE_HEAD, folder / PROBE_HEAD)
    records.write_state(folder, {"phases": {}, "history": [],
                                 **({"probe": state["probe"]} if "probe" in state else {})})


def _member_task(run_root: str, config: Config, member: int) -> None:
    """One member, inside a Ray worker (see the module docstring)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from indvision.rundir import Run
    from indvision.training import devices, phases
    from indvision.training.prepare import prepare

    devices.limit_threads(config.task_cpus)
    run = Run.open(Path(run_root))
    prepared = prepare(config, run)
    folder = member_dir(run.stage_dir("train"), member)
    state = records.read_state(folder)
    with devices.scope(config.devices):
        trained = phases.train_member(config, prepared.feed, member,
                                      member_seed(run.seed, member), prepared.weights, folder,
                                      state, prepared.parent_model)
    atomic.write_json(folder / MEMBER_INFO, {
        "phases": [dataclasses.asdict(p) for p in trained.phases],
        "source": dataclasses.asdict(trained.source), "recalibrated": trained.recalibrated})
    with atomic.atomic_path(folder / MEMBER_MODEL) as tmp:  # last: it marks the member done
        trained.model.save(tmp)


def _load_member(config: Config, out: Path, member: int, state: dict[str, Any]) -> Member:
    """A finished member back from its folder; its state merged into ``state``."""
    import keras

    from indvision import layers  # noqa: F401  (registers indvision's layers for loading)
    from indvision.training.phases import Member

    folder = member_dir(out, member)
    info = atomic.read_json(folder / MEMBER_INFO)
    own = records.read_state(folder)
    state["phases"].update(own["phases"])
    state["history"] = [row for row in state["history"]
                        if not any(row.get("phase") == key for key in own["phases"])]
    state["history"] += own["history"]
    records.write_state(out, state)
    logs = folder / records.TENSORBOARD
    if logs.is_dir():
        for phase_logs in logs.iterdir():
            target = out / records.TENSORBOARD / phase_logs.name
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(phase_logs, target)
    model = keras.saving.load_model(folder / MEMBER_MODEL, compile=False)
    return Member(model, models.WeightsSource(**info["source"]),
                  [Phase(**p) for p in info["phases"]], int(info["recalibrated"]))
