"""Which Keras backend and which device a run computes on: ``--backend`` and ``--device``.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, so ``select_device`` sets it (and
restricts the backend to the CPU for ``--device cpu``) before anything imports Keras. A run that
asks for a GPU and finds none visible to its backend stops with a ``DeviceError`` (exit 2) naming
the backend and what it saw, instead of training on the CPU without a word (docs/guides/gpu.md).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from breakout_dqn.training.config import ConfigError

if TYPE_CHECKING:
    from breakout_dqn.training.config import TrainConfig

BACKENDS = ("tensorflow", "jax")
DEFAULT_BACKEND = "tensorflow"  # Keras' own default when KERAS_BACKEND is unset


class DeviceError(ConfigError):
    """The backend or device asked for is not available in this process (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Device:
    """Where the learner computes: Keras backend, platform (``cpu`` | ``gpu``), device name, count."""

    backend: str
    platform: str
    name: str
    count: int = 1

    def describe(self) -> str:
        """The one line printed at start and logged as ``device`` in each ``train`` record."""
        several = f", {self.count} visible" if self.count > 1 else ""
        return f"{self.backend} on {self.platform} ({self.name}{several})"


def chosen_backend(config: TrainConfig) -> str:
    """``--backend`` if given, else ``$KERAS_BACKEND``, else TensorFlow; DeviceError for another name."""
    if config.backend != "auto":
        return config.backend
    backend = os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise DeviceError(f"KERAS_BACKEND={backend!r} is not supported; use one of {list(BACKENDS)}")
    return backend


def select_backend(backend: str) -> None:
    """Make ``backend`` Keras' backend: set ``KERAS_BACKEND`` before Keras' import; a DeviceError if
    Keras already runs another one in this process."""
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        raise DeviceError(f"--backend {backend}: Keras already runs the {keras.backend.backend()} backend in "
                          f"this process; set KERAS_BACKEND={backend} before it starts")
    os.environ["KERAS_BACKEND"] = backend


def select_device(config: TrainConfig) -> Device:
    """Set the backend and restrict it to the device asked for; return where it computes.

    Call before Keras is imported. ``--device gpu`` with no GPU visible raises DeviceError."""
    backend = chosen_backend(config)
    select_backend(backend)
    if backend == "jax":
        return _jax_device(config.device)
    return _tensorflow_device(config.device)


def for_device(config: TrainConfig, device: Device) -> TrainConfig:
    """``config`` with ``--precision auto`` / unset ``--xla`` taken as float32 + XLA on a GPU.

    ``compute_path`` picks between CPU kernels; on a GPU the update is float32 compiled by XLA, the
    arithmetic of every measured learning curve."""
    if device.platform != "gpu":
        return config
    precision = "float32" if config.precision == "auto" else config.precision
    return dataclasses.replace(config, precision=precision, xla=True if config.xla is None else config.xla)


def _no_gpu(backend: str, seen: str, hint: str) -> DeviceError:
    return DeviceError(f"--device gpu: Keras' {backend} backend sees no GPU ({seen}); {hint}")


def _jax_device(asked: str) -> Device:
    if asked == "cpu" and "jax" not in sys.modules:
        os.environ["JAX_PLATFORMS"] = "cpu"  # read at jax's import: no CUDA initialised at all
    try:
        import jax
    except ImportError:
        raise DeviceError("--backend jax: jax is not installed; pip install 'breakout-dqn[jax]' (CPU) or "
                          "'breakout-dqn[gpu]'") from None

    if asked == "cpu":
        jax.config.update("jax_platforms", "cpu")  # jax imported earlier: works until its first computation
    platform_name = jax.default_backend()
    devices = jax.devices()
    if asked == "gpu" and platform_name != "gpu":
        seen = f"jax {jax.__version__} devices: {', '.join(str(d) for d in devices)}"
        raise _no_gpu("jax", seen, "install jax with CUDA (pip install 'breakout-dqn[gpu]') and check "
                                   "JAX_PLATFORMS and CUDA_VISIBLE_DEVICES")
    if asked == "cpu" and platform_name != "cpu":
        raise DeviceError(f"--device cpu: jax already computes on {platform_name} in this process")
    name = devices[0].device_kind if platform_name == "gpu" else cpu_name()
    return Device("jax", "gpu" if platform_name == "gpu" else "cpu", name, len(devices))


def _tensorflow_device(asked: str) -> Device:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        if asked == "cpu":
            tf.config.set_visible_devices([], "GPU")
        else:
            for gpu in gpus:  # take GPU memory as the run needs it, not all of it at the first op
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as error:  # TensorFlow's devices were initialised before this call
        raise DeviceError(f"--device {asked}: TensorFlow's devices are already set up in this process "
                          f"({error})") from None
    if asked == "gpu" and not gpus:
        built = "built with CUDA" if tf.test.is_built_with_cuda() else "built without CUDA (tensorflow-cpu?)"
        raise _no_gpu("tensorflow", f"tensorflow {tf.__version__}, {built}, physical devices: "
                                    f"{[d.name for d in tf.config.list_physical_devices()]}",
                      "install TensorFlow with CUDA (pip install 'breakout-dqn[gpu]') and check CUDA_VISIBLE_DEVICES")
    if asked == "cpu" or not gpus:
        return Device("tensorflow", "cpu", cpu_name())
    details = tf.config.experimental.get_device_details(gpus[0])
    return Device("tensorflow", "gpu", str(details.get("device_name", gpus[0].name)), len(gpus))


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and its logical core count, e.g. ``AMD EPYC 9R14, 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"
