"""Checkpoint -> ONNX -> CPU engines (ONNX Runtime, OpenVINO; FP32/INT8), the GPU engine, TensorRT-ready
artifacts, and the Triton model repository that serves them.

Engines are loaded and run through ``resnet_serve.engines``; this package builds them and checks them.
"""
