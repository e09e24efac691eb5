"""indvision: from a folder of photos to a verified image classifier on an edge device.

Importing the package is cheap: TensorFlow is only imported by the stages that train or
export, never by :mod:`indvision.edge`.
"""

__version__ = "0.1.0"
