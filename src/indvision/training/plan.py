"""The training plan: the phases each ensemble member runs, its seed, the class weights.

No Keras here: the stage module and its tests use these without importing TensorFlow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from indvision import models

if TYPE_CHECKING:
    from indvision.training.config import Config


@dataclass(frozen=True)
class Phase:
    """One phase of one ensemble member. ``name`` says what trains (head, finetune, full,
    objects); ``key`` names it in the state, the history and the files (``finetune_m2``).
    ``epochs`` and ``patience`` (0: never stop early) come from the step budgets
    (:func:`epochs_for`). ``last``: the member's last phase, the one whose weights it keeps —
    only it may end on its start (a phase before it hands its best epoch on, and the last
    phase weighs that against the start it began from). ``validate_every``: the phase
    validates every this many epochs and on its last (:meth:`validation_epochs`)."""

    name: str
    epochs: int
    learning_rate: float
    member: int = 1
    patience: int = 0
    last: bool = False
    validate_every: int = 1

    @property
    def key(self) -> str:
        return self.name if self.member == 1 else f"{self.name}_m{self.member}"

    def validation_epochs(self) -> list[int]:
        """The epochs (counted from 1, as Keras' ``validation_freq`` list counts them) that
        end with a validation: every ``validate_every``-th and always the last, so the phase
        never ends on weights nobody measured."""
        every = max(1, self.validate_every)
        return sorted({*range(every, self.epochs + 1, every), self.epochs} - {0})


def epochs_for(steps: int, batches_per_epoch: int) -> int:
    """The schedule rule: a budget of optimiser ``steps`` is ``ceil(steps / batches per
    epoch)`` epochs (at least 1), so a small set gets as many updates as a large one instead of
    a few epochs of a few batches; early stopping ends a phase sooner on a plateau."""
    if steps <= 0:
        return 0
    return max(1, math.ceil(steps / max(1, batches_per_epoch)))


def epochs_between_validations(steps: int, batches_per_epoch: int) -> int:
    """A validation every ``steps`` optimiser steps, in whole epochs (the nearest count, at
    least 1): a large set, whose epoch is already that long, validates every epoch."""
    return max(1, round(steps / max(1, batches_per_epoch)))


def uses_probe(config: Config) -> bool:
    """Whether the head starts from the linear probe (a pretrained backbone with
    ``train.probe``) instead of a ``head`` phase."""
    return config.probe and models.get_backbone(config.backbone).pretrainable


def phases_for(config: Config, objects: bool = False, member: int = 1,
               image_batches: int = 1, object_batches: int = 1,
               child: str | None = None) -> list[Phase]:
    """``full`` for a from-scratch backbone; ``head`` (unless the probe starts the head) and
    ``finetune`` for a pretrained one; then ``objects`` (the any-view loss) when ``objects``
    and ``object_steps`` ask for it, at the last phase's learning rate. Epochs and patience
    follow the step budgets at ``image_batches`` (``object_batches`` for ``objects``)
    batches per epoch.

    A child (``child``: ``"grown"`` when classes were added, ``"same"`` otherwise) starts from
    its parent's trained weights, so its budgets are the shorter ``child_*_steps``: a ``head``
    phase only for the new classes' fresh head rows, then ``finetune`` (``full`` for a
    from-scratch backbone). Its phases validate every ``child_validation_steps`` steps
    instead of every epoch."""
    def phase(name: str, steps: int, rate: float, batches: int) -> Phase:
        every = (epochs_between_validations(config.child_validation_steps, batches)
                 if child is not None else 1)
        return Phase(name, epochs_for(steps, batches), rate, member,
                     epochs_for(config.patience_steps, batches), validate_every=every)

    pretrained = models.get_backbone(config.backbone).pretrainable
    if child is not None:
        phases = []
        if child == "grown" and pretrained and config.child_head_steps > 0:
            phases.append(phase("head", config.child_head_steps, config.head_learning_rate,
                                image_batches))
        if config.child_finetune_steps > 0:
            phases.append(phase("finetune" if pretrained else "full",
                                config.child_finetune_steps,
                                config.finetune_learning_rate if pretrained
                                else config.head_learning_rate, image_batches))
    elif not pretrained:
        phases = [phase("full", config.head_steps, config.head_learning_rate, image_batches)]
    else:
        phases = []
        if not uses_probe(config):
            phases.append(phase("head", config.head_steps, config.head_learning_rate,
                                image_batches))
        if config.finetune_steps > 0:
            phases.append(phase("finetune", config.finetune_steps,
                                config.finetune_learning_rate, image_batches))
    if objects and config.object_steps > 0:
        rate = phases[-1].learning_rate if phases else config.finetune_learning_rate
        phases.append(phase("objects", config.object_steps, rate, object_batches))
    if phases:
        phases[-1] = replace(phases[-1], last=True)
    return phases


def member_seed(run_seed: int, member: int) -> int:
    """Ensemble member ``member`` (from 1) trains with this seed; member 1 with the run's."""
    return run_seed + member - 1


def member_name(backbone: str, member: int) -> str:
    """Each ensemble member's model name (unique inside the saved ensemble)."""
    name = f"indvision_{backbone}"
    return name if member == 1 else f"{name}_m{member}"


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced": n_samples / (n_classes * count(class))."""
    counts = Counter(int(v) for v in labels)
    return {c: len(labels) / (n_classes * counts[c]) for c in range(n_classes) if counts[c]}
