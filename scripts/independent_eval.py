"""Score an exported model with an evaluator that shares no code with this project.

`breakout-dqn evaluate` and `verify` play through `breakout_dqn.atari` (ale-py's native vector
environment). This script plays through gymnasium's own wrappers instead, and reads the model with
onnxruntime directly: `gymnasium.wrappers.AtariPreprocessing` (the max of the last two frames of a
4-frame repeat, ALE's grayscale, an 84x84 INTER_AREA resize, up to --noop-max no-op starts) and
`FrameStackObservation` (4 frames, zeros before the first), FIRE at the start and after every lost
life (the model's serve policy), epsilon-greedy actions, one game at a time. What it answers: does
the model's score hold outside the code that trained and evaluated it (a preprocessing or
life-handling fault shared by the trainer and `evaluate` would not show in their own scores).

Usage: python scripts/independent_eval.py models/breakout-dqn.onnx [--episodes 100] [--json OUT]
Only numpy, gymnasium, ale-py and onnxruntime are imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import onnxruntime as ort

FIRE = 1  # ALE's minimal action set for Breakout: NOOP, FIRE, RIGHT, LEFT


def make_env(noop_max: int, max_frames: int) -> gym.Env:
    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0,
                   max_num_frames_per_episode=max_frames)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84,
                                          terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    return gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")


def play(env: gym.Env, session: ort.InferenceSession, epsilon: float, rng: np.random.Generator,
         seed: int) -> dict[str, float | int | bool]:
    """One full game: its raw score, agent steps, and whether the frame cap cut it."""
    observation, info = env.reset(seed=seed)
    lives, fire_next = info["lives"], True
    score, steps = 0.0, 0
    while True:
        if fire_next:
            action, fire_next = FIRE, False
        elif rng.random() < epsilon:
            action = int(rng.integers(4))
        else:
            frames = np.moveaxis(np.asarray(observation, dtype=np.uint8), 0, -1)[None]  # [1, 84, 84, 4]
            action = int(np.argmax(session.run(["q_values"], {"frames": frames})[0][0]))
        observation, reward, terminated, truncated, info = env.step(action)
        score += float(reward)
        steps += 1
        if info["lives"] < lives:
            lives, fire_next = info["lives"], True
        if terminated or truncated:
            return {"score": score, "steps": steps, "truncated": bool(truncated and not terminated)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="ONNX model (frames uint8 [N,84,84,4] -> q_values float32 [N,4])")
    parser.add_argument("--episodes", type=int, default=100, help="full 5-life games")
    parser.add_argument("--seed", type=int, default=0, help="game i is reset with seed + i; epsilon draws too")
    parser.add_argument("--epsilon", type=float, default=0.05, help="random-action probability")
    parser.add_argument("--noop-max", type=int, default=30, help="up to this many no-ops at each start")
    parser.add_argument("--max-frames", type=int, default=18_000, help="emulator frames per game before it is cut")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    if not 0.0 <= args.epsilon <= 1.0:
        parser.error("--epsilon must be in [0, 1]")
    if not args.model.is_file():
        parser.error(f"no such model: {args.model}")
    try:
        session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files
        parser.error(f"{args.model} is not a loadable ONNX model: {error}")
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (["frames"], ["q_values"]):
        parser.error(f"{args.model}: expected input 'frames' and output 'q_values', found {names}")

    env = make_env(args.noop_max, args.max_frames)
    rng = np.random.default_rng(args.seed)
    games = []
    started = time.perf_counter()
    for index in range(args.episodes):
        games.append(play(env, session, args.epsilon, rng, args.seed + index))
        print(f"game {index + 1}/{args.episodes}: score {games[-1]['score']:g} ({games[-1]['steps']} agent steps"
              f"{', cut at the frame cap' if games[-1]['truncated'] else ''})", flush=True)
    env.close()
    scores = np.array([game["score"] for game in games])
    std = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
    summary = {
        "model": str(args.model), "episodes": len(scores), "mean": float(scores.mean()), "std": std,
        "standard_error": std / math.sqrt(len(scores)), "min": float(scores.min()), "max": float(scores.max()),
        "truncated": sum(bool(game["truncated"]) for game in games), "seconds": round(time.perf_counter() - started, 1),
        "protocol": (f"gymnasium {gym.__version__} AtariPreprocessing + FrameStackObservation (zero padding), "
                     f"ALE/Breakout-v5 without sticky actions, up to {args.noop_max} no-op starts, FIRE at the "
                     f"start and after each lost life, epsilon {args.epsilon}, {args.max_frames}-frame cap, "
                     "raw score; onnxruntime directly"),
        "seed": args.seed, "scores": scores.tolist(),
        "command": "python scripts/independent_eval.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(f"score {summary['mean']:.1f} +- {std:.1f} over {len(scores)} games (standard error "
          f"{summary['standard_error']:.1f}; min {summary['min']:g}, max {summary['max']:g}, "
          f"{summary['truncated']} cut at the frame cap) in {summary['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
