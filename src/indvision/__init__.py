"""indvision: from a folder of photos to a verified image classifier on an edge device.

Importing the package is cheap. TensorFlow and Keras are imported only inside the ``run`` of
the stages that need a model — train, evaluate, export and verify — (and albumentations inside
augment's and train's), never when a pipeline file is validated and never by
:mod:`indvision.edge`, which runs a bundle with numpy, OpenCV and onnxruntime alone.
"""

__version__ = "0.1.0"
