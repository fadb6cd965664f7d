#!/usr/bin/env python3
"""Does bfloat16 arithmetic change the DQN update of a late network? The shipped agent as the probe.

    python scripts/bf16_update_probe.py models/breakout-dqn.onnx --json results/bf16-update-probe/probe.json

Every long DQN run here trained in bfloat16 (``--precision auto`` on CPUs with bfloat16 instructions),
and its curve flattened after 2.4M agent steps. The checkpoints that would let a float32 fork answer
that directly are gone, so this asks the cheaper question on the network they produced:

1. the shipped dueling network is rebuilt in Keras from the ONNX weights, as float32 and as bfloat16
   (Keras ``mixed_bfloat16``, output layers float32, as the trainer builds it), checked against onnxruntime;
2. it plays Breakout (epsilon 0.01, the training games' rate; a lost life ends the bootstrapped return)
   to fill a replay;
3. on batches of 32 (Double DQN targets, the target network = the online one, Huber loss: ``default``'s
   update) it compares the two arithmetics' TD targets (against the gaps between actions), greedy
   next actions and gradients (cosine, relative error), beside the gradient's own sampling noise (the
   cosine between float32 gradients of two different batches);
4. from the same weights, on the same batches, it runs ``--updates`` Adam updates with each learner
   (target sync every 250 updates, 1,000 agent steps) and compares how far the two forks drift apart
   with how far each moved, and with how far a float32 fork on the same batches in another order
   drifts (the sampling's own effect); and their float32 TD loss on held-out batches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}


def keras_twin(weights: dict[str, np.ndarray], precision: str):
    """The shipped dueling network in Keras (``precision``) with the ONNX file's weights."""
    from breakout_dqn.training.model import build_q_network

    model = build_q_network(dueling=True, precision=precision)
    for layer in model.layers:
        if not layer.weights:
            continue
        found = {name: value for name, value in weights.items() if name.startswith(f"online_1/{layer.name}_1/")}
        kernel = next(v for v in found.values() if v.ndim >= 2)
        bias = next(v for v in found.values() if v.ndim == 1)
        if kernel.ndim == 4:  # ONNX Conv [out, in, h, w] -> Keras [h, w, in, out]
            kernel = kernel.transpose(2, 3, 1, 0)
        layer.set_weights([kernel, bias])
    return model


def fill_replay(policy, steps: int, seed: int):
    """A replay of ``steps`` agent steps of ``policy`` at epsilon 0.01 over 8 games (life loss = terminal)."""
    from breakout_dqn import atari, contract
    from breakout_dqn.training.replay import ReplayBuffer

    games = atari.GameStepper(atari.make_vector_env(8, life_loss_info=True))
    replay = ReplayBuffer(steps, 8, 1, 0.99)
    rng = np.random.default_rng(seed)
    observations = games.reset(seed=seed)
    for _ in range(steps // 8):
        greedy = policy.act(contract.channels_last(observations))
        result = games.step(atari.explore(greedy, 0.01, rng))
        replay.add(observations[:, -1], result.actions, result.rewards, result.terminal, result.state_opens_game,
                   result.real)
        observations = result.observations
    games.close()
    return replay


def update_pieces(model, batch):
    """TD targets (Double DQN, target = online), greedy next actions, and the Huber loss's gradient."""
    import tensorflow as tf

    from breakout_dqn.training.losses import td_loss, td_targets

    states, actions, returns, discounts, dones, next_states = batch
    next_q = model(next_states, training=False)
    targets = td_targets(returns, discounts, dones, next_q, next_q, None)
    with tf.GradientTape() as tape:
        loss, _ = td_loss(model(states, training=True), actions, targets, "huber")
    gradients = tape.gradient(loss, model.trainable_variables)
    flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in gradients])
    return np.asarray(targets), np.argmax(np.asarray(next_q), axis=1), flat


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare_updates(fp32, bf16, batches) -> dict:
    """Step 3: the two arithmetics on the same batches, beside the sampling noise of float32 gradients."""
    rows = []
    previous = None
    for batch in batches:
        t32, a32, g32 = update_pieces(fp32, batch)
        t16, a16, g16 = update_pieces(bf16, batch)
        q = np.asarray(fp32(batch.next_states, training=False))
        top2 = np.sort(q, axis=1)[:, -2:]
        rows.append({"target_abs_diff": float(np.median(np.abs(t16 - t32))),
                     "action_gap": float(np.median(top2[:, 1] - top2[:, 0])),
                     "next_action_agreement": float(np.mean(a16 == a32)),
                     "gradient_cosine": cosine(g16, g32),
                     "gradient_relative_error": float(np.linalg.norm(g16 - g32) / np.linalg.norm(g32)),
                     "sampling_cosine": None if previous is None else cosine(g32, previous)})
        previous = g32
    summary = {key: float(np.median([r[key] for r in rows if r[key] is not None])) for key in rows[0]}
    summary["batches"] = len(rows)
    return summary


