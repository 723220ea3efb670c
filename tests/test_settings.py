"""One settings source: flag > environment variable > a default under the working directory, and the
model contract's round trip through Triton config parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_serve import settings
from resnet_serve.client.core import ModelInfo, prepare_all
from resnet_serve.resnets.spec import CIFAR10, IMAGENET, ContractError, DatasetSpec


def test_flag_then_environment_then_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for env in (settings.DATA_ENV, settings.BUILD_ENV, settings.REPOSITORY_ENV):
        monkeypatch.delenv(env, raising=False)
    assert settings.build_dir() == Path("build") and settings.repository_dir() == Path("model_repository")
    assert settings.data_root() == Path("data") and settings.cifar_dir() == Path("data") / "cifar-10"
    (tmp_path.parent / "shared" / "data" / "cifar-10-jpg").mkdir(parents=True, exist_ok=True)
    assert settings.data_root() == Path("..") / "shared" / "data"
    assert settings.cifar_dir() == Path("..") / "shared" / "data" / "cifar-10-jpg"
    monkeypatch.setenv(settings.DATA_ENV, "/elsewhere/data")
    monkeypatch.setenv(settings.BUILD_ENV, "/elsewhere/build")
    assert settings.data_root() == Path("/elsewhere/data") and settings.build_dir() == Path("/elsewhere/build")
    assert settings.imagenet_sample_dir() == Path("/elsewhere/data/imagenet-sample")
    assert settings.build_dir("mine") == Path("mine") and settings.cifar_dir("my-cifar") == Path("my-cifar")


@pytest.mark.parametrize(
    "spec", [CIFAR10, IMAGENET, DatasetSpec("mine", 37, (0.5, 0.25, 0.125), (0.1, 0.2, 0.3), 64, 72)]
)
def test_the_contract_survives_config_parameters(spec):
    assert DatasetSpec.from_parameters(spec.as_parameters()) == spec


def test_a_missing_or_malformed_contract_is_named():
    params = CIFAR10.as_parameters()
    with pytest.raises(ContractError, match="model 'x' does not state mean, std"):
        DatasetSpec.from_parameters({k: v for k, v in params.items() if k not in ("mean", "std")}, "model 'x'")
    with pytest.raises(ContractError, match="malformed preprocessing parameter"):
        DatasetSpec.from_parameters({**params, "image_size": "thirty-two"})
    with pytest.raises(ContractError, match=r"std \(0.2, 0.2\) \(need 3 finite values each, std above 0\)"):
        DatasetSpec.from_parameters({**params, "std": "0.2,0.2"})
    # float() reads "nan" and "inf": a contract with them would turn every input into NaN or zeros
    for key, value in (("mean", "nan,0.5,0.5"), ("std", "inf,0.2,0.2"), ("std", "0.2,-inf,0.2")):
        with pytest.raises(ContractError, match="need 3 finite values each"):
            DatasetSpec.from_parameters({**params, key: value})


def test_the_client_reads_the_contract_from_the_model_config():
    metadata = {
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 37]}],
    }
    spec = DatasetSpec("mine", 37, (0.5, 0.25, 0.125), (0.1, 0.2, 0.3), 64, 72)
    config = {"max_batch_size": 8, "parameters": {k: {"string_value": v} for k, v in spec.as_parameters().items()}}
    info = ModelInfo.from_server("mine_classifier", metadata, config)
    assert info.spec == spec and info.kind == "classifier" and info.input_shape == (64, 64, 3)
    import numpy as np

    assert prepare_all(info, [np.zeros((100, 80, 3), np.uint8)]).shape == (1, 64, 64, 3)  # resized to 72, cropped to 64
    bare = ModelInfo.from_server("foreign", metadata, {"max_batch_size": 8})
    with pytest.raises(ContractError, match="model 'foreign' takes tensors but states no preprocessing"):
        prepare_all(bare, [np.zeros((64, 64, 3), np.uint8)])
