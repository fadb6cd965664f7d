"""``breakout-dqn play --server HOST:PORT``: play real Breakout, every action from the server.

The games run locally (ale-py, the contract's preprocessing: the frames the model was trained
on); each agent step sends the frame stacks of all games in one GetAction request (or, with
``--stream``, one request on a StreamActions stream held for the whole session). The client
serves the ball itself the way training did (FIRE at reset and after every lost life: the
``fire-after-life-loss`` serve policy the model's metadata declares), so a greedy agent that
never learned to press FIRE does not stall. Prints the score of each game as it ends.

With ``--raw`` the client does none of that: it plays through PlayGame, sending the raw screens
the emulator renders, and the server builds the stacks and presses FIRE (``serving/play_raw.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.errors import ExitCode
from breakout_dqn.files import atomic_write_text
from breakout_dqn.paths import output_path_error
from breakout_dqn.serving.client import ActionStream, AgentClient
from breakout_dqn.serving.config import (
    CALL_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LB_POLICIES,
    LB_POLICY,
    SERVING_WAIT_S,
)
from breakout_dqn.serving.play_raw import play_raw_games
from breakout_dqn.serving.security import SecurityConfigError, add_client_flags, client_security_from_args

PROG = "breakout-dqn play"


def check_model_info(info) -> None:  # info: agent_pb2.GetModelInfoResponse
    """Raise ValueError unless this client can drive the served model's game correctly."""
    if tuple(info.action_meanings) != contract.ACTION_MEANINGS:
        raise ValueError(f"server's actions {list(info.action_meanings)} are not {list(contract.ACTION_MEANINGS)}")
    if info.serve_policy != contract.SERVE_POLICY:
        raise ValueError(
            f"server's model expects serve policy {info.serve_policy!r}; "
            f"this client implements {contract.SERVE_POLICY!r}"
        )
    if info.stack_bytes != contract.STACK_BYTES:
        raise ValueError(f"server expects {info.stack_bytes} bytes per stack, this client sends {contract.STACK_BYTES}")


class ServerAgent:
    """``act(frames) -> actions`` through GetAction (or a StreamActions session), timing every call."""

    def __init__(self, client: AgentClient | ActionStream):
        self.client = client
        self.latencies: list[float] = []

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        actions = self.client.get_action(frames)
        self.latencies.append(time.perf_counter() - start)
        if len(actions) != len(frames):
            raise RuntimeError(f"server answered {len(actions)} actions for {len(frames)} stacks")
        return actions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--server", default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
                        help="a `breakout-dqn serve`: HOST:PORT, or a gRPC target naming several, such as "
                        "dns:///breakout-dqn-serve-headless:50051 or ipv4:10.0.0.1:50051,10.0.0.2:50051")
    parser.add_argument("--lb", choices=LB_POLICIES, default=LB_POLICY,
                        help="gRPC load balancing: pick_first holds one connection; round_robin connects to "
                        "every address the target names and spreads the calls over those SERVING")
    parser.add_argument("--episodes", type=int, default=1, help="full 5-life games to play")
    parser.add_argument("--num-envs", type=int, default=1, help="games played at once (one request per step)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the no-op starts")
    parser.add_argument("--max-frames", type=int, default=atari.NATURE_MAX_FRAMES, help="frame cap per game")
    parser.add_argument("--video", type=Path, default=None, help="record the first game (.mp4 or .gif)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the games' scores and the calls' latencies here as JSON")
    rpc = parser.add_mutually_exclusive_group()
    rpc.add_argument("--stream", action="store_true",
                     help="ask for actions on one StreamActions stream instead of a GetAction call per step")
    rpc.add_argument("--raw", action="store_true",
                     help="play through PlayGame: send only the raw screens the emulator renders (no local "
                     "preprocessing, no local FIRE); the server builds the stacks and serves the ball")
    parser.add_argument("--timeout", type=float, default=CALL_TIMEOUT_S,
                        help="seconds per GetAction call (with --stream the stream has no deadline)")
    parser.add_argument("--wait", type=float, default=SERVING_WAIT_S,
                        help="seconds to wait for the server to be SERVING")
    add_client_flags(parser)
    return parser


