"""The train stage's settings: the frozen :class:`Config` every training module reads.

It lives in the training package, beside the code that reads it; :mod:`indvision.stages.train`
(the stage, which only drives training) names it as its ``Config`` for the pipeline's stage
table. Importing it imports no Keras: validating a pipeline stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indvision import images, models


@dataclass(frozen=True)
class Config:
    """Model, input size and training schedule."""

    backbone: str = "mobilenet_v2"  # a key of indvision.models.BACKBONES
    height: int = 160  # model input size; images are resized (after crop) to it
    width: int = 160
    resize: str = "area"  # "area" or "bilinear" (OpenCV), also on the device
    crop: tuple[float, float, float, float] | None = None  # region of interest x0,y0,x1,y1
    colour_window: tuple[float, float] | None = None  # follow the object: see images.InputSpec
    weights: str = "auto"  # auto (imagenet if pretrainable, else none), none, imagenet, PATH
    alpha: float = 1.0  # width multiplier (MobileNets, small_cnn)
    dropout: float = 0.2
    batch_size: int = 32
    # Start the head from the linear probe (a pretrained backbone): a logistic regression on
    # the frozen features of the training images, so fine-tuning begins where the
    # frozen-feature baseline ends; there is no separate head phase then (see
    # indvision.training.probe). False: a head phase of head_steps trains it from random.
    probe: bool = True
    # Budgets in optimiser steps, each phase's epochs = ceil(steps / batches per epoch): a
    # small set gets as many updates as a large one. Early stopping ends a phase sooner.
    head_steps: int = 300  # the head phase (probe off), or the only phase for small_cnn
    finetune_steps: int = 600  # top of the backbone unfrozen; 0 skips fine-tuning
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 2e-5  # keep low: 1e-4 collapsed MobileNetV2 on real data
    unfreeze_top_layers: int | None = None  # None: the backbone table's top blocks; N: last N
    class_weight: str = "balanced"  # or "none"
    # A phase stops after this many steps (rounded up to epochs) without a lower validation
    # loss; 0: never. The best epoch is the lowest validation loss, which one lucky call on a
    # small validation set cannot move as it moves accuracy.
    patience_steps: int = 200
    label_smoothing: float = 0.0
    workers: int = 2  # threads preparing batches (and decoding the image cache)
    # Objects seen in several views (a CSV group column or ingest.group_regex): a last phase,
    # "objects", of up to this many steps trains on whole objects, each defective when at
    # least one of its views shows the defect (multiple-instance learning), as evaluate,
    # verify and the edge runtime decide. The earlier phases give every view its object's
    # label, which teaches a view where the damage cannot be seen to call it damaged. Needs
    # ingest.good_class; skipped
    # without grouped views or without a good class in the dataset.
    object_steps: int = 0
    # Save the model averaged over each image and its left-right mirror (test-time
    # augmentation inside the graph: every exported file and the edge do the same, at twice the
    # inference cost). Only where a mirrored image keeps its class; see models.mirror_averaged.
    mirror_average: bool = False
    # Train this many members on the same data, each with its own seed (run seed, +1, ...:
    # head initialisation, batch order, augmentation), and save the average of their scores:
    # one model file whose inference costs that many passes. With little data, which epochs
    # and which shortcuts a network ends on vary from seed to seed; the average varies less.
    ensemble: int = 1
    # Train each model data-parallel on this many devices of this node
    # (tf.distribute.MirroredStrategy: the node's GPUs; on a CPU-only node, logical CPU devices,
    # which test the path but gain no speed). The global batch stays batch_size. Several
    # machines are refused: Keras 3 cannot fit one model across workers (keras-team/keras#20585).
    devices: int = 1
    # Train the ensemble members as Ray tasks (pip install 'indvision[scale]'): "local" starts
    # a Ray for the run, "auto" or ray://host:port joins a cluster (the run folder on a shared
    # filesystem). The pipeline's --ray sets it; null trains them here, one after the other.
    # Each task reserves task_cpus CPUs (TensorFlow's threads sized to them) and task_gpus GPUs.
    ray: str | None = None
    task_cpus: int = 1
    task_gpus: float = 0.0
    # A child (ingest.parent, --from) starts from its parent's trained weights, so it needs
    # fewer updates than a model started from ImageNet: a head phase (backbone frozen, at
    # head_learning_rate) only for the fresh head rows of new classes, then fine-tuning. Its
    # first whole-model phase can end on the parent itself when no epoch makes as few
    # validation errors. The backbone, alpha and input size must be the parent's.
    child_head_steps: int = 100
    child_finetune_steps: int = 300
    # A child validates every this many optimiser steps (in whole epochs, and on its last
    # epoch) instead of after every epoch: it starts from a trained model and moves little
    # between epochs (docs/results.md). The best epoch and early stopping are chosen among
    # the validated epochs.
    child_validation_steps: int = 60
    # A child with new classes: after training, its old classes' head columns end this share
    # the parent's and the rest its own (weight-space averaging of the two heads, as WiSE-FT
    # averages a fine-tuned model with its start); the backbone and the new columns stay the
    # child's (measured in docs/results.md, bench/head_mix.py). 0: the child's head as
    # trained.
    child_head_mix: float = 0.5
    # Write TensorBoard logs of every fit (epoch loss, accuracy, learning rate and their
    # validation twins) to train/tensorboard/<phase key>; view with
    # ``tensorboard --logdir <run>/train/tensorboard``. Cheap: no graph, histograms or profile.
    tensorboard: bool = True

    def __post_init__(self) -> None:
        models.check_choice(self.backbone, self.alpha,
                            "none" if self.weights == "auto" else self.weights)
        _ = self.input_spec  # validates crop, colour_window and resize
        if not (32 <= self.height <= 1024 and 32 <= self.width <= 1024):
            raise ValueError("height and width must be between 32 and 1024 pixels")
        if (self.weights not in ("auto", "none", "imagenet")
                and not Path(self.weights).expanduser().is_file()):
            raise ValueError(f"weights: no such file {self.weights!r} (give auto, none, "
                                 "imagenet or the path of a weights file)")
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        if self.head_steps < 1 or self.finetune_steps < 0 or self.patience_steps < 0:
            raise ValueError("head_steps must be >= 1, finetune_steps and patience_steps >= 0")
        if self.child_head_steps < 0 or self.child_finetune_steps < 0:
            raise ValueError("child_head_steps and child_finetune_steps must be >= 0")
        if self.child_validation_steps < 1:
            raise ValueError("child_validation_steps must be at least 1 (1: every epoch)")
        if not 0.0 <= self.child_head_mix <= 1.0:
            raise ValueError(f"child_head_mix must be between 0 and 1, got {self.child_head_mix}")
        if self.head_learning_rate <= 0 or self.finetune_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', "
                             f"not {self.class_weight!r}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ValueError("label_smoothing and dropout must be in [0, 1)")
        if self.unfreeze_top_layers is not None and self.unfreeze_top_layers < 1:
            raise ValueError("unfreeze_top_layers must be a positive number of layers")
        if self.object_steps < 0:
            raise ValueError("object_steps must be 0 (off) or more")
        if not 1 <= self.ensemble <= 10:
            raise ValueError("ensemble must be between 1 (one model) and 10 members")
        if self.task_cpus < 1 or self.task_gpus < 0:
            raise ValueError("task_cpus must be at least 1 and task_gpus at least 0")
        if self.devices < 1 or self.batch_size % self.devices:
            raise ValueError(f"devices must be at least 1 and divide batch_size "
                             f"({self.batch_size}), got {self.devices}")

    @property
    def input_spec(self) -> images.InputSpec:
        return images.InputSpec(self.height, self.width, self.resize, self.crop,
                                self.colour_window)

    def resolved_weights(self) -> str:
        return models.default_weights(self.backbone) if self.weights == "auto" else self.weights
