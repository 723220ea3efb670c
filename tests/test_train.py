import json

import pytest
import torch

from resnet_serve.resnets import train
from resnet_serve.resnets.checkpoint import load_checkpoint


def test_paper_schedule_divides_at_32k_and_48k():
    recipe = train.Recipe()
    assert recipe.total_epochs(50_000) == 164  # 64k iterations of batch 128
    lr = [train.learning_rate(recipe, i, 64_000, 0) for i in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert lr == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert train.learning_rate(recipe, 10, 64_000, 400) == 0.01  # ResNet-110 warm-up
    cosine = train.Recipe(schedule="cosine")
    assert train.learning_rate(cosine, 32_000, 64_000, 0) == pytest.approx(0.05)
    assert cosine.deviations() == ["schedule='cosine' (paper: 'step')"]


@pytest.mark.slow
def test_short_training_run_writes_checkpoint_log_and_card_and_resumes(tmp_path, cifar_jpg):
    out = tmp_path / "run"
    common = [
        "--arch",
        "resnet20",
        "--data-dir",
        str(cifar_jpg),
        "--out",
        str(out),
        "--limit-train",
        "1024",
        "--limit-test",
        "500",
        "--threads",
        "2",
    ]
    assert train.main(common + ["--epochs", "1"]) == 0
    assert train.main(common + ["--epochs", "1"]) == 0  # same recipe, already complete: no new epoch
    log_lines = (out / "log.jsonl").read_text().splitlines()
    assert len(log_lines) == 1
    first = json.loads(log_lines[0])
    assert first["epoch"] == 1 and first["train_loss"] > 0 and 0 <= first["test_top1"] <= 100
    # a different --epochs is another recipe: resuming must refuse rather than mix recipes
    assert train.main(common + ["--epochs", "2"]) == 2
    raw = torch.load(out / "resnet20.pt", weights_only=True)
    assert raw["meta"]["epochs"] == 1 and raw["meta"]["test"]["n"] == 500
    model, _ = load_checkpoint(out / "resnet20.pt", "resnet20")
    assert model.fc.out_features == 10
    card = (out / "resnet20.md").read_text()
    assert "test top-1" in card and "epochs=1 (paper: 64k iterations)" in card

    # --reschedule lengthens the same run: one more epoch, and the card says where the schedule changed
    assert train.main(common + ["--epochs", "2", "--reschedule"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    raw = torch.load(out / "resnet20.pt", weights_only=True)
    assert raw["meta"]["schedule_changes"] == [{"at_epoch": 1, "from_epochs": 1, "to_epochs": 2}]
    assert "rescheduled at epoch 1 from 1 to 2 epochs" in (out / "resnet20.md").read_text()
    # it cannot shorten a run below the epochs already trained, nor change anything but --epochs
    assert train.main(common + ["--epochs", "1", "--reschedule"]) == 2
    assert train.main(common + ["--epochs", "3", "--reschedule", "--lr", "0.05"]) == 2


@pytest.mark.slow
def test_resume_continues_from_last_epoch(tmp_path, cifar_jpg):
    out = tmp_path / "run"
    args = [
        "--arch",
        "resnet20",
        "--data-dir",
        str(cifar_jpg),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--limit-train",
        "512",
        "--limit-test",
        "200",
    ]
    real_evaluate = train.evaluate_model
    calls = []

    def interrupt_in_second_epoch(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the run were stopped during epoch 2
        return real_evaluate(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "evaluate_model", interrupt_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            train.main(args)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert (out / "last.pt").is_file() and not (out / "resnet20.pt").exists()
    assert train.main(args) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_bad_arguments_are_explained(tmp_path, caplog):
    assert train.main(["--arch", "resnet21", "--out", str(tmp_path)]) == 2
    assert "available: resnet20" in caplog.text
    assert train.main(["--arch", "resnet50", "--out", str(tmp_path)]) == 2
    assert "ImageNet architecture" in caplog.text
    assert train.main(["--arch", "resnet20", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "expected one of these CIFAR-10 layouts" in caplog.text
