"""Albumentations transform lists: built from a pipeline's names, checked, serialised, applied.

Shared by the augment stage (which checks the list and writes ``augmentation.json``) and the
training batches (which load it back and apply it): a public module, so no stage imports
another's helpers. albumentations is imported on first use, not at import time.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from indvision.errors import IndvisionError, did_you_mean

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def split_item(item: Any, where: str, error: type[Exception]) -> tuple[str, dict[str, Any]]:
    """``{Name: {params}}`` or ``Name`` → (name, params); anything else raises ``error``."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, params = next(iter(item.items()))
        if params is None:
            params = {}
        if isinstance(name, str) and isinstance(params, dict):
            return name, dict(params)
    raise error(f"{where}: expected {{TransformName: {{param: value}}}} or a transform name, "
                f"got {item!r}")


def albumentations_module() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def transform_classes() -> dict[str, type]:
    """Every albumentations transform (and composition such as OneOf) by name."""
    A = albumentations_module()
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import BasicTransform

    found = {}
    for name in dir(A):
        obj = getattr(A, name)
        if (inspect.isclass(obj) and issubclass(obj, (BasicTransform, BaseCompose))
                and not inspect.isabstract(obj) and not name.startswith("_")
                and obj.__module__.startswith("albumentations.")
                and "Base" not in name and name not in _NOT_TRANSFORMS):
            found[name] = obj
    return found


# Helpers albumentations exports that are not usable from a YAML file: abstract bases, and
# Lambda (it needs Python functions and cannot be serialised).
_NOT_TRANSFORMS = {"BasicTransform", "DualTransform", "ImageOnlyTransform", "NoOp",
                   "Transform3D", "ReplayCompose", "Lambda"}


def accepted_parameters(cls: type) -> list[str]:
    """The keyword parameters a transform's ``__init__`` takes (its signature, minus self)."""
    params = inspect.signature(cls.__init__).parameters
    return [name for name, p in params.items()
            if name not in ("self", "strict")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def value_error_line(exc: Exception) -> str:
    """One line from albumentations' (pydantic) validation error."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            parts, seen = [], set()
            for error in errors():
                loc = str(error.get("loc", ("?",))[0])
                if loc in seen:
                    continue
                seen.add(loc)
                parts.append(f"{loc}: {error.get('msg', '')}".strip())
            if parts:
                return "; ".join(parts)[:300]
        except Exception:  # an unexpected error shape: fall back to the text
            pass
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _build_one(item: Any, where: str, classes: dict[str, type]) -> Any:
    name, params = split_item(item, where, IndvisionError)
    if name not in classes:
        raise IndvisionError(f"{where}: unknown albumentations transform '{name}'"
                             f"{did_you_mean(name, classes)}")
    cls = classes[name]
    accepted = accepted_parameters(cls)
    for key in params:
        if key not in accepted:
            raise IndvisionError(f"{where}: {name} has no parameter '{key}'"
                                 f"{did_you_mean(key, accepted)}")
    if "transforms" in params and "transforms" in accepted:  # OneOf, SomeOf, Sequential...
        inner = params["transforms"]
        if not isinstance(inner, list):
            raise IndvisionError(f"{where}: {name}.transforms must be a list of transforms")
        params["transforms"] = [_build_one(sub, f"{where}.{name}.transforms[{i}]", classes)
                                for i, sub in enumerate(inner)]
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise IndvisionError(f"{where}: invalid {name} settings: {value_error_line(exc)}") \
            from None


def build_compose(transforms: list, seed: int | None = None) -> Any:
    """Validate ``transforms`` (the stage's config list) and return an ``A.Compose``.

    Raises :class:`IndvisionError` naming ``augment.transforms[i]`` for an unknown transform,
    an unknown parameter (with a suggestion from the transform's signature) or a bad value.
    """
    A = albumentations_module()
    classes = transform_classes()
    built = [_build_one(item, f"augment.transforms[{i}]", classes)
             for i, item in enumerate(transforms)]
    return A.Compose(built, seed=seed)


def load_augmentation(path: str | Path, seed: int | None = None) -> Any:
    """An ``augmentation.json`` (``A.to_dict``) back to an ``A.Compose``, seeded."""
    A = albumentations_module()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        compose = A.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndvisionError(f"{path}: not a readable albumentations file ({exc})") from None
    compose.set_random_seed(seed)
    return compose


def apply(compose: Any, image: np.ndarray) -> np.ndarray:
    """Augment one RGB uint8 image; errors name the transform list as the thing to fix."""
    try:
        return compose(image=image)["image"]
    except Exception as exc:
        raise IndvisionError(f"augment.transforms: applying the augmentation to a "
                             f"{image.shape[1]}x{image.shape[0]} image failed: "
                             f"{value_error_line(exc)}") from None


