"""Fitting: one ensemble member's phases, the fit of one phase, and what each epoch records.

A pretrained backbone's head starts from the linear probe (:func:`start_from_probe`). Every
phase's epochs come from its step budget (:func:`indvision.training.plan.epochs_for`); it stops
early on validation and keeps its best epoch (lowest val loss, ties to the higher accuracy) —
or, in a member's last phase, the weights it started from when the best epoch makes more
validation errors. An earlier phase hands on its best epoch and its start, so the probe stays
the fallback to the end. A from-scratch backbone's BatchNorm is re-estimated before each
validation.

Resuming: after every epoch :class:`~indvision.training.progress.PhaseProgress` writes the state
atomically and Keras' ``BackupAndRestore`` keeps ``train/backup/<phase key>``; a phase recorded
done is skipped. TensorBoard logs go to ``train/tensorboard/<phase key>``. Imports Keras at its
top: the train stage imports it inside ``run``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import keras
import numpy as np

from indvision import atomic, models
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.training import records, warmstart
from indvision.training.batches import FeatureBatches, Feed, ImageBatches, Split
from indvision.training.plan import Phase, member_name, phases_for, uses_probe
from indvision.training.probe import fit_probe
from indvision.training.progress import PhaseProgress

if TYPE_CHECKING:
    from indvision.training.config import Config
    from indvision.training.prepare import ParentModel


PROBE_HEAD = "probe_head.npz"  # the probe's kernel and bias: every member starts from them
PROBE_MODEL = "probe.keras"  # the classifier as the probe left it: the frozen-feature baseline


@dataclass(frozen=True)
class PhaseFit:
    """What one phase fits. ``model`` is the classifier (frozen/unfrozen per phase);
    ``trainer`` is what is fitted: the classifier itself, or its any-view wrapper
    (``good_index`` set). ``recalibration_data``: unaugmented batches for BatchNorm
    re-estimation (a from-scratch backbone), else None."""

    model: Any
    trainer: Any
    train_data: Any
    val_data: Any
    class_weight: dict[int, float] | None
    good_index: int | None
    recalibration_data: Any


@dataclass(frozen=True)
class Member:
    """One trained ensemble member: its classifier at its last phase's best weights."""

    model: Any
    source: models.WeightsSource
    phases: list[Phase]
    recalibrated: int  # batches its BatchNorm statistics were re-estimated on (0: none)


def train_member(config: Config, feed: Feed, member: int, seed: int, weights: str,
                 out: Path, state: dict[str, Any], parent: ParentModel | None = None) -> Member:
    """Build member ``member`` from ``seed``, start it from the parent's weights
    (``parent``, a child run: :mod:`indvision.training.warmstart`) or its head from the
    linear probe (when the config uses one), and run its phases, skipping those done."""
    if config.ensemble > 1:
        say(f"train: ensemble member {member} of {config.ensemble} (seed {seed})")
    keras.utils.set_random_seed(seed)
    model, source = models.build_classifier_with_source(
        config.backbone, feed.n_classes, config.height, config.width,
        weights if parent is None else "none", config.alpha,
        config.dropout, name=member_name(config.backbone, member))
    image_fit, object_fit = _member_fits(model, feed, seed)
    child, parent_head = None, None
    if parent is not None:
        child, parent_head = _start_from_parent(model, parent, seed)
    elif uses_probe(config):
        start_from_probe(model, feed, out, state, seed)

    member_phases = phases_for(config, objects=feed.objects is not None, member=member,
                               image_batches=len(image_fit.train_data),
                               object_batches=len(object_fit.train_data) if object_fit else 1,
                               child=child)
    for number, phase in enumerate(member_phases):
        record = state["phases"].get(phase.key, {})
        if record.get("done"):
            say(f"train: phase {phase.key} finished earlier "
                  f"({record['epochs_run']} epochs)")
            continue
        candidates = first_candidates(config, child, phase)
        if number > 0:  # start from the previous phase's best weights — or from its start
            previous_key = member_phases[number - 1].key
            candidates = handed_on(previous_key, state["phases"][previous_key])
            model.set_weights(records.load_arrays(out / candidates[0].weights))
        if phase.name == "objects":
            assert object_fit is not None
            say(f"train: objects: any-view loss on {len(object_fit.train_data.members)} "
                  f"objects of up to {object_fit.train_data.views} views: a defective object "
                  "needs its defect in one view only")
            fit_phase(config, phase, out, state, object_fit, candidates)
        elif phase.name == "head":
            fit_phase(config, phase, out, state, head_fit(model, feed, seed), candidates)
        else:
            fit_phase(config, phase, out, state, image_fit, candidates)
        for candidate in candidates:  # the previous phase's weights are not needed any more
            if candidate.weights:
                (out / candidate.weights).unlink(missing_ok=True)

    if member_phases:
        load_final_weights(model, out, state["phases"][member_phases[-1].key])
    if child == "grown" and config.child_head_mix > 0:
        warmstart.mix_head_with_parent(model, parent_head, config.child_head_mix)
        say(f"train: the old classes' head columns are {config.child_head_mix:g} the "
            "parent's (train.child_head_mix)")
    recalibrated = 0
    if feed.plain_train is not None:
        plain = feed.plain_train
        recalibrated = models.recalibrate_batchnorm(model,
                                                    (plain[i][0] for i in range(len(plain))))
    return Member(model, source, member_phases, recalibrated)


