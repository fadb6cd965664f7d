"""Helpers shared by the export tests: run-directory constants and ONNX file edits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_STEPS = 1234
EVAL_MEAN = 7.5


def perturb_onnx(src: Path, dst: Path, relative: float = 1e-3, seed: int = 0) -> str:
    """Copy ``src`` to ``dst`` adding noise of ``relative`` x std to the largest weight tensor (metadata kept)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    target = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(target).copy()
    rng = np.random.default_rng(seed)
    weights += (rng.normal(0.0, relative * weights.std(), weights.shape)).astype(weights.dtype)
    target.CopyFrom(numpy_helper.from_array(weights, target.name))
    onnx.save(model, str(dst))
    return target.name


def edit_onnx(src: Path, dst: Path, edit: Callable[[Any], None]) -> Path:
    """Copy ``src`` to ``dst`` after ``edit(model_proto)``."""
    import onnx

    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst
