"""The linear probe: a logistic regression on frozen backbone features, and the head it becomes.

Fine-tuning starts where the frozen-feature baseline ends (linear probe, then fine-tune: Kumar
et al. 2022, "Fine-Tuning can Distort Pretrained Features"). The features are the pooled
backbone outputs of the unaugmented training images — the input of the classifier's head — so
the fitted regression is exactly a dense softmax layer: its weights are written into the head,
and the classifier then predicts what the regression predicts.

The regression is scikit-learn's (lbfgs, multinomial, L2), on standardised features with the
run's class weights; its strength ``C`` is chosen by grouped, stratified cross-validation on the
training split (log loss), so it scales with the data rather than being tuned to one set. The
standardisation is folded into the weights: ``(x - mean) / std @ W + b`` =
``x @ (W / std) + (b - (mean / std) @ W)``.

No Keras here: :func:`fit_probe` takes a feature matrix, the caller extracts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indvision.errors import IndvisionError

C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))  # 0.001 … 10, ×√10 apart
MAX_FOLDS = 5


@dataclass(frozen=True)
class Probe:
    """A fitted probe as a dense softmax layer: ``softmax(features @ kernel + bias)``."""

    kernel: np.ndarray  # (n_features, n_classes)
    bias: np.ndarray  # (n_classes,)
    info: dict[str, Any] = field(default_factory=dict)  # C, folds, train accuracy, seconds

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for feature rows (what the head computes)."""
        logits = features.astype(np.float64) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def folds_for(labels: np.ndarray, groups: np.ndarray) -> int:
    """Cross-validation folds the training split allows: up to :data:`MAX_FOLDS`, no more than
    the objects of its smallest class (0: too few to cross-validate)."""
    per_class = [len(set(groups[labels == c])) for c in np.unique(labels)]
    folds = min(MAX_FOLDS, min(per_class))
    return folds if folds >= 2 else 0


def fit_probe(features: np.ndarray, labels: np.ndarray, n_classes: int,
              groups: np.ndarray | None = None, class_weight: dict[int, float] | None = None,
              seed: int = 0) -> Probe:
    """Fit the logistic regression on ``features`` (N × D) and return it as head weights.

    ``groups``: the object of each row (views of one object stay in one fold). Every class of
    ``n_classes`` must appear in ``labels``.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold

    started = time.perf_counter()
    labels = np.asarray(labels, dtype=int)
    present = np.unique(labels)
    if len(present) != n_classes:
        missing = sorted(set(range(n_classes)) - set(present.tolist()))
        raise IndvisionError(f"train: the linear probe needs training images of every class; "
                             f"class index(es) {missing} have none")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std[std < 1e-6] = 1.0  # constant features (dead units) keep weight 0 after scaling
    scaled = (features - mean) / std
    folds = folds_for(labels, groups)
    if folds:
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
                      .split(scaled, labels, groups))
        model = LogisticRegressionCV(Cs=list(C_GRID), cv=splits, scoring="neg_log_loss",
                                     l1_ratios=(0.0,), use_legacy_attributes=False,
                                     class_weight=class_weight, max_iter=3000,
                                     random_state=seed)
        model.fit(scaled, labels)
        c = float(np.atleast_1d(model.C_)[0])
    else:  # too few objects per class to cross-validate: the grid's middle
        c = C_GRID[len(C_GRID) // 2]
        model = LogisticRegression(C=c, class_weight=class_weight, max_iter=3000)
        model.fit(scaled, labels)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if n_classes == 2:  # one logit w for class 1: softmax([-w/2, w/2]) is sigmoid(w)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    kernel = (coef / std).T
    bias = intercept - (mean / std) @ coef.T
    probe = Probe(kernel, bias)
    accuracy = float((probe.scores(features).argmax(axis=1) == labels).mean())
    info = {"C": c, "C_chosen_by": f"{folds}-fold grouped cross-validation (log loss)"
            if folds else "too few objects per class to cross-validate: the grid's middle",
            "n_train": len(labels), "n_features": int(features.shape[1]),
            "train_accuracy": round(accuracy, 6),
            "seconds": round(time.perf_counter() - started, 2)}
    return Probe(kernel.astype(np.float32), bias.astype(np.float32), info)
