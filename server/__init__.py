"""The embedded Triton Inference Server: ``python -m server`` or ``with server.running(repo) as s:``."""

from resnet_serve.server.triton import ServerConfig, ServerError, TritonServer, free_ports, running

__all__ = ["ServerConfig", "ServerError", "TritonServer", "free_ports", "running"]
