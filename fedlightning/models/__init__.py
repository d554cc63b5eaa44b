"""LightningModules of the papers the library reproduces."""

from fedlightning.models.classifiers import CIFARClassifier, ConvClassifier, MNISTClassifier

__all__ = ["CIFARClassifier", "ConvClassifier", "MNISTClassifier"]
