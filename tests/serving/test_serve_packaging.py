"""The serving side's packaging: no TensorFlow, generated gRPC code in sync with the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import REPO, subprocess_env

# Run before the code under test: any import of these packages (even one a library tries and
# catches) is recorded and refused, and the run fails at the end if one was attempted.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
HEAVY = ("tensorflow", "keras", "tf2onnx", "jax")
attempted = []
class BlockHeavy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            attempted.append(name)
            raise ImportError(f"blocked by the test: the serving side imported {name}")
        return None
sys.meta_path.insert(0, BlockHeavy())
"""
CHECK_TENSORFLOW = """
assert not attempted, f"imported {attempted}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
assert not loaded, f"loaded {loaded}"
print("no tensorflow")
"""

# Load the model, serve it on a free port, answer a PlayGame frame, GetAction and a health check.
EXERCISE_SERVING = """
import asyncio
import numpy as np
import breakout_dqn.cli
import breakout_dqn.serving.batcher, breakout_dqn.serving.client, breakout_dqn.serving.config
import breakout_dqn.serving.game, breakout_dqn.serving.healthcheck, breakout_dqn.serving.play
import breakout_dqn.serving.screens
import breakout_dqn.serving.server, breakout_dqn.serving.service
from breakout_dqn.onnx_model import OnnxPolicy

async def main(model):
    server = breakout_dqn.serving.server.AgentServer(breakout_dqn.serving.config.ServerConfig(model=model, port=0))
    port = await server.start()
    await server.load()
    target = f"127.0.0.1:{port}"
    def call():
        with breakout_dqn.serving.client.AgentClient(target, timeout=30) as client, client.game() as game:
            assert game.act(np.zeros((2, 210, 160, 3), np.uint8), lives=5, new_game=True) == 1  # FIRE: a new game
            return client.get_action(np.zeros((2, 84, 84, 4), np.uint8)), breakout_dqn.serving.healthcheck.check(target)
    actions, health = await asyncio.get_running_loop().run_in_executor(None, call)
    await server.stop(1.0)
    return actions, health

actions, health = asyncio.run(main(sys.argv[1]))
assert actions.shape == (2,) and health == "SERVING", (actions, health)
assert OnnxPolicy(sys.argv[1]).act(np.zeros((1, 84, 84, 4), np.uint8)).shape == (1,)
assert "onnxruntime" in sys.modules and "grpc" in sys.modules
"""


def run_blocking_tensorflow(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW + code + CHECK_TENSORFLOW, *args],
                          capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=REPO)


def test_serving_never_imports_tensorflow(onnx_model_path: Path) -> None:
    result = run_blocking_tensorflow(EXERCISE_SERVING, str(onnx_model_path))
    assert result.returncode == 0 and result.stdout.strip() == "no tensorflow", result.stderr[-3000:]


@pytest.mark.parametrize(("code", "expected"), [
    ("import breakout_dqn.training.model\n", "blocked by the test: the serving side imported keras"),  # raises
    ("try:\n    import keras\nexcept ImportError:\n    pass\n", "imported ['keras']"),  # caught: still a failure
])
def test_the_tensorflow_check_fails_when_tensorflow_is_imported(code: str, expected: str) -> None:
    """The check above can fail: the same harness catches an import of TensorFlow, even a caught one."""
    result = run_blocking_tensorflow(code)
    assert result.returncode != 0 and "no tensorflow" not in result.stdout
    assert expected in result.stderr, result.stderr[-3000:]


def test_cli_help_works_without_tensorflow() -> None:
    code = (
        "import contextlib, breakout_dqn.cli\n"
        "for command in ('serve', 'play'):\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        breakout_dqn.cli.main([command, '--help'])\n"
    )
    result = run_blocking_tensorflow(code)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("no tensorflow"), result.stderr[-3000:]
    for command in ("serve", "play"):
        assert f"usage: breakout-dqn {command}" in result.stdout


def test_generated_code_matches_the_proto() -> None:
    result = subprocess.run(["bash", "scripts/gen_protos.sh", "--check"], capture_output=True, text=True,
                            timeout=120, env={**subprocess_env(), "PYTHON": sys.executable}, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    from breakout.v1 import agent_pb2

    assert agent_pb2.DESCRIPTOR.package == "breakout.v1"
    assert set(agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods_by_name) == {
        "GetAction",
        "StreamActions",
        "PlayGame",
        "GetModelInfo",
    }


@pytest.mark.parametrize(("given", "expected"), [(None, "false"), ("true", "true")])
def test_the_serving_stage_turns_grpc_fork_handlers_off_unless_the_environment_asks(given: str | None,
                                                                                    expected: str) -> None:
    # grpc/grpc#43055: with them on, a subprocess started beside an open channel (play's ffmpeg) can die.
    env = {k: v for k, v in subprocess_env().items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    if given is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = given
    code = "import os, breakout_dqn.serving.client; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                            cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr[-2000:]
