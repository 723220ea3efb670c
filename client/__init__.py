"""Python client for the served ResNets: ``Classifier`` (sync) and ``AsyncClassifier`` (asyncio).

Both are thin transports over ``client/core.py`` (model facts, request planning, retries, results).
Importing this package does not import torch.
"""

from resnet_serve.client.aio import AsyncClassifier
from resnet_serve.client.core import (
    ClassificationError,
    ClientError,
    ImageResult,
    ModelInfo,
    ModelNotFound,
    Prediction,
    ServerUnavailable,
)
from resnet_serve.client.sync import Classifier

__all__ = [
    "AsyncClassifier",
    "ClassificationError",
    "Classifier",
    "ClientError",
    "ImageResult",
    "ModelInfo",
    "ModelNotFound",
    "Prediction",
    "ServerUnavailable",
]
