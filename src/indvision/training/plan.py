"""The training plan: the phases each ensemble member runs, its seed, the class weights.

No Keras here: the stage module and its tests use these without importing TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from indvision import models

if TYPE_CHECKING:
    from indvision.stages.train import Config


@dataclass(frozen=True)
class Phase:
    """One phase of one ensemble member. ``name`` says what trains (head, finetune, full,
    objects); ``key`` names it in the state, the history and the files (``finetune_m2``)."""

    name: str
    epochs: int
    learning_rate: float
    member: int = 1

    @property
    def key(self) -> str:
        return self.name if self.member == 1 else f"{self.name}_m{self.member}"


def phases_for(config: Config, objects: bool = False, member: int = 1) -> list[Phase]:
    """``full`` for a from-scratch backbone; ``head`` (+ ``finetune``) for a pretrained one;
    then ``objects`` (the any-view loss) when ``objects`` and ``object_epochs`` ask for it, at
    the last phase's learning rate."""
    if not models.get_backbone(config.backbone).pretrainable:
        phases = [Phase("full", config.head_epochs, config.head_learning_rate, member)]
    else:
        phases = [Phase("head", config.head_epochs, config.head_learning_rate, member)]
        if config.finetune_epochs > 0:
            phases.append(Phase("finetune", config.finetune_epochs,
                                config.finetune_learning_rate, member))
    if objects and config.object_epochs > 0:
        phases.append(Phase("objects", config.object_epochs, phases[-1].learning_rate, member))
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
