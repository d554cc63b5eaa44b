"""LightningModules of the papers the library reproduces."""

from fedlightning.models.autoencoders import (
    ConvAutoencoder5,
    ConvAutoencoder7,
    FlatAutoencoder,
    ReconstructionAutoencoder,
)
from fedlightning.models.classifiers import CIFARClassifier, ConvClassifier, MNISTClassifier
from fedlightning.models.feature_classifier import (
    ClassifierFeatures,
    FeatureClassifier,
    fit_classifier,
)
from fedlightning.models.masked import (
    MaskedClassifier,
    MaskedResNet8,
    MaskedResNet18,
    MaskedVGG16,
)
from fedlightning.models.ocsvm import OneClassSVMDetector
from fedlightning.models.vae import ConvVAE, VAELoss, gaussian_kl, vae_loss

__all__ = [
    "ConvAutoencoder5",
    "ConvAutoencoder7",
    "FlatAutoencoder",
    "OneClassSVMDetector",
    "ReconstructionAutoencoder",
    "CIFARClassifier",
    "ClassifierFeatures",
    "ConvClassifier",
    "ConvVAE",
    "FeatureClassifier",
    "MaskedClassifier",
    "MaskedResNet8",
    "MaskedResNet18",
    "MaskedVGG16",
    "fit_classifier",
    "gaussian_kl",
    "MNISTClassifier",
    "vae_loss",
    "VAELoss",
]
