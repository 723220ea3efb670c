"""Triton Python-backend one-step model: encoded images -> logits in one model (decode, preprocess and
the engine), without the ensemble's second Python-backend hop.

The input ``image`` is either BYTES [batch, 1] (encoded files, any number per request, as the ensemble
takes them) or UINT8 [1, n_bytes] with ragged batching: one encoded file per request as raw bytes,
which skips Triton's per-element BYTES deserialisation. Which one is in the config; the client reads it.
Every image failure fails its own request only; the good requests of the same batch run as one engine
call (``classifier.TritonPythonModel.classify``).
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from resnet_serve.resnets.spec import DatasetSpec
from resnet_serve.server.models import classifier, parameters
from resnet_serve.server.models.preprocess import invalid, request_pixels


class TritonPythonModel(classifier.TritonPythonModel):
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.raw_bytes = pb_utils.triton_string_to_numpy(config["input"][0]["data_type"]) == np.uint8
        self.spec = DatasetSpec.from_parameters(parameters(config), args["model_name"])  # pixels normalised here
        form = "one encoded image per request as UINT8 bytes" if self.raw_bytes else "encoded images as BYTES"
        self.load_engine(args, config, f"input {self.input_name}: {form}")

    def execute(self, requests):
        responses: list = [None] * len(requests)
        arrays: dict[int, np.ndarray] = {}
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if self.raw_bytes and tensor.shape[0] != 1:
                responses[i] = invalid(
                    f"{self.input_name}: UINT8 input carries one encoded image per request (shape [1, n_bytes]), "
                    f"got shape {list(tensor.shape)}; send one request per image"
                )
                continue
            images = [tensor.tobytes()] if self.raw_bytes else tensor.reshape(-1)
            pixels = request_pixels(images, self.spec)
            if isinstance(pixels, str):
                responses[i] = invalid(pixels)
            else:
                arrays[i] = pixels
        return self.classify(arrays, responses)
