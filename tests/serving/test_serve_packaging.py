"""The serving side's packaging: no TensorFlow, generated gRPC code in sync with the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving_helpers import REPO, subprocess_env


def test_serving_never_imports_tensorflow(onnx_model_path: Path) -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import serving.server, serving.client, serving.play, serving.service, serving.batcher\n"
        "import breakout_dqn.onnx_model\n"
        "import breakout_dqn.cli\n"
        "policy = serving.server.load_policy(serving.config.ServerConfig(model=sys.argv[1]))\n"
        "assert policy.act(np.zeros((2, 84, 84, 4), np.uint8)).shape == (2,)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'jax'))\n"
        "assert not heavy, heavy\n"
        "assert 'onnxruntime' in sys.modules and 'grpc' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(onnx_model_path)], capture_output=True, text=True,
                            timeout=120, env=subprocess_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_cli_help_works_without_tensorflow() -> None:
    for command in ("serve", "play"):
        result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", command, "--help"], capture_output=True,
                                text=True, timeout=120, env=subprocess_env(), cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert f"breakout-dqn {command}" in result.stdout


def test_generated_code_matches_the_proto() -> None:
    result = subprocess.run(["bash", "scripts/gen_protos.sh", "--check"], capture_output=True, text=True,
                            timeout=120, env={**subprocess_env(), "PYTHON": sys.executable}, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    from breakout.v1 import agent_pb2

    assert agent_pb2.DESCRIPTOR.package == "breakout.v1"
    assert set(agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods_by_name) == {
        "GetAction",
        "StreamActions",
        "GetModelInfo",
    }
