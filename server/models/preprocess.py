"""Triton Python-backend preprocessing: encoded image bytes -> the model input, as in training.

Input: BYTES ``image`` [batch, 1] holding encoded files (JPEG, PNG, WebP, BMP, TIFF; any mode).
Output: the training preprocessing from ``resnets.spec`` (resize shorter side, center crop,
normalise) as float32 CHW, or uint8 HWC pixels when the output is configured as UINT8; sizes and
mean/std come from the model contract in the configuration's parameters. A request
whose image cannot be used fails alone, with the reason; the other requests of the batch succeed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import triton_python_backend_utils as pb_utils

from resnet_serve.resnets.spec import DatasetSpec, ImageError, normalize, preprocess_pixels
from resnet_serve.server.models import parameters

MEMORY_MESSAGE = "image: decoding it needs more memory than this server has free; send a smaller image"


def request_pixels(images: Sequence[bytes], spec: DatasetSpec) -> np.ndarray | str:
    """One request's encoded images -> uint8 NHWC crops, or the message that fails this request alone
    (an unusable image, or one within the size limits that still does not fit in memory)."""
    try:
        return np.stack(
            [
                preprocess_pixels(bytes(data), spec, source=f"image {i}" if len(images) > 1 else "image")
                for i, data in enumerate(images)
            ]
        )
    except ImageError as exc:
        return str(exc)
    except MemoryError:
        return MEMORY_MESSAGE


def invalid(message: str):
    """A response that fails its request alone with INVALID_ARG and ``message``."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.spec = DatasetSpec.from_parameters(parameters(config), args["model_name"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.uint8 = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"]) == np.uint8

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
            pixels = request_pixels(images, self.spec)
            if isinstance(pixels, str):  # this request's image is unusable: say why, keep serving the others
                responses.append(invalid(pixels))
                continue
            batch = pixels if self.uint8 else normalize(pixels, self.spec)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, batch)]))
        return responses
