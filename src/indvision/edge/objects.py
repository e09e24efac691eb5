"""Objects seen in several views: fuse per-view scores into one result per object.

A *group rule* (a regex on the file name, :func:`indvision.decision.group_key`) says which
image files are views of one object. An object takes its least-good view's scores
(:func:`indvision.metrics.fuse_groups`), so a defect seen in any view decides it: the same rule
evaluate and :meth:`indvision.edge.EdgeClassifier.predict_groups` use.

Everything here is pure (numpy + :mod:`indvision.metrics`, no model, the clock is passed in),
so the grouping is tested without a bundle: :func:`fuse_objects` for ``predict``,
:class:`PendingObjects` for ``watch``, which has to decide when an object is complete while its
views are still arriving.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indvision import decision, metrics
from indvision.errors import IndvisionError

Results = Callable[[np.ndarray], list[dict[str, Any]]]  # rows of scores → label dicts
View = tuple[str, np.ndarray | None]  # a view's path and scores row (None: unreadable)


def fuse_objects(paths: Sequence[str], probs: np.ndarray, group_regex: str | None,
                 good_index: int | None, results: Results) -> list[dict[str, Any]]:
    """One dict per object (first-seen order): ``{"group", "label", "score", "scores",
    "views", "decided_by"}``. ``probs`` holds one scores row per path; ``results`` decides
    labels for fused rows (:meth:`EdgeClassifier.results`)."""
    paths = [str(p) for p in paths]
    if not paths:
        return []
    keys = [decision.group_key(p, group_regex, fallback=p) for p in paths]
    names, chosen, fused = metrics.fuse_groups(np.asarray(probs), keys, good_index)
    objects = []
    for name, pick, result in zip(names, chosen, results(fused), strict=True):
        views = [p for p, k in zip(paths, keys, strict=True) if k == name]
        objects.append({"group": name, **result, "views": views, "decided_by": paths[pick]})
    return objects


class _Rule(Protocol):
    group_regex: str | None
    views_per_object: int | None


@dataclass(frozen=True)
class ObjectRule:
    """How ``watch`` groups a folder's arriving views into objects.

    ``regex``: the group rule. An object is complete once ``views`` views of it arrived
    (readable or not; None: no count, only the timeout), or when no new view of it arrived for
    ``timeout`` seconds (None: the watcher's default, 3 x its poll interval).
    """

    regex: str
    views: int | None = None
    timeout: float | None = None


def object_rule(classifier: _Rule, group_regex: str | None = None, views: int | None = None,
                timeout: float | None = None) -> ObjectRule | None:
    """The rule for a classifier: ``group_regex`` or the bundle's (None: no rule, per image);
    ``views`` or the bundle's ``decision.views_per_object``; checked, one clear error each."""
    regex = group_regex or classifier.group_regex
    if not regex:
        return None
    check_regex(regex)
    if views is not None and views < 1:
        raise IndvisionError(f"--views must be at least 1, got {views}")
    if timeout is not None and timeout <= 0:
        raise IndvisionError(f"--object-timeout must be > 0 seconds, got {timeout}")
    return ObjectRule(regex, views or classifier.views_per_object, timeout)


def check_regex(regex: str) -> None:
    """A group regex that does not compile is the user's error, not a traceback."""
    try:
        re.compile(regex)
    except re.error as exc:
        raise IndvisionError(f"group regex {regex!r} is not a valid regular expression: "
                             f"{exc}") from None


@dataclass
class _Pending:
    views: list[View] = field(default_factory=list)
    last_seen: float = 0.0


@dataclass
class PendingObjects:
    """Views collected per object until the object is complete (see :class:`ObjectRule`).

    Each method returns the objects that became complete, as lists of views in arrival order,
    oldest object first. A file whose name the regex does not match is an object of its own:
    no other view can join it, so it is complete at once.
    """

    regex: str
    views: int | None = None
    timeout: float | None = None
    _pending: dict[str, _Pending] = field(default_factory=dict)

    def add(self, path: str, row: np.ndarray | None, now: float) -> list[list[View]]:
        """One view arrived at time ``now`` (``row`` None: it could not be read)."""
        key = decision.group_key(path, self.regex, fallback=str(path))
        entry = self._pending.setdefault(key, _Pending())
        entry.views.append((str(path), row))
        entry.last_seen = now
        alone = re.search(self.regex, Path(path).name) is None
        if alone or (self.views is not None and len(entry.views) >= self.views):
            return [self._pending.pop(key).views]
        return []

    def expired(self, now: float) -> list[list[View]]:
        """Objects with no new view for ``timeout`` seconds by ``now``."""
        if self.timeout is None:
            return []
        done = [k for k, e in self._pending.items() if now - e.last_seen >= self.timeout]
        return [self._pending.pop(k).views for k in done]

    def flush(self) -> list[list[View]]:
        """Every object still pending (the watch ends)."""
        done = [entry.views for entry in self._pending.values()]
        self._pending.clear()
        return done

    def __len__(self) -> int:
        return len(self._pending)


def decide_object(views: Sequence[View], group_regex: str, good_index: int | None,
                  results: Results) -> dict[str, Any] | None:
    """The object line for one complete object, decided on its readable views (None when
    none was readable: their error lines were the only output)."""
    readable = [(path, row) for path, row in views if row is not None]
    if not readable:
        return None
    objects = fuse_objects([p for p, _ in readable], np.stack([r for _, r in readable]),
                           group_regex, good_index, results)
    return objects[0]  # one key: the views were collected under it
