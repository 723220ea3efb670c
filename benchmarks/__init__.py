"""Benchmark suite: offline engines side by side, served load against Triton, accuracy and its CI gate.
Entry point: ``python benchmarks/run.py``."""
