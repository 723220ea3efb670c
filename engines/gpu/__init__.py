"""The GPU engine's runtime: a ResNet planned as fused Triton-lang convolutions, replayed from a CUDA graph.

``plan.py`` (the typed plan), ``kernels.py`` (implicit-GEMM convolution with a fused epilogue: bias,
residual add, ReLU, INT8 requantization) and ``engine.py`` (``GpuEngine``). Plans are built by
``resnet_serve.export.gpu_build``.
"""
