"""PQN's JAX learner against the TensorFlow learner and a NumPy reference, and checkpoints across backends.

This process runs Keras' TensorFlow backend; a second process runs the JAX learner on the same initial
weights, rollout and minibatch stream (one backend per process: Keras picks it at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"preset": "pqn", "num_envs": 8, "rollout_steps": 8, "minibatches": 4, "epochs": 2, "xla": False}
SHUFFLE_SEED = 5


def fixed_rollout(transitions: int = 64) -> tuple[np.ndarray, ...]:
    """frames uint8 [T,84,84,4], actions int32 [T], Q(lambda) targets float32 [T], weights float32 [T]."""
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (transitions, 84, 84, 4), dtype=np.uint8)
    actions = rng.integers(0, 4, transitions).astype(np.int32)
    targets = rng.uniform(-1.0, 2.0, transitions).astype(np.float32)
    weights = (rng.random(transitions) > 0.2).astype(np.float32)  # some autoreset slots left out
    return frames, actions, targets, weights


def save_state(path: Path, state: dict[str, list[np.ndarray]]) -> None:
    np.savez(path, **{f"{part}_{index}": array for part, arrays in state.items() for index, array in enumerate(arrays)})


def load_state(path: Path) -> dict[str, list[np.ndarray]]:
    with np.load(path) as saved:
        return {part: [saved[f"{part}_{index}"] for index in range(sum(k.startswith(f"{part}_") for k in saved))]
                for part in ("online", "target", "optimizer")}


# Runs in a second process under KERAS_BACKEND=jax: loads the TensorFlow learner's initial state, trains
# on the same rollout with the same minibatch stream, and writes its losses, Q-values and final state.
JAX_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
import keras
from tests.training.test_jax_pqn import SETTINGS, SHUFFLE_SEED, fixed_rollout, load_state, save_state
from breakout_dqn.training.config import resolve
from breakout_dqn.training.learners import build_learner
from breakout_dqn.training.learners.jax_pqn import JaxPQNLearner
assert keras.backend.backend() == "jax"
work = Path(sys.argv[2])
learner = build_learner(resolve(SETTINGS))
assert isinstance(learner, JaxPQNLearner)
learner.load_state(load_state(work / "initial.npz"))
rollout = fixed_rollout()
losses, mean_qs = learner.train_rollout(*rollout, np.random.default_rng(SHUFFLE_SEED))
greedy, values = learner.act_with_values(rollout[0][:16])
save_state(work / "jax_final.npz", learner.state())
np.save(work / "jax_values.npy", values)
print(json.dumps({"losses": losses, "mean_qs": mean_qs, "greedy": greedy.tolist()}))
"""


def numpy_loss(q_values: np.ndarray, actions: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    """PQN's loss from its definition: the mean squared TD error over the real transitions."""
    taken = q_values[np.arange(len(actions)), actions]
    return float(np.sum(weights * (targets - taken) ** 2) / max(np.sum(weights), 1.0))


@pytest.mark.jax
@pytest.mark.slow  # a second process loads JAX and Keras
def test_the_jax_learner_trains_as_the_tensorflow_learner_and_their_checkpoints_swap(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    import keras

    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import build_learner
    from breakout_dqn.training.rollout import minibatch_rows

    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(0)
    learner = build_learner(resolve(SETTINGS))
    save_state(tmp_path / "initial.npz", learner.state())
    rollout = fixed_rollout()
    frames, actions, targets, weights = rollout
    first_rows = minibatch_rows(np.random.default_rng(SHUFFLE_SEED), len(frames), 4, 2)[0]
    initial_q = np.asarray(learner.online(frames[first_rows]))
    tf_losses, tf_mean_qs = learner.train_rollout(*rollout, np.random.default_rng(SHUFFLE_SEED))

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(ROOT), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_run = json.loads(result.stdout.strip().splitlines()[-1])

    # The first minibatch's loss is the NumPy definition's, on both backends (same rows, same weights).
    expected = numpy_loss(initial_q, actions[first_rows], targets[first_rows], weights[first_rows])
    assert tf_losses[0] == pytest.approx(expected, rel=1e-4)
    assert jax_run["losses"][0] == pytest.approx(expected, rel=1e-4)
    # Then the same 8 steps (RAdam, global clip 10, LayerNorm): float32 rounding apart, the same run.
    assert len(jax_run["losses"]) == len(tf_losses) == 8 and tf_losses[-1] < tf_losses[0]
    np.testing.assert_allclose(jax_run["losses"], tf_losses, rtol=1e-3)
    np.testing.assert_allclose(jax_run["mean_qs"], tf_mean_qs, rtol=1e-3, atol=1e-5)
    jax_state = load_state(tmp_path / "jax_final.npz")
    tf_state = learner.state()
    for part in ("online", "optimizer"):
        assert len(jax_state[part]) == len(tf_state[part])
        for got, want in zip(jax_state[part], tf_state[part], strict=True):
            # jax keeps the step counter in int32 (64-bit types are off), TensorFlow in int64: each loads the other's
            assert got.shape == want.shape and got.dtype.kind == want.dtype.kind, part
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=part)
    # The JAX learner's checkpoint arrays load into the TensorFlow learner and act the same.
    learner.load_state(jax_state)
    greedy, values = learner.act_with_values(frames[:16])
    np.testing.assert_allclose(values, np.load(tmp_path / "jax_values.npy"), atol=1e-5)
    assert greedy.tolist() == jax_run["greedy"]
