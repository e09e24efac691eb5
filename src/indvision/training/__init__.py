"""The train stage's machinery, one concern a module (:mod:`indvision.stages.train` drives it).

- :mod:`~indvision.training.config` — the stage's settings, ``Config`` (no Keras);
- :mod:`~indvision.training.prepare` — what every member trains on, rebuilt from the run folder
  (the stage and a Ray task build the same);
- :mod:`~indvision.training.plan` — which phases each ensemble member runs, its seed, class
  weights (no Keras: the stage's config and tests import it freely);
- :mod:`~indvision.training.probe` — the linear probe the head starts from: a logistic
  regression on frozen features, as head weights (scikit-learn; no Keras);
- :mod:`~indvision.training.records` — the files a training keeps as it goes: ``state.json``,
  best-weights arrays, ``history.csv``, ``curves.png`` (no Keras);
- :mod:`~indvision.training.batches` — data feeding: the image cache and the ``PyDataset``
  batches of images and of whole objects;
- :mod:`~indvision.training.phases` — fitting: one member's phases, the progress / early-stopping
  callback, TensorBoard logs, resuming;
- :mod:`~indvision.training.saving` — the saved model (ensemble and mirror averaging) and
  ``train_info.json``.

``batches``, ``phases`` and ``saving`` import Keras at their top, like :mod:`indvision.layers`;
the stage imports them inside ``run`` so validating a pipeline stays free of TensorFlow.
"""
