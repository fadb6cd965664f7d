"""The smoke pipeline CI runs on every change: train -> export (parity gate) -> verify -> serve -> play.

Real Breakout, real TensorFlow training for a few hundred agent steps, a real gRPC server in a
subprocess, and a real game played through it. Select with ``pytest -m smoke``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.smoke, pytest.mark.timeout(900)]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", *args], capture_output=True, text=True,
                            timeout=timeout, env=ENV)
    assert result.returncode == 0, f"breakout-dqn {args[0]} failed:\n{result.stderr[-3000:]}"
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_train_export_verify_serve_play(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cli("train", "--out", str(run), "--steps", "400", "--num-envs", "4", "--learning-starts", "200",
        "--random-steps", "100", "--replay-capacity", "4000", "--eval-every", "0", "--final-eval-episodes", "1",
        "--log-every", "100", "--checkpoint-every", "200", "--no-progress")
    assert (run / "model.keras").is_file()

    onnx_path = tmp_path / "model.onnx"
    cli("export", str(run / "model.keras"), "--out", str(onnx_path))
    assert onnx_path.is_file()
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["gate"]["passed"] is True

    verified = json.loads(cli("verify", str(onnx_path), "--json").stdout)
    assert verified["ok"] is True

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "breakout_dqn.cli", "serve", "--model", str(onnx_path),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=ENV)
    try:
        played = cli("play", "--server", f"127.0.0.1:{port}", "--episodes", "1", "--wait", "120", timeout=600)
        assert re.search(r"score", played.stdout + played.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output[-3000:]
