"""``train --backend`` and ``--device``: which backend, which device, and the refusal when a GPU is missing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from breakout_dqn.training.config import ConfigError, TrainConfig, resolve
from breakout_dqn.training.device import Device, DeviceError, chosen_backend, cpu_name, for_device, select_backend
from breakout_dqn.training.run_directory import RunDirectory
from tests.training.cli_helpers import one_error_line

ROOT = Path(__file__).resolve().parents[2]


def test_the_backend_flag_wins_over_keras_backend_which_wins_over_the_default(monkeypatch) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert chosen_backend(TrainConfig()) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert chosen_backend(TrainConfig()) == "jax"
    assert chosen_backend(TrainConfig(backend="tensorflow")) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(DeviceError, match="KERAS_BACKEND='torch' is not supported"):
        chosen_backend(TrainConfig())


def test_a_backend_other_than_the_one_keras_runs_is_refused_in_the_same_process(monkeypatch) -> None:
    import keras

    running = keras.backend.backend()
    other = "jax" if running == "tensorflow" else "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", running)
    select_backend(running)
    with pytest.raises(DeviceError, match=f"--backend {other}: Keras already runs the {running} backend"):
        select_backend(other)
    assert os.environ["KERAS_BACKEND"] == running


def test_device_flags_refuse_unknown_values() -> None:
    for name, value in (("backend", "torch"), ("device", "tpu")):
        with pytest.raises(ConfigError, match=f"--{name} must be one of"):
            resolve({name: value})


def test_on_a_gpu_auto_precision_is_float32_with_xla_and_explicit_settings_stay() -> None:
    gpu, cpu = Device("jax", "gpu", "NVIDIA H100 80GB HBM3"), Device("jax", "cpu", "AMD EPYC, 2 cores")
    config = TrainConfig()
    assert (for_device(config, gpu).precision, for_device(config, gpu).xla) == ("float32", True)
    assert for_device(config, cpu) == config
    asked = dataclasses.replace(config, precision="bfloat16", xla=False)
    assert (for_device(asked, gpu).precision, for_device(asked, gpu).xla) == ("bfloat16", False)
    assert gpu.describe() == "jax on gpu (NVIDIA H100 80GB HBM3)"
    assert Device("tensorflow", "gpu", "H100", 8).describe() == "tensorflow on gpu (H100, 8 visible)"


def test_the_cpu_is_named_by_its_model_and_core_count(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: avx2\n")
    assert cpu_name(cpuinfo) == f"AMD EPYC 9R14, {os.cpu_count()} cores"


def test_auto_resume_lets_a_piece_change_backend_and_device(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.config.write_text(json.dumps({**TrainConfig().to_json(), "backend": "jax", "device": "gpu"}))
    assert run.differences({**TrainConfig().to_json(), "backend": "tensorflow", "device": "cpu"}) == []


def no_gpu_train(out: Path, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "train", "--out", str(out), "--device", "gpu",
                           "--steps", "100", "--no-progress"], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.jax)])
def test_asking_for_a_gpu_where_the_backend_sees_none_exits_2_naming_it(backend: str, tmp_path: Path) -> None:
    if backend == "jax":
        pytest.importorskip("jax")
    out = tmp_path / "run"
    result = no_gpu_train(out, backend)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--device gpu: Keras' {backend} backend sees no GPU" in one_error_line(result.stderr)
    assert "device:" not in result.stdout  # refused before it announced a device, let alone trained
    assert not out.exists()  # and left nothing behind


def test_the_train_command_loads_no_keras_before_it_picks_the_backend() -> None:
    # Keras reads KERAS_BACKEND once, at its import: `--backend jax` works only if nothing on the way to
    # select_device imported it (a module-level `import keras` there made it load TensorFlow).
    code = ("import sys\nimport breakout_dqn.cli, breakout_dqn.training.cli, breakout_dqn.training.train\n"
            "import breakout_dqn.training.session, breakout_dqn.training.callbacks\n"
            "from breakout_dqn.training.config import resolve\n"
            "for settings in ({'replay_capacity': 1000}, {'preset': 'pqn'}):\n"
            "    breakout_dqn.training.train.preflight(resolve(settings))  # runs before the backend is chosen\n"
            "print(sorted(name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules))")
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
