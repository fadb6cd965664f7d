"""``breakout-dqn evaluate MODEL``: the Nature protocol on a ``.keras`` or ``.onnx`` model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from breakout_dqn import atari
from breakout_dqn.arguments import ArgumentParser, count
from breakout_dqn.errors import UsageError
from breakout_dqn.paths import output_path_error

PROG = "breakout-dqn evaluate"


def load_act_fn(path: Path) -> atari.ActFn:
    """Greedy ``frames -> actions`` for a ``.keras`` (Keras) or ``.onnx`` (onnxruntime) model."""
    if path.suffix == ".onnx":
        from breakout_dqn.onnx_model import OnnxPolicy

        return OnnxPolicy(path).act
    if path.suffix == ".keras":
        from breakout_dqn.training.model import load_q_network

        model = load_q_network(path)  # predict_on_batch: a compiled call, 5x faster than an eager one here
        return lambda frames: np.argmax(model.predict_on_batch(frames), axis=1)
    raise UsageError(f"MODEL must be a .keras or .onnx file, got {path.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("model", type=Path, help="model.keras or model.onnx")
    parser.add_argument("--episodes", type=count, default=30, help="full 5-life games to play")
    parser.add_argument("--epsilon", type=float, default=atari.NATURE_EPSILON, help="random-action rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for no-op starts and exploration")
    parser.add_argument("--num-envs", type=count, default=8, help="games played at once")
    parser.add_argument("--max-frames", type=count, default=atari.NATURE_MAX_FRAMES, help="frame cap per game")
    parser.add_argument("--sticky-actions", type=float, default=0.0, help="repeat_action_probability")
    parser.add_argument("--video", type=Path, help="record the first game as .mp4 or .gif")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the result as JSON here")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before a model loads or a game starts, a value that cannot work."""
    if args.episodes < 1 or args.num_envs < 1 or args.max_frames < 1:
        raise UsageError("--episodes, --num-envs and --max-frames must be >= 1")
    if not 0.0 <= args.epsilon <= 1.0 or not 0.0 <= args.sticky_actions <= 1.0:
        raise UsageError("--epsilon and --sticky-actions must be in [0, 1]")
    for problem in (args.video and output_path_error("--video", args.video, atari.VIDEO_SUFFIXES),
                    args.json and output_path_error("--json", args.json)):
        if problem:
            raise UsageError(problem)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    act = load_act_fn(args.model)
    rng = np.random.default_rng(args.seed)
    played = 0

    def report(result: atari.GameResult) -> None:
        nonlocal played
        played += 1
        print(f"game {played}/{args.episodes}: score {result.score:.0f} ({result.frames} frames)", file=sys.stderr)

    results = atari.play_games(atari.epsilon_greedy(act, args.epsilon, rng), args.episodes, seed=args.seed,
                               num_envs=args.num_envs, max_frames_per_episode=args.max_frames,
                               repeat_action_probability=args.sticky_actions, video_path=args.video,
                               on_game=report)
    summary = atari.summarize(results)
    summary.update(model=str(args.model), epsilon=args.epsilon, seed=args.seed, max_frames=args.max_frames,
                   sticky_actions=args.sticky_actions, noop_max=atari.NATURE_NOOP_MAX)
    if args.json:
        from breakout_dqn.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(f"score {summary['mean']:.1f} +- {summary['std']:.1f} over {summary['episodes']} games "
          f"(min {summary['min']:.0f}, max {summary['max']:.0f})")
    return 0
