"""Which split each object goes to: stratified by class, group-aware, deterministic for a seed.

Every class's objects (groups of views, or single images) are put in one seeded order that
depends on the seed and class name only, so adding a class never moves another's objects.
By rank in that order: the first ``test_fraction`` are test, the next ``val_fraction``
validation, the rest train; with ``folds=K`` the order is cut into K blocks and block ``fold``
is test (every object tested once over the folds), validation then taken from the rest.
``fitted_classes`` (an anomaly model's good class): the other classes go to test and
validation only. ``max_train_per_class`` caps training objects, cutting validation in the same
proportion (the left-out ones are :data:`UNUSED`); test is unchanged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Protocol

import numpy as np

from indvision.errors import IndvisionError

UNUSED = "unused"  # left out by max_train_per_class; never written to splits.csv


class Splittable(Protocol):
    label: str
    group: str
    split: str


def split_ranks(n: int, val_fraction: float, test_fraction: float,
                folds: int | None = None, fold: int = 0) -> list[str]:
    """The split of each rank 0..n-1 of a class's seeded order (before any subsampling)."""
    if folds is None:
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        return ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    start, stop = round(n * fold / folds), round(n * (fold + 1) / folds)
    n_val = max(1, round(n * val_fraction))
    ranks = []
    for rank in range(n):
        if start <= rank < stop:
            ranks.append("test")
        else:
            ranks.append("val" if n_val > 0 else "train")
            n_val -= 1
    return ranks


def assign_splits(items: list[Splittable], val_fraction: float, test_fraction: float,
                  seed: int, max_train_per_class: int | None = None,
                  folds: int | None = None, fold: int = 0,
                  fitted_classes: set[str] | None = None) -> None:
    """Set ``item.split`` on every item; whole groups go to one split (see the module doc).

    Raises :class:`IndvisionError` when ``folds`` would leave a class without a test,
    validation or training object in any of the folds.
    """
    groups: dict[str, list[Splittable]] = defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, members in sorted(groups.items()):
        label = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[label].append(group)
    for label, names in sorted(by_class.items()):
        order = np.random.default_rng([seed, *label.encode()]).permutation(len(names))
        ranks = split_ranks(len(names), val_fraction, test_fraction, folds, fold)
        if folds is not None and not all(  # every fold, so fold 3 cannot fail after fold 1
                {"test", "val", "train"} <= set(split_ranks(len(names), val_fraction,
                                                            test_fraction, folds, f))
                for f in range(folds)):
            raise IndvisionError(f"class '{label}' has {len(names)} objects: too few for "
                                 f"{folds} folds (each fold needs a test, a validation and a "
                                 f"training object of every class); use fewer folds")
        if fitted_classes is not None and label not in fitted_classes:
            ranks = held_out_ranks(len(names), val_fraction, test_fraction)
        kept = _subsample(ranks, max_train_per_class)
        for rank, index in enumerate(order):
            for member in groups[names[index]]:
                member.split = kept[rank]


def held_out_ranks(n: int, val_fraction: float, test_fraction: float) -> list[str]:
    """The splits of a class never fitted on: test and validation only, in proportion."""
    n_test = round(n * test_fraction / (val_fraction + test_fraction))
    n_test = min(max(n_test, 1), n - 1) if n >= 2 else n  # one of each where there are two
    return ["test"] * n_test + ["val"] * (n - n_test)


def _subsample(ranks: list[str], max_train: int | None) -> list[str]:
    """Mark training ranks past ``max_train`` and validation in the same proportion UNUSED."""
    n_train, n_val = ranks.count("train"), ranks.count("val")
    if max_train is None or n_train <= max_train:
        return ranks
    keep = {"train": max_train,
            "val": max(1, round(n_val * max_train / n_train)) if n_val else 0}
    out = []
    for split in ranks:
        if split in keep:
            out.append(split if keep[split] > 0 else UNUSED)
            keep[split] -= 1
        else:
            out.append(split)
    return out
