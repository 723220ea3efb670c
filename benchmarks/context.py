"""What every runner reads, loaded once per run: the suite, the engine filters, the export summaries and
the repository index, and the test images. torch-free."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnet_serve.benchmarks.inputs import LabelledImages, cifar_test_split, sample_images
from resnet_serve.benchmarks.suites import Suite
from resnet_serve.export.summary import ExportSummary
from resnet_serve.resnets.spec import DATASETS, DatasetSpec
from resnet_serve.server.index import RepositoryIndex, ServedEngine

log = logging.getLogger(__name__)


@dataclass
class Context:
    suite: Suite
    engines: tuple[str, ...]
    precisions: tuple[str, ...]
    threads: int
    build_dir: Path
    repository: Path
    cifar_dir: Path
    imagenet_dir: Path
    exports: dict[str, ExportSummary] = field(default_factory=dict)  # per model, when the suite runs engines here
    batch_size_override: tuple[int, ...] | None = None
    _index: RepositoryIndex | None = None
    _images: dict[str, LabelledImages | None] = field(default_factory=dict)

    @property
    def index(self) -> RepositoryIndex:
        if self._index is None:
            self._index = RepositoryIndex.load(self.repository)
        return self._index

    def spec(self, model: str) -> DatasetSpec:
        if model in self.exports:
            return self.exports[model].model.spec
        return DATASETS[self.index.network(model).dataset]

    def batch_sizes(self, model: str) -> tuple[int, ...]:
        return self.batch_size_override or self.suite.batch_sizes.get(model, (1, 8))

    def wanted(self, engine: str, precision: str) -> bool:
        return engine in self.engines and precision in self.precisions

    def served_engines(self, model: str) -> list[ServedEngine]:
        network = self.index.network(model)
        if self.suite.served_engines == "default":
            return [network.default_engine]
        return [e for e in network.engines if self.wanted(e.engine, e.precision)]

    def images(self, model: str) -> LabelledImages | None:
        """The model's labelled test images (CIFAR-10) or sample images (ImageNet), or None if absent here."""
        if model not in self._images:
            spec = self.spec(model)
            if spec.name == "cifar10" and spec.num_classes == 10:
                self._images[model] = cifar_test_split(self.cifar_dir, spec)
            elif spec.name == "imagenet":
                self._images[model] = sample_images(self.imagenet_dir, spec)
            else:
                self._images[model] = None  # a user's model: no test images of its classes here
                if self._images[model] is None:
                    log.warning(
                        "no sample images in %s for %s: offline timing uses random pixels", self.imagenet_dir, model
                    )
        return self._images[model]

    def batch(self, model: str, batch_size: int) -> np.ndarray:
        """A normalized float32 batch of real images (random pixels where there are none), cycled to size."""
        spec = self.spec(model)
        images = self.images(model)
        if images is None:
            rng = np.random.default_rng(0)
            return rng.standard_normal((batch_size, *spec.input_shape), dtype=np.float32)
        return np.ascontiguousarray(images.normalized(spec)[np.arange(batch_size) % len(images.pixels)])
