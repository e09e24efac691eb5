"""indvision: from a folder of photos to a verified image classifier on an edge device.

Importing the package is cheap. TensorFlow and Keras are imported only inside the ``run`` of
the stages that need a model — train, evaluate, export and verify — (and albumentations inside
augment's and train's), never when a pipeline file is validated and never by
:mod:`indvision.edge`, which runs a bundle with numpy, OpenCV and onnxruntime alone.
"""

__version__ = "0.1.0"

import os

MAX_IMAGE_PIXELS = 100_000_000  # indvision.images.MAX_PIXELS; OpenCV's own wall, below
# OpenCV reads this once, when cv2 loads: every indvision entry point imports this package
# first, so a decoder that a header check misses still refuses an image over the limit.
if not os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip():  # empty: cv2 fails to load
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)
