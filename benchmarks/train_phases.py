"""Where a training step's time goes: each phase of the DQN and PQN loops, timed alone, per agent step.

The real pieces (the learner of the active Keras backend on its device, ale-py's vector env through
``GameStepper``, the replay, ``q_lambda_targets``) run the loops' phases one after the other, warmed
up, each timed by its median call:

- DQN (``default`` preset): acting (the greedy pass over the games' stacks), games (one vector step),
  replay add, sampling (the batches of one vector step's updates) and the updates (one compiled call
  with the next acting pass, as the loop runs them);
- PQN (``pqn`` preset): acting (greedy actions and max Q), games, and per rollout the Q(lambda)
  targets and the training epochs.

Every phase is given in microseconds per agent step (a vector step moves ``--num-envs`` games), with
its share of their sum; ``serial_steps_per_second`` is the rate the phases allow when nothing
overlaps (the DQN loop samples while the games step, so its real rate can be higher). More games
per vector step amortise the acting pass and the update's dispatch and spread the games over
ale-py's threads (one per core, at most one per game). The backend is ``KERAS_BACKEND`` (or
``--backend``, set before Keras loads), the device ``--device`` (training/device.py).

Usage: python benchmarks/train_phases.py [--algorithms dqn pqn] [--dqn-envs 8 32] [--pqn-envs 32 128]
       [--threads 0] [--seconds 4] [--backend jax] [--device auto] [--json OUT]
Pause any training run first (SIGSTOP): the figures are only valid on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if importlib.util.find_spec("breakout_dqn") is None:  # not installed: the checkout's
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from breakout_dqn import atari, contract  # noqa: E402
from breakout_dqn.training.config import TrainConfig, resolve  # noqa: E402

PROFILE_REPLAY_CAPACITY = 100_000  # sampling's cost is the gather, not the ring's size; 0.7 GB


def median_us(call: Callable[[], Any], seconds: float, at_least: int = 5) -> float:
    """Median wall time of ``call`` in microseconds, over ``seconds`` (at least ``at_least`` calls), after one
    warm-up call."""
    call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def per_agent_step(phases_us: dict[str, float], num_envs: int, per_vector_step: dict[str, float]) -> dict[str, Any]:
    """Phase times (microseconds per call) -> microseconds per agent step, shares and the serial rate."""
    per_step = {name: phases_us[name] * per_vector_step[name] / num_envs for name in phases_us}
    total = sum(per_step.values())
    return {"num_envs": num_envs, "us_per_agent_step": {k: round(v, 1) for k, v in per_step.items()},
            "share": {k: round(v / total, 3) for k, v in per_step.items()},
            "serial_steps_per_second": round(1e6 / total, 1)}


def random_actions(rng: np.random.Generator, num_envs: int) -> np.ndarray:
    return rng.integers(0, contract.NUM_ACTIONS, num_envs)


def profile_dqn(config: TrainConfig, threads: int, seconds: float) -> dict[str, Any]:
    from breakout_dqn.training.learners import build_learner
    from breakout_dqn.training.replay import ReplayBuffer

    learner = build_learner(config)
    games = atari.GameStepper(atari.make_vector_env(config.num_envs, life_loss_info=True, num_threads=threads))
    replay = ReplayBuffer(PROFILE_REPLAY_CAPACITY, config.num_envs, config.n_step, config.gamma)
    rng = np.random.default_rng(0)
    state = {"observations": games.reset(seed=0)}

    def step_and_add() -> None:
        result = games.step(random_actions(rng, config.num_envs))
        replay.add(state["observations"][:, -1], result.actions, result.rewards, result.terminal,
                   result.state_opens_game, result.real)
        state["observations"] = result.observations

    for _ in range(64):  # enough slots to sample from
        step_and_add()
    due = max(1, config.num_envs // config.train_frequency)
    stacks = contract.channels_last(state["observations"])
    batches = [replay.sample(config.batch_size, rng) for _ in range(due)]
    last = games.step(random_actions(rng, config.num_envs))
    phases = {
        "acting": median_us(lambda: learner.act(stacks), seconds),
        "games": median_us(lambda: games.step(random_actions(rng, config.num_envs)), seconds),
        "replay_add": median_us(lambda: replay.add(last.observations[:, -1], last.actions, last.rewards, last.terminal,
                                                   last.state_opens_game, last.real), seconds / 4),
        "sampling": median_us(lambda: replay.sample(config.batch_size * due, rng), seconds),
        "update_and_act": median_us(lambda: learner.update_and_act(batches, stacks), seconds),
    }
    games.close()
    # The loop acts alone only after a vector step without updates; with updates due every step the
    # acting pass rides in update_and_act, so it is not counted twice.
    counts = {"acting": 0.0 if due else 1.0, "games": 1.0, "replay_add": 1.0, "sampling": 1.0, "update_and_act": 1.0}
    return {**per_agent_step(phases, config.num_envs, counts), "updates_per_vector_step": due,
            "acting_alone_us": round(phases["acting"], 1)}


def profile_pqn(config: TrainConfig, threads: int, seconds: float) -> dict[str, Any]:
    from breakout_dqn.training.learners import build_learner
    from breakout_dqn.training.pqn import q_lambda_targets

    learner = build_learner(config)
    games = atari.GameStepper(atari.make_vector_env(config.num_envs, life_loss_info=True, num_threads=threads))
    rng = np.random.default_rng(0)
    stacks = contract.channels_last(games.reset(seed=0))
    steps, size = config.rollout_steps, config.rollout_steps * config.num_envs
    frames = np.repeat(stacks, steps, axis=0)  # the training pass costs the same on any frames
    actions = random_actions(rng, size).astype(np.int32)
    rewards = np.zeros((steps, config.num_envs), np.float32)
    values = rng.random((steps, config.num_envs)).astype(np.float32)
    targets = q_lambda_targets(rewards, rewards, values, config.gamma, config.q_lambda).reshape(-1)
    weights = np.ones(size, np.float32)
    phases = {
        "acting": median_us(lambda: learner.act_with_values(stacks), seconds),
        "games": median_us(lambda: games.step(random_actions(rng, config.num_envs)), seconds),
        "targets": median_us(lambda: q_lambda_targets(rewards, rewards, values, config.gamma, config.q_lambda),
                             seconds / 4),
        "training": median_us(lambda: learner.train_rollout(frames, actions, targets, weights, rng), seconds, 2),
    }
    games.close()
    counts = {"acting": 1.0, "games": 1.0, "targets": 1.0 / steps, "training": 1.0 / steps}
    return {**per_agent_step(phases, config.num_envs, counts),
            "updates_per_rollout": config.minibatches * config.epochs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", choices=("dqn", "pqn"), default=["dqn", "pqn"])
    parser.add_argument("--dqn-envs", type=int, nargs="+", default=[8, 32], help="games per vector step (DQN)")
    parser.add_argument("--pqn-envs", type=int, nargs="+", default=[32, 128], help="games per vector step (PQN)")
    parser.add_argument("--threads", type=int, default=0, help="ale-py threads; 0 = one per core, up to one per game")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per phase and case")
    parser.add_argument("--backend", choices=("auto", "tensorflow", "jax"), default="auto",
                        help="Keras backend, set before Keras loads (auto = KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from breakout_dqn.training.compute_path import describe, resolved
    from breakout_dqn.training.device import for_device, select_device

    device = select_device(TrainConfig(backend=args.backend, device=args.device))
    cases: list[dict[str, Any]] = []
    report = {"device": device.describe(), "threads": args.threads, "seconds_per_phase": args.seconds,
              "cases": cases}
    for algorithm in args.algorithms:
        for num_envs in args.dqn_envs if algorithm == "dqn" else args.pqn_envs:
            preset = "default" if algorithm == "dqn" else "pqn"
            config = resolved(for_device(resolve({"preset": preset, "num_envs": num_envs,
                                                  "replay_capacity": PROFILE_REPLAY_CAPACITY}), device))
            profile = profile_dqn if algorithm == "dqn" else profile_pqn
            case = {"algorithm": algorithm, "preset": preset, "compute": describe(config),
                    **profile(config, args.threads, args.seconds)}
            print(json.dumps(case), flush=True)
            cases.append(case)
            if args.json:  # after each case: a run stopped by a time limit keeps the cases it finished
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
