"""resnet-serve: the ResNets of He et al. 2015, from training to a measured Triton deployment.

``resnets.build`` / ``resnets.available`` / ``resnets.arch_spec`` load the PyTorch model code on
first use, so light modules (``resnets.spec``, used inside the Triton server) never import torch.
"""

__version__ = "0.1.0"
__all__ = ["ResNet", "arch_spec", "available", "build"]


def __getattr__(name: str):
    if name in __all__:
        from resnet_serve.resnets import models

        return getattr(models, name)
    raise AttributeError(f"module 'resnets' has no attribute {name!r}")
