"""Could PQN's rollout hide the games behind the acting pass? Overlapped against serial, in the same run.

PQN's rollout alternates an acting pass over all its games (the network, ``TensorFlowPQNLearner.act_with_values``)
and one step of all of them (ale-py's vector env, C++ threads). The next pass needs the step's frames,
so the only way to overlap the two is to split the games into halves that take turns. This measures
the most that could buy: the games stepping (ale-py ``send``, then ``recv``) while an acting pass runs,
against the two one after the other, with the trainer's own learner for the ``pqn`` preset (its
network, XLA setting and batch of games). Rounds take turns, so a slow minute hits every variant;
the median round is reported.

Usage: python benchmarks/pqn_rollout_overlap.py [--rounds 3] [--reps 40] [--json OUT]
Pause any training run first (SIGSTOP): the figures are only valid on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from breakout_dqn import contract  # noqa: E402
from breakout_dqn.atari import make_vector_env  # noqa: E402
from breakout_dqn.training.compute_path import resolved  # noqa: E402
from breakout_dqn.training.config import resolve  # noqa: E402
from breakout_dqn.training.learners import build_learner  # noqa: E402
from breakout_dqn.training.learners.tensorflow_pqn import TensorFlowPQNLearner  # noqa: E402


def ms_per_call(fn: Callable[[], None], reps: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns; the median is reported")
    parser.add_argument("--reps", type=int, default=40, help="vector steps timed per variant and round")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)

    config = resolved(resolve({"preset": "pqn"}))  # the path its trainer takes on this CPU (float32 + XLA)
    learner = build_learner(config)
    assert isinstance(learner, TensorFlowPQNLearner)
    env = make_vector_env(config.num_envs, life_loss_info=True)
    observations, _ = env.reset(seed=0)
    stacks = contract.channels_last(observations)
    rng = np.random.default_rng(0)

    def actions() -> np.ndarray:
        return rng.integers(0, contract.NUM_ACTIONS, config.num_envs)

    def games() -> None:
        env.step(actions())

    def acting() -> None:
        learner.act_with_values(stacks)

    def serial() -> None:  # what the trainer does
        learner.act_with_values(stacks)
        env.step(actions())

    def overlapped() -> None:  # the games step in their threads while the network runs
        env.send(actions())
        learner.act_with_values(stacks)
        env.recv()

    variants: dict[str, Callable[[], None]] = {"games": games, "acting": acting, "serial": serial,
                                               "overlapped": overlapped}
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            rounds[name].append(ms_per_call(fn, args.reps))
    env.close()

    ms = {name: statistics.median(values) for name, values in rounds.items()}
    result = {
        "games_per_step": config.num_envs, "xla": config.xla, "rounds": args.rounds, "reps": args.reps,
        "ms_per_vector_step": ms, "all_rounds_ms": rounds,
        "overlapped_over_serial": ms["overlapped"] / ms["serial"],
        "ideal_over_serial": max(ms["games"], ms["acting"]) / ms["serial"],
    }
    print(f"PQN rollout, {config.num_envs} games per vector step (XLA {'on' if config.xla else 'off'}), "
          f"median of {args.rounds} rounds x {args.reps} steps:")
    for name, value in ms.items():
        print(f"  {name:11s} {value:7.1f} ms per vector step  {value / ms['serial']:5.2f}x serial")
    print(f"overlapped / serial: {result['overlapped_over_serial']:.2f} (a perfect overlap on idle cores would "
          f"be {result['ideal_over_serial']:.2f}: the slower of the two alone)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
