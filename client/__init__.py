"""Python client for the served ResNets: ``Classifier`` (sync) and ``AsyncClassifier`` (asyncio)."""

from resnet_serve.client.aio import AsyncClassifier
from resnet_serve.client.classifier import (
    ClassificationError,
    Classifier,
    ClientError,
    ImageResult,
    ModelNotFound,
    Prediction,
    ServerUnavailable,
)

__all__ = [
    "AsyncClassifier",
    "ClassificationError",
    "Classifier",
    "ClientError",
    "ImageResult",
    "ModelNotFound",
    "Prediction",
    "ServerUnavailable",
]
