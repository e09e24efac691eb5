"""Pipeline files (YAML) to frozen stage configs, validated before any work starts.

A pipeline file is data, not code::

    name: defect
    seed: 42
    stages:            # run in this order
      ingest: {synthetic: defect}
      train: {backbone: small_cnn, head_steps: 200}

Every stage's settings become that stage module's frozen ``Config`` dataclass. An unknown stage
or key, or a value of the wrong type, raises :class:`ConfigError` with a "did you mean"
suggestion, so a typo costs seconds rather than a half-finished training run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from indvision.errors import ConfigError, did_you_mean

#: Every stage, in the order a pipeline runs them. The module holds ``Config`` and ``run``;
#: heavy libraries (TensorFlow) are imported inside ``run`` so that validating is instant.
STAGES: dict[str, str] = {
    "ingest": "indvision.stages.ingest",
    "augment": "indvision.stages.augment",
    "train": "indvision.stages.train",
    "fit": "indvision.stages.fit",
    "evaluate": "indvision.stages.evaluate",
    "export": "indvision.stages.export",
    "verify": "indvision.stages.verify",
}
TOP_LEVEL_KEYS = ("name", "seed", "description", "stages")
#: Settings that moved to another stage: a pipeline file still naming the old place is told
#: where the setting lives now (a parameter lives in one stage only).
_GOOD = ("the good class is a fact of the dataset, recorded once by ingest and read by every "
         "later stage")
_STEPS = ("schedules are budgets of optimiser steps now, so a small set gets as many updates "
          "as a large one (epochs = ceil(steps / batches per epoch))")
MOVED_KEYS: dict[str, tuple[str, str]] = {
    "train.good_class": ("ingest.good_class", _GOOD),
    "evaluate.good_class": ("ingest.good_class", _GOOD),
    "train.head_epochs": ("train.head_steps", _STEPS),
    "train.finetune_epochs": ("train.finetune_steps", _STEPS),
    "train.object_epochs": ("train.object_steps", _STEPS),
    "train.patience": ("train.patience_steps", _STEPS),
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def stage_module(name: str) -> types.ModuleType:
    """Import a stage's module by stage name."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}'{did_you_mean(name, STAGES)}")
    return importlib.import_module(STAGES[name])


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: its name, seed, and each stage's frozen config in run order."""

    name: str
    seed: int
    stages: tuple[tuple[str, Any], ...]
    source: str = ""

    def config(self, stage: str) -> Any:
        """The config of ``stage``, or KeyError."""
        return dict(self.stages)[stage]

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in), as written to the manifest."""
        return {
            "name": self.name,
            "seed": self.seed,
            "stages": {name: config_to_dict(cfg) for name, cfg in self.stages},
        }

    def hash(self) -> str:
        """sha256 of the resolved config: two runs with equal hashes were configured alike."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def config_to_dict(config: Any) -> dict[str, Any]:
    """A stage config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def resolve_pipeline_path(name_or_file: str) -> Path:
    """``defect`` → ``pipelines/defect.yaml`` (here, else in the project); a path stays a path."""
    candidate = Path(name_or_file)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"pipeline file not found: {candidate}")
        return candidate
    for folder in (Path.cwd() / "pipelines", PROJECT_ROOT / "pipelines"):
        path = folder / f"{name_or_file}.yaml"
        if path.is_file():
            return path
    known = {p.stem for folder in (Path.cwd() / "pipelines", PROJECT_ROOT / "pipelines")
             if folder.is_dir() for p in folder.glob("*.yaml")}
    raise ConfigError(f"no pipeline named '{name_or_file}'{did_you_mean(name_or_file, known)}")


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=3`` → (``train.epochs``, 3): the value is read as YAML (numbers, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects stage.key=value, got '{text}'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def load_pipeline(
    name_or_file: str,
    overrides: list[str] | tuple[str, ...] = (),
    data: str | None = None,
    parent: str | None = None,
) -> PipelineSpec:
    """Read, override and validate a pipeline (``data`` and ``parent`` are ``--data`` and
    ``--from``: ingest's ``source`` and ``parent``). Raises :class:`ConfigError` before any
    work."""
    path = resolve_pipeline_path(name_or_file)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'stages' mapping")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'{did_you_mean(key, TOP_LEVEL_KEYS)}")
    stages_raw: dict[str, dict[str, Any]] = {}
    for stage, params in raw["stages"].items():
        stage_module(stage)  # validates the name
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{path}: stage '{stage}' must map keys to values")
        stages_raw[stage] = dict(params or {})
    order = list(STAGES)
    names = list(stages_raw)
    if names != sorted(names, key=order.index):
        raise ConfigError(f"{path}: stages must run in the order {' → '.join(order)}")

    seed = raw.get("seed", 0)
    for text in overrides:
        key, value = parse_override(text)
        if key == "seed":
            seed = value
            continue
        stage, dot, field = key.partition(".")
        if not dot:
            raise ConfigError(f"--set expects stage.key=value, got '{text}'")
        if stage not in stages_raw:
            raise ConfigError(f"--set {text}: stage '{stage}' is not in this pipeline"
                              f"{did_you_mean(stage, stages_raw)}")
        stages_raw[stage][field] = value
    for flag, key, value in (("--data", "source", data), ("--from", "parent", parent)):
        if value is None:
            continue
        if "ingest" not in stages_raw:
            raise ConfigError(f"{flag} needs a pipeline with an ingest stage")
        if not Path(value).expanduser().exists():
            raise ConfigError(f"{flag} {value}: no such file or folder")
        stages_raw["ingest"][key] = str(value)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")

    stages = tuple(
        (stage, build_config(stage, stage_module(stage).Config, params))
        for stage, params in stages_raw.items()
    )
    return PipelineSpec(name=str(raw.get("name", path.stem)), seed=seed, stages=stages,
                        source=str(path))


def build_config(stage: str, cls: type, params: dict[str, Any]) -> Any:
    """Build a frozen stage config, checking key names and value types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in params.items():
        if f"{stage}.{key}" in MOVED_KEYS:
            new_key, why = MOVED_KEYS[f"{stage}.{key}"]
            raise ConfigError(f"'{stage}.{key}' moved to '{new_key}': {why}")
        if key not in fields:
            raise ConfigError(f"unknown key '{stage}.{key}'{did_you_mean(key, fields)}")
        values[key] = _coerce(f"{stage}.{key}", value, hints[key])
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{stage}: {exc}") from None


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a type hint; lists become tuples where a tuple is expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(where, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if hint is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(where, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(where, v, a) for v, a in zip(value, args, strict=True))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value