def play_games_through(client: AgentClient, args: argparse.Namespace,
                       on_game: Callable[[atari.GameResult], None]) -> tuple[list[atari.GameResult], list[float]]:
    """The games ``args`` ask for, every action from the server; the games and each call's latency (s)."""
    if args.raw:
        return play_raw_games(client, args.episodes, seed=args.seed, num_envs=args.num_envs,
                              max_frames_per_episode=args.max_frames, video_path=args.video, on_game=on_game)
    session = client.stream() if args.stream else None
    agent = ServerAgent(session or client)
    try:
        results = atari.play_games(agent, args.episodes, seed=args.seed, num_envs=args.num_envs,
                                   max_frames_per_episode=args.max_frames, video_path=args.video, on_game=on_game)
    except BaseException:
        if session is not None:
            session.cancel()
        raise
    if session is not None:
        session.close()  # half-close: the server ends the stream
    return results, agent.latencies


def argument_error(args: argparse.Namespace) -> str | None:
    """The first argument that cannot work, as one line; None if all can."""
    if args.episodes < 1 or args.num_envs < 1:
        return "--episodes and --num-envs must be >= 1"
    if args.video is not None:
        problem = output_path_error("--video", args.video, atari.VIDEO_SUFFIXES)
        if problem:
            return problem
    if args.json is not None:
        return output_path_error("--json", args.json, (".json",))
    return None


def connect(client: AgentClient, args: argparse.Namespace) -> int | None:
    """Wait for the server and check its model's contract; an exit code on failure, None when ready."""
    try:
        client.wait_until_serving(args.wait)
        info = client.model_info()
        check_model_info(info)
    except (TimeoutError, grpc.RpcError, ValueError) as error:
        detail = f"{error.code().name}: {error.details()}" if isinstance(error, grpc.RpcError) else str(error)
        print(f"{PROG}: error: {args.server}: {detail}", file=sys.stderr)
        return int(ExitCode.USAGE if isinstance(error, ValueError) else ExitCode.FAILURE)
    fire = "the server presses" if args.raw else "this client presses"
    print(f"server {args.server}: model {info.model_version}, actions {','.join(info.action_meanings)}, "
          f"serve policy {info.serve_policy} ({fire} FIRE at reset and after every lost life)", flush=True)
    return None


def report(args: argparse.Namespace, method: str, results: list[atari.GameResult], latencies: list[float]) -> None:
    """Print the games' summary and the calls' latencies (and write them to ``--json``)."""
    summary = atari.summarize(results)
    latencies_ms = np.asarray(latencies) * 1e3
    p50, p99 = (float(np.percentile(latencies_ms, q)) if len(latencies_ms) else 0.0 for q in (50, 99))
    rpc = {"PlayGame": "PlayGame frames", "StreamActions": "StreamActions requests"}.get(method, "GetAction calls")
    print(f"{summary['episodes']} games: mean score {summary['mean']:.1f} (min {summary['min']:.0f}, "
          f"max {summary['max']:.0f}); {len(latencies_ms)} {rpc}, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    if args.video is not None:
        print(f"video: {args.video}")
    if args.json is not None:
        record = {"server": args.server, "method": method, **summary,
                  "calls": len(latencies_ms), "latency_p50_ms": p50, "latency_p99_ms": p99}
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    problem = argument_error(args)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        security = client_security_from_args(args)
    except SecurityConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    method = "PlayGame" if args.raw else "StreamActions" if args.stream else "GetAction"
    with AgentClient(args.server, timeout=args.timeout, lb_policy=args.lb, security=security) as client:
        failed = connect(client, args)
        if failed is not None:
            return failed
        count = 0

        def on_game(result: atari.GameResult) -> None:
            nonlocal count
            count += 1
            note = " (truncated at the frame cap)" if result.truncated else ""
            print(f"game {count}: score {result.score:.0f} in {result.steps} steps, {result.frames} frames{note}",
                  flush=True)

        try:
            results, latencies = play_games_through(client, args, on_game)
        except (grpc.RpcError, RuntimeError) as error:
            detail = f"{error.code().name}: {error.details()}" if isinstance(error, grpc.RpcError) else str(error)
            print(f"{PROG}: error: {method} failed: {detail}", file=sys.stderr)
            return int(ExitCode.FAILURE)
    report(args, method, results, latencies)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
