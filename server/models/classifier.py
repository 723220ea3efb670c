"""Triton Python-backend classifier: a batch of preprocessed images -> logits, through ``engines.load_engine``.

Reads everything from the model configuration: input/output names and dtypes, the parameters
``engine_dir`` (relative to the version directory), ``threads`` and ``streams`` (OpenVINO; with more than
one instance its threads are not pinned, see ``engines/openvino.py``), and the
model contract (mean/std for a uint8 input, normalised here). With dynamic batching Triton
hands ``execute`` several requests at once; they run as one engine call and are split back, one
response per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from resnet_serve.engines import load_engine
from resnet_serve.engines.base import read_manifest
from resnet_serve.resnets.spec import DatasetSpec, normalize
from resnet_serve.server.models import parameters
from resnet_serve.server.models.preprocess import invalid


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.input_dtype = pb_utils.triton_string_to_numpy(config["input"][0]["data_type"])
        # uint8 input: HWC pixels of the training crop, normalised here (a quarter of the bytes of float32)
        spec = DatasetSpec.from_parameters(parameters(config), args["model_name"])
        self.spec = spec if self.input_dtype == np.uint8 else None
        self.load_engine(args, config, f"input {self.input_name} {np.dtype(self.input_dtype).name}")

    def load_engine(self, args: dict, config: dict, describe_input: str) -> None:
        """The engine the parameters ``engine_dir``, ``threads`` and ``streams`` name; the output from the config."""
        params = parameters(config)
        threads, streams = params.get("threads"), params.get("streams")
        engine_dir = Path(args["model_repository"]) / args["model_version"] / params.get("engine_dir", "engine")
        options = {"streams": int(streams)} if streams else {}  # an engine without streams refuses the option
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        if instances > 1 and engine_dir.is_dir() and read_manifest(engine_dir).get("engine") == "openvino":
            options["pin_threads"] = False  # pinned, every instance (a process each) would take the same cores
        self.engine = load_engine(engine_dir, threads=int(threads) if threads else None, **options)
        self.output_name = config["output"][0]["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        info = self.engine.info()
        streams, pinned = info["details"].get("streams", 1), info["details"].get("cpu_pinning")
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {info['engine']} {info['precision']} ({info['threads']} threads"
            f"{f' in {streams} streams' if streams > 1 else ''}"
            f"{'' if pinned is None else ', pinned' if pinned else ', not pinned'}), {describe_input}"
        )

    def execute(self, requests):
        if hasattr(self.engine, "infer_torch"):  # the GPU engine: tensors stay on the device (DLPack)
            return self._execute_dlpack(requests)
        responses: list = [None] * len(requests)
        arrays: dict[int, np.ndarray] = {}
        for i, request in enumerate(requests):
            array = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if array.dtype.kind == "f" and not np.isfinite(array).all():  # NaN/Inf logits would be labelled as a class
                message = f"{self.input_name}: has NaN or infinite values; send finite, normalised pixels"
                responses[i] = invalid(message)
            else:
                arrays[i] = array
        return self.classify(arrays, responses)

    def classify(self, arrays: dict[int, np.ndarray], responses: list) -> list:
        """Run the requests' inputs (request index -> batch) as one engine call and fill in their responses;
        an engine failure fails every request of this call, with the reason."""
        if not arrays:
            return responses
        parts = list(arrays.values())
        batch = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.spec is not None:
            batch = normalize(batch, self.spec)
        try:
            logits = self.engine.infer(batch).astype(self.output_dtype, copy=False)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the reason
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            for i in arrays:
                responses[i] = pb_utils.InferenceResponse(error=error)
            return responses
        start = 0
        for i, array in arrays.items():
            tensor = pb_utils.Tensor(self.output_name, logits[start : start + len(array)])
            responses[i] = pb_utils.InferenceResponse(output_tensors=[tensor])
            start += len(array)
        return responses

    def _execute_dlpack(self, requests):
        import torch

        tensors = [
            torch.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name).to_dlpack()) for r in requests
        ]
        counts = [len(t) for t in tensors]
        try:
            logits = self.engine.infer_torch(torch.cat(tensors) if len(tensors) > 1 else tensors[0])
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the reason
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for part in torch.split(logits, counts):
            tensor = pb_utils.Tensor.from_dlpack(self.output_name, torch.utils.dlpack.to_dlpack(part.contiguous()))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
