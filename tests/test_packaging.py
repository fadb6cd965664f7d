"""The `serve` extra installs into a clean virtualenv and runs without TensorFlow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import installed_layout

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
        "from breakout_dqn.serving import client, config, healthcheck, server\n"
        "policy = server.load_policy(config.ServerConfig(model=sys.argv[1]))\n"
        "print(policy.act(np.zeros((3, 84, 84, 4), np.uint8)).shape)\n"
        "shipped = config.default_model_path()\n"  # the shipped model, installed with the package
        "print(shipped.is_file(), 'site-packages' in str(shipped))\n"
    )
    # Run outside the checkout so only the installed package can be imported.
    result = subprocess.run([str(python), "-c", code, str(onnx_model_path)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["(3,)", "True True"]
    help_text = subprocess.run([str(venv / "bin" / "breakout-dqn"), "serve", "--help"], capture_output=True,
                               text=True, timeout=120, cwd=tmp_path)
    assert help_text.returncode == 0 and "--model" in help_text.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_claims_one_namespace_beside_the_wire_code(tmp_path: Path) -> None:
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=280)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("breakout_dqn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["breakout", "breakout_dqn"]
    roots = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert roots == {"breakout", "breakout_dqn"}  # no top-level training, export or serving
    for stage in ("training", "export", "serving"):  # the stages' folders, installed under the namespace
        sources = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / stage).rglob("*.py"))
        assert sources and all(f"breakout_dqn/{source}" in names for source in sources), stage
    assert "breakout/v1/agent_pb2_grpc.py" in names
    assert "breakout_dqn/models/breakout-dqn.onnx" in names  # serve's default model, wherever it is installed


def dockerfile_stages() -> dict[str, list[str]]:
    """Each named stage's instructions, continuation lines joined, comments dropped."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        named = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if named:
            current = named.group(1)
            stages[current] = []
        elif current is not None:
            stages[current].append(line)
    return stages


def copied(instruction: str) -> list[str]:
    return instruction.split()[1:-1]  # COPY SRC... DEST


def test_each_image_installs_its_dependencies_before_its_code() -> None:
    # A change to the code must leave each target's dependency layer (TensorFlow: minutes) cached.
    stages = dockerfile_stages()
    base_copies = [source for line in stages["base"] if line.startswith("COPY") for source in copied(line)]
    assert base_copies == ["requirements/constraints.txt", "pyproject.toml"]
    for target in ("serve", "train"):
        lines = stages[target]
        dependencies = next(i for i, line in enumerate(lines) if f'".[{target}]"' in line)
        code = lines.index("COPY --from=source /src ./")
        package = next(i for i, line in enumerate(lines) if re.search(r"pip install .*--no-deps \.( |$)", line))
        assert lines[dependencies].startswith("RUN pip install --")
        # The stand-in goes before the code: no empty file of it can shadow or outlive the code's.
        assert "pip uninstall -y breakout-dqn" in lines[dependencies]
        assert re.search(r"rm -rf .*\bbreakout_dqn breakout training export serving models README\.md\b",
                         lines[dependencies]), target
        assert dependencies < code < package, target
        assert not any(line.startswith("COPY") for line in lines[:dependencies]), target
    # The code stage copies the package and every folder pyproject.toml maps into its namespace.
    sources = {source for line in stages["source"] if line.startswith("COPY") for source in copied(line)}
    mapped = set(installed_layout.package_dirs().values())
    assert mapped == {"training", "export", "serving", "models"}
    assert {"pyproject.toml", "README.md", "breakout_dqn", "breakout", *mapped} <= sources


def test_no_image_keeps_the_unmapped_source_beside_the_installed_package() -> None:
    # `python -m breakout_dqn...` (the serve image's HEALTHCHECK) puts the working directory first on
    # sys.path: a breakout_dqn/ folder left there, without the stages pyproject.toml maps into it,
    # would shadow the installed package (the container smoke failed on it, 2026-12-07).
    stages = dockerfile_stages()
    for target in ("serve", "train", "train-gpu"):
        (install,) = [line for line in stages[target] if re.search(r"pip install .*--no-deps \.( |$)", line)]
        removed = re.search(r"rm -rf ([^&]+)", install)
        assert removed, target
        assert {"breakout_dqn", "breakout", "training", "export", "serving"} <= set(removed.group(1).split()), target
        assert "models" not in removed.group(1).split(), target  # $BREAKOUT_DQN_MODEL points into it