def _member_fits(model: Any, feed: Feed, seed: int) -> tuple[PhaseFit, PhaseFit | None]:
    """What a member's image phases fit, and its objects phase (None without objects)."""
    image_fit = PhaseFit(model, model, feed.train_batches(seed), feed.val_data,
                         feed.class_weight, None, feed.plain_train)
    if feed.objects is None:
        return image_fit, None
    object_train = feed.object_batches(seed)
    trainer = models.object_trainer(model, object_train.views)
    return image_fit, PhaseFit(model, trainer, object_train, feed.objects.val, None,
                               feed.objects.good_index, feed.plain_train)


def _start_from_parent(model: Any, parent: ParentModel, seed: int) -> tuple[str, Any]:
    """A child starts from its parent's weights, the bytes its ingest recorded:
    ``("grown", the parent's head)`` when new classes grew the head, else ``("same", None)``."""
    added = warmstart.start_from_parent(model, parent.path, seed, parent.sha256,
                                        parent.recorded_in)
    say(f"train: starting from the parent's weights ({parent.path})"
        + (f", its head grown by {added} class(es)" if added else ""))
    if not added:
        return "same", None
    return "grown", warmstart.parent_head_of(model, added)


def first_candidates(config: Config, child: str | None, phase: Phase) -> list[Candidate]:
    """What a member's first phase may fall back on: the linear probe, or — a child whose
    first phase trains the whole model — the parent itself (fine-tuning that only hurts on
    validation ends on the parent's weights). A head phase for new classes starts from
    fresh rows: nothing to fall back on."""
    if child is not None:
        return [] if phase.name == "head" else [Candidate("the parent", "")]
    return [Candidate("the linear probe", "", True)] if uses_probe(config) else []


def start_from_probe(model: Any, feed: Feed, out: Path, state: dict[str, Any],
                     seed: int) -> None:
    """Write the linear probe into ``model``'s head: fitted once per training on the frozen
    features of the unaugmented training images (every ensemble member starts from the same
    probe), kept in ``probe_head.npz`` and ``state.json`` for the other members and a resumed
    run, and saved as ``probe.keras`` (the frozen-feature baseline evaluate measures)."""
    head = model.get_layer(models.HEAD_LAYER)
    record = state.get("probe")
    if record and (out / PROBE_HEAD).is_file():
        head.set_weights(records.load_arrays(out / PROBE_HEAD))
        return
    features = pooled_features(model, feed)
    groups = np.array([row.get("group") or row["path"] for row in feed.train.rows])
    say(f"train: linear probe: logistic regression on {features.shape[1]} frozen features "
          f"of {len(features)} training images")
    probe = fit_probe(features, feed.train.labels, feed.n_classes, groups, feed.class_weight,
                      seed)
    head.set_weights([probe.kernel, probe.bias])
    records.save_arrays(out / PROBE_HEAD, [probe.kernel, probe.bias])
    with atomic.atomic_path(out / PROBE_MODEL) as tmp:
        model.save(tmp)  # not compiled yet: no optimizer state
    state["probe"] = dict(probe.info)
    records.write_state(out, state)
    say(f"train: linear probe: C {probe.info['C']:g} ({probe.info['C_chosen_by']}), "
          f"train accuracy {probe.info['train_accuracy']:.4f}, "
          f"{probe.info['seconds']:.1f} s")


def pooled_features(model: Any, feed: Feed, split: Split | None = None) -> np.ndarray:
    """The head's input (pooled backbone features) for every unaugmented image of ``split``
    (the training split by default)."""
    extractor = keras.Model(model.inputs, model.get_layer(models.HEAD_INPUT_LAYER).input)
    plain = ImageBatches(feed.train if split is None else split, feed.n_classes,
                         feed.config.input_spec, feed.config.batch_size,
                         workers=feed.config.workers)
    return np.concatenate([np.asarray(extractor.predict_on_batch(plain[i][0]))
                           for i in range(len(plain))]).astype(np.float64)


