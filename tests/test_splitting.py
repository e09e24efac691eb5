"""Which split each object goes to: the usual split and K-fold cross-validation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from indvision import splitting
from indvision.errors import IndvisionError


@dataclass
class Obj:
    label: str
    group: str
    split: str = ""


def objects(per_class: dict[str, int], views: int = 1) -> list[Obj]:
    """``views`` images of each object; object names are unique across classes."""
    return [Obj(label, f"{label}-{i}", "") for label, n in per_class.items()
            for i in range(n) for _ in range(views)]


def splits_of(items: list[Obj]) -> dict[str, str]:
    """Object → split, checking that every view of an object went to the same split."""
    by_group: dict[str, set[str]] = {}
    for item in items:
        by_group.setdefault(item.group, set()).add(item.split)
    assert all(len(s) == 1 for s in by_group.values()), "an object was cut across splits"
    return {g: s.pop() for g, s in by_group.items()}


def test_over_k_folds_every_object_is_tested_exactly_once_and_never_trained_on_then() -> None:
    counts = {"crack": 23, "ok": 40, "rust": 7}
    tested: dict[str, int] = {}
    for fold in range(5):
        items = objects(counts, views=3)
        splitting.assign_splits(items, 0.15, 0.15, seed=4, folds=5, fold=fold)
        split = splits_of(items)
        assert set(split.values()) == {"train", "val", "test"}
        for group, name in split.items():
            tested[group] = tested.get(group, 0) + (name == "test")
        for label, n in counts.items():
            n_test = sum(1 for g, s in split.items() if g.startswith(label) and s == "test")
            assert n // 5 <= n_test <= -(-n // 5)  # nearly equal blocks
    assert sorted(tested) == sorted(splits_of(objects(counts)))
    assert set(tested.values()) == {1}


def test_a_folds_validation_is_the_usual_fraction_of_the_class() -> None:
    items = objects({"a": 100})
    splitting.assign_splits(items, 0.2, 0.15, seed=1, folds=4, fold=2)
    names = list(splits_of(items).values())
    assert (names.count("test"), names.count("val"), names.count("train")) == (25, 20, 55)


def test_the_usual_split_is_unchanged_by_the_folds_code() -> None:
    assert splitting.split_ranks(20, 0.15, 0.15) == ["test"] * 3 + ["val"] * 3 + ["train"] * 14
    assert splitting.split_ranks(2, 0.15, 0.15) == ["train", "train"]


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    def split(seed: int) -> dict[str, str]:
        items = objects({"a": 30, "b": 30})
        splitting.assign_splits(items, 0.15, 0.15, seed=seed)
        return splits_of(items)

    assert split(3) == split(3) and split(3) != split(4)


def test_max_train_per_class_keeps_the_test_split_of_a_fold() -> None:
    full, small = objects({"a": 60}), objects({"a": 60})
    splitting.assign_splits(full, 0.15, 0.15, seed=2, folds=3, fold=1)
    splitting.assign_splits(small, 0.15, 0.15, seed=2, folds=3, fold=1, max_train_per_class=10)
    full_split, small_split = splits_of(full), splits_of(small)
    assert {g for g, s in full_split.items() if s == "test"} == \
        {g for g, s in small_split.items() if s == "test"}
    names = list(small_split.values())
    assert names.count("train") == 10 and 1 <= names.count("val") < 9
    assert names.count(splitting.UNUSED) == 60 - 20 - 10 - names.count("val")


def test_a_class_too_small_for_the_folds_is_one_clear_error() -> None:
    with pytest.raises(IndvisionError, match="class 'rare' has 3 objects: too few for 5 folds"):
        splitting.assign_splits(objects({"rare": 3, "ok": 50}), 0.15, 0.15, seed=1,
                                folds=5, fold=0)


def test_a_class_never_fitted_on_goes_to_test_and_validation_only() -> None:
    from indvision.splitting import held_out_ranks

    assert held_out_ranks(10, 0.15, 0.15) == ["test"] * 5 + ["val"] * 5
    assert held_out_ranks(7, 0.1, 0.3) == ["test"] * 5 + ["val"] * 2
    assert held_out_ranks(2, 0.15, 0.15) == ["test", "val"]  # one of each when it can
    assert held_out_ranks(1, 0.15, 0.15) == ["test"]
