import collections
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import committed_checkpoint

from resnet_serve import resnets
from resnet_serve.resnets.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def test_round_trip_is_weights_only(tmp_path):
    model = resnets.build("resnet20")
    path = save_checkpoint(tmp_path / "m.pt", model, "resnet20", shortcut="A", meta={"note": "x"})
    raw = torch.load(path, weights_only=True)  # no pickled code needed
    assert raw["arch"] == "resnet20" and raw["meta"] == {"note": "x"}
    loaded, ckpt = load_checkpoint(path, "resnet20")
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_checkpoint_of_another_arch_says_so(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", resnets.build("resnet32"), "resnet32", shortcut="A", meta={})
    with pytest.raises(CheckpointError, match="is a checkpoint of resnet32, not resnet20"):
        load_checkpoint(path, "resnet20")


def test_state_dict_of_another_arch_is_named(tmp_path):
    torch.save(resnets.build("resnet18").state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="does not fit resnet34.*another architecture"):
        load_checkpoint(tmp_path / "r18.pt", "resnet34")


def test_bare_torchvision_state_dict_loads(tmp_path):
    reference = resnets.build("resnet18")
    torch.save(collections.OrderedDict(reference.state_dict()), tmp_path / "resnet18-f37072fd.pth")
    model, ckpt = load_checkpoint(tmp_path / "resnet18-f37072fd.pth", "resnet18")
    assert ckpt["num_classes"] == 1000
    assert torch.equal(model.fc.weight, reference.fc.weight)
    with pytest.raises(CheckpointError, match=r"\(bare state_dict\); name its architecture with --arch: .* resnet18"):
        load_checkpoint(tmp_path / "resnet18-f37072fd.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"arch": "resnet20", "state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .* pickled code"):
        load_checkpoint(path, "resnet20")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found; train one"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "empty.pt").write_bytes(b"")  # before: "... checkpoint: " and no reason
    with pytest.raises(CheckpointError, match=r"empty.pt is not a readable PyTorch checkpoint \(the file is empty\)"):
        read_checkpoint(tmp_path / "empty.pt")
    good = committed_checkpoint("resnet20").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])  # a copy stopped midway
    with pytest.raises(CheckpointError, match=r"cut.pt is not a readable PyTorch checkpoint \(.+\)"):
        read_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"holds no weights that can be found: it has weights \(list of 3\)"):
        load_checkpoint(tmp_path / "other.pt", "resnet20")


@pytest.mark.parametrize(("arch", "target"), [("resnet20", 88.0), ("resnet56", 90.0)])
@pytest.mark.slow
def test_evaluate_cli_reproduces_the_committed_model_card(arch, target, cifar_jpg):
    """Each committed checkpoint's card states its test top-1; the evaluate CLI must measure the same."""
    checkpoint = committed_checkpoint(arch)
    card = checkpoint.with_suffix(".md").read_text()
    stated = re.search(r"\| test top-1 \| \*\*([0-9.]+)%\*\* \|", card)
    assert stated, "the model card has no test top-1 row"
    run = subprocess.run(
        [sys.executable, "-m", "resnets.evaluate", "--checkpoint", str(checkpoint)]
        + ["--data-dir", str(cifar_jpg), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=checkpoint.parent.parent,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["n"] == 10000 and measured["split"] == "test"
    assert measured["top1"] == float(stated.group(1))
    assert measured["top1"] >= target  # the target for this depth
