"""resnet-serve: the ResNets of He et al. 2015, from a PyTorch checkpoint to a measured Triton deployment.

The installed import root. The code lives in the checkout's top-level folders, each installed as a
subpackage of this one (see ``[tool.setuptools.package-dir]`` in pyproject.toml)::

    resnet_serve.resnets     models, checkpoints, data, the model contract (resnets/)
    resnet_serve.engines     the Engine interface and one module per backend (engines/)
    resnet_serve.export      checkpoint -> ONNX -> engines -> Triton model repository (export/)
    resnet_serve.server      the Triton Inference Server launcher and its Python-backend models (server/)
    resnet_serve.client      Classifier / AsyncClassifier and the client CLI (client/)
    resnet_serve.benchmarks  offline, served, accuracy and transport runners (benchmarks/)

Dependencies point one way: resnets <- engines <- export / server / client / benchmarks (tests/test_layers.py).
This module stays light: importing any subpackage imports it first.
"""

__version__ = "0.1.0"