def head_fit(model: Any, feed: Feed, seed: int) -> PhaseFit:
    """What a ``head`` phase fits: the head alone (the classifier's own dropout and dense
    layers, shared, so training it trains ``model``) on the pooled features of the
    unaugmented training and validation images. The backbone is frozen in that phase, so its
    output for an image never changes: it is computed once here instead of in every step
    (a child's 100 head steps on NEU cost 105–114 s through the backbone). The steps, learning
    rate, class weights and early stopping are the phase's as before; augmentation is left to
    the phases that move the backbone."""
    started = time.perf_counter()
    features = keras.Input((model.get_layer(models.HEAD_INPUT_LAYER).input.shape[-1],),
                           name="pooled_features")
    head = model.get_layer(models.HEAD_LAYER)(model.get_layer(models.HEAD_INPUT_LAYER)(features))
    trainer = keras.Model(features, head, name=f"{model.name}_head")
    size = feed.config.batch_size
    train = FeatureBatches(pooled_features(model, feed), feed.train.labels, feed.n_classes, size,
                           shuffle=True, seed=seed)
    val = (FeatureBatches(pooled_features(model, feed, feed.val), feed.val.labels,
                          feed.n_classes, size) if feed.val_data is not None else None)
    say(f"train: head: pooled features of {len(feed.train.labels)} training and "
        f"{len(feed.val.labels)} validation images, computed once in "
        f"{time.perf_counter() - started:.1f} s")
    return PhaseFit(model, trainer, train, val, feed.class_weight, None, None)


def load_final_weights(model: Any, out: Path, record: dict[str, Any]) -> None:
    """The last phase's best weights; after a crash between writing the outputs and the
    manifest, the saved model.keras holds them (its best-weights file is already gone)."""
    best = out / str(record.get("best_weights"))
    if best.is_file():
        model.set_weights(records.load_arrays(best))
    elif (out / "model.keras").is_file():
        saved = models.find_submodel(models.load_model(out / "model.keras"), model.name)
        model.set_weights(saved.get_weights())
    else:
        raise IndvisionError(f"{out}: training state is incomplete ({best.name} is missing); "
                             "start a new run")


class Candidate(NamedTuple):
    """Weights a phase may start from: ``weights`` names a file in the train folder ("" for
    the model as it stands); ``probe`` says they are the linear probe's."""

    label: str
    weights: str
    probe: bool = False


def handed_on(key: str, record: dict[str, Any]) -> list[Candidate]:
    """What a finished phase hands the next one: its best epoch first, then the start it
    began from when it measured one and did not end on it."""
    start = record.get("start") or {}
    if record.get("kept_start"):
        return [Candidate(f"{key}'s start ({start.get('from')})", str(start["weights"]),
                          bool(start.get("probe")))]
    candidates = [Candidate(f"{key} epoch {record['best_epoch'] + 1}",
                            str(record["best_weights"]))]
    if start:
        candidates.append(Candidate(f"{key}'s start ({start.get('from')})",
                                    str(start["weights"]), bool(start.get("probe"))))
    return candidates


def fit_phase(config: Config, phase: Phase, out: Path, state: dict[str, Any], fit: PhaseFit,
              candidates: list[Candidate] | None = None) -> None:
    """PhaseFit one phase: freeze or unfreeze, compile, measure where it starts (the best of
    ``candidates``, see :func:`starting_point`), fit with early stopping, backups and (with
    ``config.tensorboard``) TensorBoard logs, then mark the phase done in the state."""
    model = fit.model
    if phase.name == "head":
        models.freeze_backbone(model)
    elif phase.name == "finetune" or (phase.name == "objects"
                                      and models.get_backbone(config.backbone).pretrainable):
        unfrozen = models.unfreeze_top(model, config.backbone, config.unfreeze_top_layers)
        say(f"train: {phase.key}: {unfrozen} backbone layers unfrozen (BatchNorm stays "
              "frozen)")
    if fit.good_index is None:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        accuracy: Any = "accuracy"
    else:
        loss = models.any_view_loss(fit.good_index, config.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(models.any_view_accuracy(fit.good_index),
                                                   name="accuracy")
    fit.trainer.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss=loss,
                        metrics=[accuracy])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    say(f"train: phase {phase.key}: up to {phase.epochs} epochs at learning rate "
          f"{phase.learning_rate:g}, {trainable:,} trainable parameters, "
          f"{len(fit.train_data)} batches/epoch")
    start = starting_point(phase, out, state, fit, candidates or [])
    callbacks: list[Any] = [PhaseProgress(out, state, phase, [fit.train_data],
                                          monitor_val=fit.val_data is not None,
                                          recalibration=(model, fit.recalibration_data),
                                          start=start, classifier=model)]
    if config.tensorboard:  # before the backup: an epoch backed up is an epoch logged
        callbacks.append(keras.callbacks.TensorBoard(  # epoch scalars: cheap
            log_dir=str(out / records.TENSORBOARD / phase.key), histogram_freq=0,
            write_graph=False, write_images=False, update_freq="epoch", profile_batch=0))
    callbacks.append(keras.callbacks.BackupAndRestore(
        backup_dir=str(out / "backup" / phase.key), double_checkpoint=True))
    fit.trainer.fit(fit.train_data, validation_data=fit.val_data, epochs=phase.epochs,
                    validation_freq=phase.validation_epochs(), class_weight=fit.class_weight,
                    callbacks=callbacks, verbose=0)
    shutil.rmtree(out / "backup" / phase.key, ignore_errors=True)
    record = state["phases"][phase.key]
    record["done"] = True
    records.write_state(out, state)
    best = ("its start (its lowest-loss epoch made more validation errors)"
            if record.get("kept_start")
            else f"epoch {record['best_epoch'] + 1}")
    say(f"train: phase {phase.key} done: {record['epochs_run']} epochs in "
          f"{record['seconds']:.0f} s, keeping {best} (val loss {record['best_val_loss']:.4f}, "
          f"val accuracy {record['best_val_accuracy']:.4f})")


