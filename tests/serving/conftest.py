"""Fixtures for the serving tests: one in-process server per module, a client, the policy, certificates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import OPENSSL, ServerThread, config_for, make_certificates

from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving.client import AgentClient


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


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Test CAs and certificates (``serving_helpers.make_certificates``), made with the openssl command."""
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed (it makes the test certificates)")
    return make_certificates(tmp_path_factory.mktemp("tls"))
