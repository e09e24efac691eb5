"""The train stage's machinery, one concern a module (:mod:`indvision.stages.train` drives it).

``config`` (the settings), ``prepare`` (what every member trains on, rebuilt from the run
folder), ``plan`` (phases, seeds, class weights), ``probe`` (the linear probe), ``records``
(state, history, curves) — no Keras; ``batches`` (the image cache and batches), ``phases``
(fitting, early stopping, resuming), ``progress`` (the per-epoch callback), ``warmstart`` (a
child from its parent), ``saving`` (the saved model, ``train_info.json``), ``devices``
(data-parallel on one node), ``ray_members`` (members as Ray tasks).

The Keras modules import Keras at their top; the stage imports them inside ``run``, so
validating a pipeline stays free of TensorFlow.
"""
