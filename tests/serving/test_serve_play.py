"""``breakout-dqn play``: real Breakout games, every action asked of a real server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from serving_helpers import ServerThread, SlowPolicy, config_for

from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving import play


@pytest.mark.slow  # plays full games
def test_play_finishes_a_game_through_the_server(server: ServerThread, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    requests_before = server.stats.requests
    video = tmp_path / "game.mp4"
    assert play.main(["--server", server.target, "--episodes", "1", "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert "serve policy fire-after-life-loss" in out
    game = re.search(r"game 1: score (\d+) in (\d+) steps, (\d+) frames", out)
    assert game, out
    steps = int(game.group(2))
    assert steps > 0 and int(game.group(3)) >= steps * contract.FRAME_SKIP
    calls = server.stats.requests - requests_before
    assert calls >= steps  # every step's action came from the server
    assert re.search(rf"1 games: mean score {game.group(1)}\.0 .* {calls} GetAction calls", out), out
    assert video.stat().st_size > 1000


@pytest.mark.slow  # plays full games
def test_play_batches_several_games_in_one_request(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    stacks_before, requests_before = server.stats.stacks, server.stats.requests
    assert play.main(["--server", server.target, "--episodes", "2", "--num-envs", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"game \d: score \d+", out)) == 2
    requests = server.stats.requests - requests_before
    assert server.stats.stacks - stacks_before >= 2 * requests - 2  # two stacks per request (while both play)


def test_play_refuses_a_model_with_another_serve_policy(onnx_model_path: Path, policy: OnnxPolicy,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    metadata = {**policy.metadata, contract.META_SERVE_POLICY: "agent-presses-fire"}
    other = SlowPolicy(policy, delay_s=0.0, metadata=metadata)
    running = ServerThread(config_for(onnx_model_path), lambda config: other)
    try:
        assert play.main(["--server", running.target]) == 2
        assert "expects serve policy 'agent-presses-fire'" in capsys.readouterr().err
        assert other.batch_sizes == [1, 8, 1]  # warm-up only: no game was played
    finally:
        running.stop()


def test_play_writes_its_report_to_json(server: ServerThread, tmp_path: Path) -> None:
    report = tmp_path / "reports" / "play.json"
    assert play.main(["--server", server.target, "--max-frames", "200", "--json", str(report)]) == 0
    record = json.loads(report.read_text())
    assert record["server"] == server.target and record["method"] == "GetAction"
    assert record["episodes"] == 1 and record["truncated"] == 1 and len(record["scores"]) == 1
    assert record["calls"] >= 200 // contract.FRAME_SKIP and record["latency_p99_ms"] >= record["latency_p50_ms"] > 0


def test_play_refuses_a_json_path_it_cannot_write_before_playing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert play.main(["--server", "127.0.0.1:1", "--json", str(tmp_path / "report.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"breakout-dqn play: error: --json must end in .json, got " \
                                              f"{tmp_path / 'report.txt'}"


def test_play_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert play.main(["--server", "127.0.0.1:1", "--wait", "0.5"]) == 1
    assert "breakout-dqn play: error: 127.0.0.1:1: " in capsys.readouterr().err


@pytest.mark.slow  # plays full games
def test_play_over_a_stream(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    requests_before, streams_before = server.stats.requests, server.server.admission.sessions
    assert play.main(["--server", server.target, "--episodes", "1", "--stream", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    game = re.search(r"game 1: score (\d+) in (\d+) steps", out)
    assert game, out
    calls = server.stats.requests - requests_before
    assert calls >= int(game.group(2))
    assert re.search(rf"{calls} StreamActions requests, p50", out), out
    deadline = time.monotonic() + 5
    while server.server.admission.sessions != streams_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.server.admission.sessions == streams_before  # the session's stream was closed


@pytest.mark.slow  # plays full games
def test_play_raw_plays_through_play_game_sending_only_screens(server: ServerThread, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    requests_before = server.stats.requests
    video = tmp_path / "raw.gif"
    assert play.main(["--server", server.target, "--episodes", "3", "--num-envs", "2", "--raw", "--seed", "4",
                      "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert "(the server presses FIRE at reset and after every lost life)" in out
    games = re.findall(r"game \d: score (\d+) in (\d+) steps, (\d+) frames", out)
    assert len(games) == 3 and all(int(frames) >= int(steps) * 3 for _, steps, frames in games)
    frames = server.stats.requests - requests_before
    assert frames >= sum(int(steps) for _, steps, _ in games)  # every step's action came from PlayGame
    assert re.search(rf"3 games: mean score .* {frames} PlayGame frames, p50", out), out
    assert video.stat().st_size > 1000
    deadline = time.monotonic() + 5
    while server.server.admission.sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.server.admission.sessions == 0  # both sessions' streams were closed


def test_play_raw_and_stream_cannot_be_combined(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        play.main(["--raw", "--stream"])
    assert "not allowed with argument" in capsys.readouterr().err
