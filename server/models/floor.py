"""Triton Python-backend serving floor: the one-step model's inputs and outputs, with no work between.

It takes what ``pipeline`` takes (BYTES [batch, 1] or one UINT8 [1, n_bytes] file per request), reads each
request's tensor, and answers zero logits of the configured shape: no decode, no preprocessing, no engine.
Served with the same client, protocol, batching and instances as a real model, its throughput is the
ceiling the serving machinery (client, tritonserver, the Python-backend hop) leaves on this host; the tune
step's head to head measures it beside the winner (``benchmarks/tune.py``). Not a classifier.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.raw_bytes = pb_utils.triton_string_to_numpy(config["input"][0]["data_type"]) == np.uint8
        self.output_name = config["output"][0]["name"]
        self.zeros = np.zeros((1, *(int(d) for d in config["output"][0]["dims"])), np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            rows = 1 if self.raw_bytes else len(tensor)
            logits = self.zeros if rows == 1 else np.repeat(self.zeros, rows, axis=0)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, logits)]))
        return responses
