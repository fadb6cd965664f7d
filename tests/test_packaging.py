"""The `serve` extra installs into a clean virtualenv and runs without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_serve_extra_installs_and_imports_without_tensorflow(tmp_path: Path, onnx_model_path: Path) -> None:
    venv = tmp_path / "serve-only"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--constraint",
                              str(ROOT / "requirements" / "constraints.txt"), f"{ROOT}[serve]"],
                             capture_output=True, text=True, timeout=800)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    assert "onnxruntime==" in listed and "grpcio==" in listed
    assert "tensorflow" not in listed and "keras==" not in listed
    code = (
        "import sys, numpy as np\n"
        "import serving.server, serving.client, serving.healthcheck, serving.config\n"
        "policy = serving.server.load_policy(serving.config.ServerConfig(model=sys.argv[1]))\n"
        "print(policy.act(np.zeros((3, 84, 84, 4), np.uint8)).shape)\n"
    )
    # Run outside the checkout so only the installed package can be imported.
    result = subprocess.run([str(python), "-c", code, str(onnx_model_path)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(3,)"
    help_text = subprocess.run([str(venv / "bin" / "breakout-dqn"), "serve", "--help"], capture_output=True,
                               text=True, timeout=120, cwd=tmp_path)
    assert help_text.returncode == 0 and "--model" in help_text.stdout
