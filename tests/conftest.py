"""Shared fixtures: a seeded Q-network saved as .keras, and its ONNX export."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.xdist_once import built_once

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What a slow (training, many games) or smoke test weighs against a unit test when ordering files.
HEAVY_TEST_WEIGHT = 30


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest test files first (a slow or smoke test weighs ``HEAVY_TEST_WEIGHT`` unit tests).

    The two xdist workers take whole files in this order (``--dist loadfile --no-loadscope-reorder``);
    xdist's own order, most tests first, left the few-but-long training files to the end, where one
    worker ran them alone. The sort is stable: a file's tests keep their order.
    """
    weight: Counter[Path] = Counter()
    for item in items:
        heavy = item.get_closest_marker("slow") or item.get_closest_marker("smoke")
        weight[item.path] += HEAVY_TEST_WEIGHT if heavy else 1
    items.sort(key=lambda item: -weight[item.path])


@pytest.fixture(scope="session")
def keras_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained dueling Q-network (seed 0) saved as ``model.keras``, one for all workers."""

    def build() -> str:
        import keras

        from breakout_dqn.training.model import build_q_network

        keras.utils.set_random_seed(0)
        path = tmp_path_factory.mktemp("keras") / "model.keras"
        build_q_network(dueling=True).save(path)
        return str(path)

    return Path(built_once(tmp_path_factory, "keras-model", build))


@pytest.fixture(scope="session")
def onnx_model_path(keras_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``keras_model_path`` converted to ONNX with the contract's metadata, one for all workers."""

    def build() -> str:
        import onnx

        from breakout_dqn.export.convert import contract_metadata, keras_to_onnx
        from breakout_dqn.files import file_sha256
        from breakout_dqn.training.model import load_q_network

        path = tmp_path_factory.mktemp("onnx") / "model.onnx"
        proto = keras_to_onnx(load_q_network(keras_model_path), contract_metadata(file_sha256(keras_model_path)))
        onnx.save(proto, path)
        return str(path)

    return Path(built_once(tmp_path_factory, "onnx-model", build))