def starting_point(phase: Phase, out: Path, state: dict[str, Any], fit: PhaseFit,
                   candidates: list[Candidate]) -> dict[str, Any] | None:
    """A phase that starts from trained weights (``finetune`` from the linear probe or the
    head, ``objects`` from the image phases) measures them on its validation data first and
    keeps them as a candidate: the last phase ends on them when its best epoch makes more
    validation errors (see :class:`~indvision.training.progress.PhaseProgress`).

    ``candidates`` are what the previous phase handed on (:func:`handed_on`): its best epoch,
    then the start it began from. The phase begins from the best epoch unless that makes more
    errors on this phase's validation than the start — so fine-tuned features reach the
    ``objects`` phase, and a fine-tuning that only hurt still leaves the linear probe to fall
    back on. None for a random start, without validation, or when the (resumed) phase has
    measured it already (its weights are then loaded again when no epoch has run)."""
    record = state["phases"].get(phase.key, {})
    if fit.val_data is None or (phase.name not in ("finetune", "objects") and not candidates):
        return None
    if record.get("start"):
        if not record.get("epochs_run"):
            fit.model.set_weights(records.load_arrays(out / record["start"]["weights"]))
        return record["start"]
    if record.get("epochs_run"):
        return None
    measured = []
    candidates = candidates or [Candidate("the weights it was given", "")]
    for candidate in candidates:
        if candidate.weights:
            fit.model.set_weights(records.load_arrays(out / candidate.weights))
        logs = _validate(fit)
        measured.append({"from": candidate.label, "probe": candidate.probe,
                         "val_loss": logs["loss"], "val_accuracy": logs["accuracy"]})
    chosen = preferred_start(measured)
    if chosen != len(measured) - 1:  # the loop left the last candidate's weights in
        fit.model.set_weights(records.load_arrays(out / candidates[chosen].weights))
    name = f"{phase.key}_start.npz"
    records.save_arrays(out / name, fit.model.get_weights())
    start = {**measured[chosen], "weights": name}
    if len(measured) > 1:
        start["candidates"] = measured
        for candidate in measured:
            say(f"train: {phase.key}: {candidate['from']} measures val loss "
                  f"{candidate['val_loss']:.4f}, val accuracy {candidate['val_accuracy']:.4f}")
    say(f"train: {phase.key} starts from {start['from']} at val loss "
          f"{start['val_loss']:.4f}, val accuracy {start['val_accuracy']:.4f}")
    return start


def preferred_start(measured: list[dict[str, Any]]) -> int:
    """The candidate a phase starts from, given each one's ``val_accuracy``, most trained
    first: a later (less trained) one only when it makes fewer validation errors — the rule
    the last phase applies to its own best epoch against its start."""
    chosen = 0
    for index, candidate in enumerate(measured[1:], start=1):
        if candidate["val_accuracy"] > measured[chosen]["val_accuracy"] + 1e-9:
            chosen = index
    return chosen


def _validate(fit: PhaseFit) -> dict[str, float]:
    """The model as it stands on the fit's validation data (BatchNorm recalibrated first for
    a from-scratch model, as each epoch's validation is)."""
    if fit.recalibration_data is not None:
        data = fit.recalibration_data
        models.recalibrate_batchnorm(fit.model, (data[i][0] for i in range(len(data))))
    fit.val_data.set_epoch(0)
    logs = fit.trainer.evaluate(fit.val_data, verbose=0, return_dict=True)
    return {"loss": float(logs["loss"]), "accuracy": float(logs["accuracy"])}
