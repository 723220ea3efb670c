"""The engine layer: backends load only when asked, a missing package is named with its install command,
and an import error from inside an installed package is not disguised as "not installed"."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from resnet_serve import resnets
from resnet_serve.engines import BACKENDS, EngineError, EngineUnavailable, backend, load_engine
from resnet_serve.engines.base import require
from resnet_serve.export.onnx_export import export_onnx, prepare_for_export


def test_a_missing_package_names_its_install_command():
    with pytest.raises(EngineUnavailable, match="no_such_engine_package is not installed: pip install it-please"):
        require("no_such_engine_package", "pip install it-please")


def test_an_import_error_inside_an_installed_package_propagates(tmp_path, monkeypatch):
    package = tmp_path / "half_installed"
    package.mkdir()
    (package / "__init__.py").write_text("import a_dependency_it_forgot  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_it_forgot"):
        require("half_installed", "pip install half_installed")


def test_unknown_engines_and_files_are_explained(tmp_path):
    with pytest.raises(
        EngineError, match="unknown engine 'tensorflow'; known engines: onnxruntime, openvino, pytorch, gpu"
    ):
        backend("tensorflow")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(EngineError, match="cannot tell the engine of .*model.tflite"):
        load_engine(tmp_path / "model.tflite")
    with pytest.raises(EngineError, match="not an exported engine directory"):
        load_engine(tmp_path)
    assert set(BACKENDS) == {"onnxruntime", "openvino", "pytorch", "gpu"}


def test_loading_one_backend_imports_no_other(tmp_path):
    path = export_onnx(prepare_for_export(resnets.build("resnet20")), tmp_path / "model.onnx", (3, 32, 32))
    code = (
        "import sys, numpy as np; from resnet_serve.engines import load_engine\n"
        f"engine = load_engine({str(path)!r}, threads=1)\n"
        "logits = engine.infer(np.zeros((2, 3, 32, 32), np.float32))\n"
        "print(engine.info()['engine'], logits.shape, sorted({'torch', 'openvino', 'triton'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["onnxruntime", "(2,", "10)", "[]"]


def test_a_signal_after_openvino_engines_were_freed_reaches_its_handler(tmp_path):
    """Engines freed first-in first-out used to leave the thread on a freed signal stack (one Core, and CPU
    plugin, per engine): Ctrl-C or SIGTERM then killed the process with SIGSEGV before any clean-up."""
    pytest.importorskip("openvino")
    path = export_onnx(prepare_for_export(resnets.build("resnet20")), tmp_path / "model.onnx", (3, 32, 32))
    code = (
        "import gc, os, signal\n"
        "from resnet_serve.engines.openvino import OpenVinoEngine\n"
        f"first, second = OpenVinoEngine({str(path)!r}, threads=1), OpenVinoEngine({str(path)!r}, threads=1)\n"
        "del first; gc.collect(); del second; gc.collect()\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('handled', flush=True))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('went on', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == ["handled", "went", "on"]


def test_infer_all_runs_any_number_of_images_in_chunks(tmp_path):
    path = export_onnx(prepare_for_export(resnets.build("resnet20")), tmp_path / "model.onnx", (3, 32, 32))
    engine = load_engine(path, threads=1)
    images = np.random.default_rng(0).standard_normal((37, 3, 32, 32), dtype=np.float32)
    assert np.allclose(engine.infer_all(images, batch_size=8), engine.infer(images), atol=1e-5)


def test_openvino_streams_cut_the_batch_and_give_the_same_logits(default_repository):
    """streams > 1: the batch is cut into parts run side by side (threads / streams each), with the logits
    of one wide stream, for a batch of one, fewer images than streams, and sizes that do not divide."""
    engine_dir = default_repository / "build" / "resnet20" / "openvino-int8"
    wide = load_engine(engine_dir, threads=2)
    split = load_engine(engine_dir, threads=2, streams=2)
    assert split.info()["details"]["streams"] == 2 and wide.info()["details"]["streams"] == 1
    assert split.compiled.get_property("NUM_STREAMS") == 2
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 16, 17):
        batch = rng.standard_normal((n, 3, 32, 32), dtype=np.float32)
        logits = split.infer(batch)
        assert logits.shape == (n, 10)
        assert np.allclose(logits, wide.infer(batch), atol=1e-4)
        batch[:] = 0  # the inputs are shared with OpenVINO during the call only: the logits are their own copy
        assert not np.allclose(logits, split.infer(batch))
    with pytest.raises(EngineError, match=r"streams must be between 1 and the threads \(2\), got 3"):
        load_engine(engine_dir, threads=2, streams=3)


def test_an_option_a_backend_does_not_have_is_refused_by_name(default_repository):
    with pytest.raises(EngineError, match="the onnxruntime engine has no option streams; remove it"):
        load_engine(default_repository / "build" / "resnet20" / "onnxruntime-int8", threads=2, streams=2)


@pytest.mark.parametrize("engine", ["onnxruntime-int8", "openvino-int8"])
def test_engine_threads_must_be_a_whole_number_of_at_least_1(default_repository, engine):
    # before: 0 quietly meant all cores, 1.5 was handed to the backend, -1 failed with a message about streams
    engine_dir = default_repository / "build" / "resnet20" / engine
    for bad in (0, -1, 1.5, True):
        with pytest.raises(EngineError, match=rf"threads must be a whole number of at least 1 .*, got {bad!r}$"):
            load_engine(engine_dir, threads=bad)
    assert load_engine(engine_dir, threads=1).info()["threads"] == 1


def test_openvino_threads_are_not_pinned_unless_asked(default_repository, tmp_path):
    """OpenVINO pins threads to the same first cores in every process, so model instances would share them:
    the engine turns pinning off unless asked, and the pinning benchmark runs both ways on real processes."""
    engine_dir = default_repository / "build" / "resnet20" / "openvino-int8"
    floating, pinned = load_engine(engine_dir, threads=1), load_engine(engine_dir, threads=1, pin_threads=True)
    assert floating.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert pinned.compiled.get_property("ENABLE_CPU_PINNING") is True
    assert (floating.info()["details"]["cpu_pinning"], pinned.info()["details"]["cpu_pinning"]) == (False, True)

    from resnet_serve.benchmarks import pinning

    args = ["--engine", str(engine_dir), "--processes", "2", "--threads", "1", "--seconds", "0.3", "--rounds", "1"]
    assert pinning.main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "pinning.json").read_text())
    assert [r["pinned"] for r in report["rounds"]] == [True, False]
    assert all(len(r["img_s"]) == 2 and min(r["img_s"]) > 0 for r in report["rounds"])
    assert report["unpinned_over_pinned"] > 0 and report["environment"]["cpu_model"]
    onnx_dir = default_repository / "build" / "resnet20" / "onnxruntime-int8"
    assert pinning.main(["--engine", str(onnx_dir), "--out", str(tmp_path)]) != 0  # not an OpenVINO engine


def test_idle_wait_measures_every_thread_layout_back_to_back_and_with_pauses(
    default_repository, tmp_path, capsys, caplog
):
    from resnet_serve.benchmarks import idle_wait
    from resnet_serve.resnets.env import available_cores

    build = default_repository / "build" / "resnet20"
    args = ["--engine", str(build / "openvino-int8"), "--engine", str(build / "onnxruntime-int8")]
    args += ["--batch", "4", "--pause-ms", "0,1", "--seconds", "0.2", "--rounds", "2", "--out", str(tmp_path)]
    assert idle_wait.main(args) == 0
    report = json.loads((tmp_path / "idle_wait.json").read_text())
    cores = available_cores()
    expected = ["openvino-int8 1 thread", "onnxruntime-int8 1 thread"]
    if cores > 1:
        expected += [f"openvino-int8 {cores} threads", f"openvino-int8 {cores} threads in {cores} streams"]
        expected += [f"onnxruntime-int8 {cores} threads"]
    assert sorted({r["layout"] for r in report["rows"]}) == sorted(expected)
    assert len(report["runs"]) == 2 * 2 * len(expected)  # rounds x pauses x layouts, batch 4 only
    for row in report["rows"]:
        assert row["img_s"] > 0 and row["cpu_us_per_image"] > 0
        # what a pause adds is measured against the same layout's back-to-back run; none for the run itself
        assert (row["cpu_us_added_per_call"] is None) == (row["pause_ms"] == 0)
    paused = [r for r in report["runs"] if r["pause_ms"] == 1]
    assert all(r["img_s"] < 4 / 0.001 for r in paused)  # at most one 4-image call per millisecond of pause
    assert "added CPU us/call" in capsys.readouterr().out
    assert report["environment"]["cpu_model"] and report["command"].startswith("python -m benchmarks.idle_wait")

    not_cpu = tmp_path / "not-an-engine"
    not_cpu.mkdir()
    (not_cpu / "engine.json").write_text(json.dumps({"engine": "tensorrt"}))
    assert idle_wait.main(["--engine", str(not_cpu), "--out", str(tmp_path)]) == 2
    assert "is a tensorrt engine; this measures CPU engines" in caplog.text
    assert idle_wait.main(["--engine", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing is not a folder; pass an exported engine directory" in caplog.text
