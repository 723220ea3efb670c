"""resnet-serve: the ResNets of He et al. 2015, from training to a measured Triton deployment."""

from resnets.models import ResNet, arch_spec, available, build

__all__ = ["ResNet", "arch_spec", "available", "build"]
__version__ = "0.1.0"