def fine_tune(weights, precision: str, batches, sync_every: int):
    """Step 4: Adam updates from the shipped weights with ``precision``'s learner; the float32 model after."""
    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_learner

    config = resolve({"precision": precision, "xla": False})
    learner = make_learner(config, keras_twin(weights, precision), keras_twin(weights, precision))
    started = time.perf_counter()
    for index, batch in enumerate(batches):
        if index % sync_every == 0:
            learner.sync_target()
        learner.update(batch)
    return learner.export_model(), time.perf_counter() - started


def flat_weights(model) -> np.ndarray:
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in model.get_weights()])


def held_out_loss(model, batches) -> float:
    import tensorflow as tf

    from breakout_dqn.training.losses import td_loss, td_targets

    losses = []
    for states, actions, returns, discounts, dones, next_states in batches:
        next_q = model(next_states, training=False)
        targets = td_targets(returns, discounts, dones, next_q, next_q, None)
        losses.append(float(td_loss(model(states, training=False), actions, tf.constant(targets), "huber")[0]))
    return float(np.mean(losses))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the shipped ONNX model (dueling)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--replay-steps", type=int, default=40_000, help="agent steps played into the replay")
    parser.add_argument("--batches", type=int, default=64, help="batches compared in step 3")
    parser.add_argument("--updates", type=int, default=1_000, help="updates of each fork in step 4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import keras

    from breakout_dqn.onnx_model import OnnxPolicy

    keras.utils.set_random_seed(args.seed)
    weights, policy = onnx_weights(args.model), OnnxPolicy(args.model)
    fp32, bf16 = keras_twin(weights, "float32"), keras_twin(weights, "bfloat16")
    replay = fill_replay(policy, args.replay_steps, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    probe = replay.sample(256, rng).states
    rebuilt = float(np.abs(np.asarray(fp32(probe)) - policy.q_values(probe)).max())
    assert rebuilt < 1e-4, f"the Keras rebuild is not the ONNX model: max |dq| {rebuilt}"
    batches = [replay.sample(32, rng) for _ in range(args.updates)]
    held_out = [replay.sample(32, rng) for _ in range(32)]
    result = {"model": str(args.model), "rebuild_max_abs_dq": rebuilt, "replay_transitions": len(replay),
              "update": compare_updates(fp32, bf16, batches[:args.batches])}
    start = flat_weights(fp32)
    reordered = [batches[i] for i in np.random.default_rng(args.seed + 2).permutation(len(batches))]
    forks = {"float32": fine_tune(weights, "float32", batches, sync_every=250),
             "bfloat16": fine_tune(weights, "bfloat16", batches, sync_every=250),
             "float32_reordered": fine_tune(weights, "float32", reordered, sync_every=250)}
    moved = {name: float(np.linalg.norm(flat_weights(model) - start)) for name, (model, _) in forks.items()}
    reference = flat_weights(forks["float32"][0])
    apart = {name: float(np.linalg.norm(flat_weights(model) - reference)) for name, (model, _) in forks.items()
             if name != "float32"}
    result["fine_tune"] = {
        "updates": args.updates, "moved": moved, "apart_from_float32": apart,
        "bfloat16_apart_over_reordering_apart": apart["bfloat16"] / apart["float32_reordered"],
        "held_out_loss": {"start": held_out_loss(fp32, held_out),
                          **{precision: held_out_loss(model, held_out) for precision, (model, _) in forks.items()}},
        "seconds": {precision: round(seconds, 1) for precision, (_, seconds) in forks.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
