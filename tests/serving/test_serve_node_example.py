"""The README's non-Python client: examples/node/play_recorded.js plays recorded screens through PlayGame.

Skipped unless ``node`` is installed and ``npm ci`` has been run in examples/node (``.ci/run`` does it
when npm is there).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import REPO, ServerThread, subprocess_env

from breakout_dqn.serving.client import AgentClient

EXAMPLE = REPO / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
                       reason="run `npm ci` in examples/node first"),
]


def record(directory: Path, rgb: bool) -> Path:
    out = directory / ("rgb.json" if rgb else "gray.json")
    command = [sys.executable, str(REPO / "examples" / "record_screens.py"), "--out", str(out), "--steps", "60",
               "--seed", "3", *(["--rgb"] if rgb else [])]
    subprocess.run(command, check=True, capture_output=True, timeout=120, env=subprocess_env(), cwd=REPO)
    return out


def python_actions(target: str, recording_path: Path) -> list[int]:
    """The same recording through AgentClient's session API."""
    recording = json.loads(recording_path.read_text())
    screens = (recording_path.parent / recording["screens_file"]).read_bytes()
    shape = (210, 160, 3) if recording["format"] == "SCREEN_FORMAT_RGB" else (210, 160)
    actions, offset = [], 0
    with AgentClient(target, timeout=30) as client, client.game() as session:
        for frame in recording["frames"]:
            size = frame["screens"] * recording["screen_bytes"]
            pixels = np.frombuffer(screens[offset:offset + size], np.uint8).reshape(-1, *shape)
            actions.append(session.act(pixels, lives=frame["lives"], new_game=frame["new_game"]))
            offset += size
    return actions


@pytest.mark.parametrize("rgb", [False, True])
def test_the_node_client_gets_the_actions_the_python_client_gets(server: ServerThread, tmp_path: Path,
                                                                  rgb: bool) -> None:
    recording = record(tmp_path, rgb)
    assert NODE is not None
    result = subprocess.run([NODE, str(EXAMPLE / "play_recorded.js"), str(recording), server.target],
                            capture_output=True, text=True, timeout=120, cwd=EXAMPLE)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    frames = json.loads(recording.read_text())["frames"]
    assert len(answer["actions"]) == len(frames) > 20
    assert answer["serve_policy"][0] and answer["actions"][0] == 1  # FIRE at the new game
    assert answer["actions"] == python_actions(server.target, recording)
    assert answer["model_version"] == server.server.servicer.version


def test_the_node_client_reports_the_servers_refusal(server: ServerThread, tmp_path: Path) -> None:
    recording = record(tmp_path, rgb=False)
    content = json.loads(recording.read_text())
    content["frames"][0]["new_game"] = False  # frames before a game starts
    recording.write_text(json.dumps(content))
    assert NODE is not None
    result = subprocess.run([NODE, str(EXAMPLE / "play_recorded.js"), str(recording), server.target],
                            capture_output=True, text=True, timeout=120, cwd=EXAMPLE)
    assert result.returncode == 1
    assert "PlayGame failed: FAILED_PRECONDITION: frame 0 of the game: no game started" in result.stderr
