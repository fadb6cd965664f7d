"""The update's compute path (arithmetic, kernels) that runs fastest on this CPU: ``--precision auto``
and an unset ``--xla``, the defaults.

On CPUs with bfloat16 instructions (AMX-BF16, AVX512_BF16) oneDNN's kernels beat XLA and bfloat16
beats float32; elsewhere float32 + XLA is fastest (per CPU: docs/benchmarks.md, "The update").
bfloat16 is chosen for DQN on Keras' TensorFlow backend only, where its learning curve was measured
against float32 (docs/experiments.md); PQN and the JAX backend keep float32. Each piece of a run
resolves the settings on the machine it runs on (the run's config.json keeps ``auto``); weights,
optimizer state and the saved model are float32 on every path. The path taken is printed at start
and logged in each ``train`` record (``compute``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from breakout_dqn.training.config import TrainConfig

BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
Config = TypeVar("Config", bound="TrainConfig")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo``; empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fastest_path(algorithm: str, flags: Iterable[str], precision: str = "auto", xla: bool | None = None,
                 backend: str | None = None) -> tuple[str, bool]:
    """``(precision, xla)``: the given settings, with ``auto`` / ``None`` filled in for this CPU."""
    backend = backend if backend is not None else os.environ.get("KERAS_BACKEND", "tensorflow")
    bf16_cpu = bool(BF16_FLAGS & set(flags)) and backend == "tensorflow" and algorithm == "dqn"
    if precision == "auto":
        precision = "bfloat16" if bf16_cpu else "float32"
    if xla is None:
        xla = not bf16_cpu
    return precision, xla


def resolved(config: Config, flags: Iterable[str] | None = None) -> Config:
    """``config`` with ``precision="auto"`` and ``xla=None`` filled in for this CPU (``flags``: /proc/cpuinfo's)."""
    if config.precision != "auto" and config.xla is not None:
        return config
    precision, xla = fastest_path(config.algorithm, cpu_flags() if flags is None else flags,
                                  config.precision, config.xla)
    return dataclasses.replace(config, precision=precision, xla=xla)


def path_name(precision: str, xla: bool | None) -> str:
    """A path as logged: ``bfloat16/oneDNN``, ``float32/XLA``."""
    return f"{precision}/{'XLA' if xla else 'oneDNN'}"


def parse_path_name(name: str) -> tuple[str, bool]:
    """``path_name``'s inverse: ``bfloat16/oneDNN`` -> ``("bfloat16", False)``; ValueError otherwise."""
    precision, _, kernels = name.partition("/")
    if precision not in ("float32", "bfloat16") or kernels not in ("XLA", "oneDNN"):
        raise ValueError(f"not a compute path: {name!r}")
    return precision, kernels == "XLA"


def describe(config: TrainConfig) -> str:
    """The path a resolved config takes (``path_name``)."""
    return path_name(config.precision, config.xla)


def slower_path_note(config: TrainConfig, flags: Iterable[str] | None = None) -> str:
    """What the start-up line adds when the settings given are not this CPU's fastest measured path
    (``""`` when they are): that bfloat16 is emulated here, if it is, and the path ``auto`` takes."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    asked = resolved(config, flags)
    fastest = resolved(dataclasses.replace(config, precision="auto", xla=None), flags)
    if (asked.precision, asked.xla) == (fastest.precision, fastest.xla):
        return ""
    emulated = asked.precision == "bfloat16" and not BF16_FLAGS & flags
    return ("; bfloat16 is emulated on this CPU (no AMX-BF16 or AVX512_BF16)" if emulated else "") + \
        f"; this CPU's fastest measured path is {describe(fastest)} (--precision auto)"
