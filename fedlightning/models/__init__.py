"""LightningModules of the papers the library reproduces."""

from fedlightning.models.classifiers import CIFARClassifier, ConvClassifier, MNISTClassifier
from fedlightning.models.feature_classifier import (
    ClassifierFeatures,
    FeatureClassifier,
    fit_classifier,
)
from fedlightning.models.vae import ConvVAE, VAELoss, gaussian_kl, vae_loss

__all__ = [
    "CIFARClassifier",
    "ClassifierFeatures",
    "ConvClassifier",
    "ConvVAE",
    "FeatureClassifier",
    "fit_classifier",
    "gaussian_kl",
    "MNISTClassifier",
    "vae_loss",
    "VAELoss",
]
