"""Fixtures for the serving tests: one in-process server per module, a client, the policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import ServerThread, config_for

from breakout_dqn.onnx_model import OnnxPolicy
from serving.client import AgentClient


@pytest.fixture(scope="module")
def server(onnx_model_path: Path) -> Iterator[ServerThread]:
    """A default server on the fixture model (at most 64 stacks per request), shared by a test module."""
    running = ServerThread(config_for(onnx_model_path, max_stacks_per_request=64))
    yield running
    running.stop()


@pytest.fixture()
def client(server: ServerThread) -> Iterator[AgentClient]:
    with AgentClient(server.target, timeout=30) as agent:
        yield agent


@pytest.fixture(scope="session")
def policy(onnx_model_path: Path) -> OnnxPolicy:
    return OnnxPolicy(onnx_model_path)
