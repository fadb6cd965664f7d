"""The compiled DQN update: target math, and a step that lowers the TD loss on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.training.replay import Batch


def fixed_batch(seed: int = 0, size: int = 32) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        states=rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8),
        actions=rng.integers(0, 4, size).astype(np.int32),
        returns=rng.choice([0.0, 1.0, 1.99], size).astype(np.float32),
        discounts=np.where(rng.random(size) < 0.2, 0.0, 0.99**3).astype(np.float32),
        dones=np.zeros(size, np.float32),
        next_states=rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8),
    )


def test_td_targets_match_a_numpy_reference() -> None:
    from keras import ops

    from breakout_dqn.training.losses import td_targets

    rng = np.random.default_rng(0)
    next_target = rng.normal(size=(6, 4)).astype(np.float32)
    next_online = rng.normal(size=(6, 4)).astype(np.float32)
    returns = rng.normal(size=6).astype(np.float32)
    discounts = np.array([0.97, 0, 0.97, 0.97, 0, 0.97], np.float32)
    dones = (discounts == 0).astype(np.float32)
    double = ops.convert_to_numpy(td_targets(returns, discounts, dones, next_target, next_online, None))
    expected_double = returns + discounts * next_target[np.arange(6), next_online.argmax(1)]
    np.testing.assert_allclose(double, expected_double, rtol=1e-6)
    nature = ops.convert_to_numpy(td_targets(returns, discounts, dones, next_target, None, None))
    np.testing.assert_allclose(nature, returns + discounts * next_target.max(1), rtol=1e-6)
    forced = ops.convert_to_numpy(td_targets(returns, discounts, dones, next_target, None, -1.0))
    np.testing.assert_allclose(forced[dones == 1], -1.0)
    np.testing.assert_allclose(forced[dones == 0], nature[dones == 0], rtol=1e-6)


def test_td_loss_is_huber_or_the_mean_squared_error() -> None:
    from keras import ops

    from breakout_dqn.training.losses import td_loss

    q_values = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    actions = np.array([3, 0], np.int32)
    targets = np.array([5.0, 1.5], np.float32)  # errors 2.0 and 0.5
    huber, taken = td_loss(q_values, actions, targets, "huber")
    mse, _ = td_loss(q_values, actions, targets, "mse")
    np.testing.assert_allclose(ops.convert_to_numpy(taken), [3.0, 1.0])
    assert float(huber) == pytest.approx(((2.0 - 0.5) + 0.5 * 0.5**2) / 2)
    assert float(mse) == pytest.approx((2.0**2 + 0.5**2) / 2)
    with pytest.raises(ValueError, match="unknown loss"):
        td_loss(q_values, actions, targets, "l1")


# `cleanrl` is `default` with the MSE loss, which test_td_loss_is_huber_or_the_mean_squared_error checks.
@pytest.mark.parametrize("preset", ["default", "rainbow-lite", "keras-example"])
def test_tensorflow_train_step_lowers_the_td_loss_on_a_fixed_batch(preset: str) -> None:
    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_learner
    from breakout_dqn.training.model import build_q_network

    # The trainer's XLA path for the default; the other presets differ in their loss, targets, head and
    # optimizer, which the uncompiled oneDNN path checks without paying for another XLA compilation.
    config = resolve({"preset": preset, "xla": preset == "default"})
    online, target = build_q_network(config.dueling), build_q_network(config.dueling)
    learner = make_learner(config, online, target)
    learner.sync_target()
    batch = fixed_batch()
    first, _ = learner.update(batch)
    for _ in range(40):
        last, _ = learner.update(batch)
    assert last < 0.5 * first
    greedy = learner.act(batch.states[:8])
    assert greedy.shape == (8,) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy, np.argmax(online(batch.states[:8]), axis=1))


JAX_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from tests.training.test_learner import fixed_batch
from breakout_dqn.training.config import resolve
from breakout_dqn.training.learners import make_learner
from breakout_dqn.training.model import build_q_network
import keras
assert keras.backend.backend() == "jax"
config = resolve({})
online, target = build_q_network(config.dueling), build_q_network(config.dueling)
learner = make_learner(config, online, target)
learner.sync_target()
batch = fixed_batch()
losses = [learner.update(batch)[0] for _ in range(38)]
fused_losses, _, greedy = learner.update_and_act([batch, batch], batch.states[:8])
losses += fused_losses
assert greedy.shape == (8,)
learner.sync_to_model()
online.save(sys.argv[2])
np.save(sys.argv[3], np.asarray(online(batch.states[:16])))
print(json.dumps({"first": losses[0], "last": losses[-1]}))
"""


@pytest.mark.jax
@pytest.mark.slow  # a second process loads JAX and Keras
def test_jax_backend_train_step_lowers_the_loss_and_its_model_loads_under_tensorflow(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    from breakout_dqn.training.model import load_q_network

    root = Path(__file__).resolve().parents[2]
    model_path, q_path = tmp_path / "jax.keras", tmp_path / "q.npy"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(root), str(model_path), str(q_path)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["last"] < 0.5 * losses["first"]
    model = load_q_network(model_path)  # this process runs the TensorFlow backend
    np.testing.assert_allclose(np.asarray(model(fixed_batch().states[:16])), np.load(q_path), atol=1e-5)


def test_fused_update_and_act_equals_sequential_updates_then_act() -> None:
    import keras

    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_learner
    from breakout_dqn.training.model import build_q_network

    config = resolve({"xla": False})  # what fusing does is the same with XLA; its compilation is tested above
    learners = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        online, target = build_q_network(config.dueling), build_q_network(config.dueling)
        learners.append(make_learner(config, online, target))
    fused, sequential = learners
    batches = [fixed_batch(seed) for seed in (1, 2)]
    frames = fixed_batch(3).states[:8]
    losses, _, greedy = fused.update_and_act(batches, frames)
    expected_losses = [sequential.update(batch)[0] for batch in batches]
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for got, want in zip(fused.state()["online"], sequential.state()["online"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(greedy, sequential.act(frames))


@pytest.mark.parametrize("settings", [{"preset": "default"}, {"preset": "rainbow-lite"},
                                      {"preset": "default", "optimizer": "radam"}],
                         ids=["adam", "adam-global-clip", "radam"])
def test_the_fused_optimizer_step_is_the_optimizers_own_step(settings: dict, monkeypatch) -> None:
    # On the oneDNN path the optimizer's step runs as its own XLA cluster (faster); it must leave the
    # weights and the optimizer's state where Keras' own apply does, to float32 rounding.
    import keras

    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_learner, tensorflow_dqn
    from breakout_dqn.training.model import build_q_network

    config = resolve({**settings, "precision": "float32", "xla": False})

    def learner(step_maker):
        monkeypatch.setattr(tensorflow_dqn, "optimizer_step", step_maker)
        keras.utils.set_random_seed(3)
        built = make_learner(config, build_q_network(config.dueling), build_q_network(config.dueling))
        built.sync_target()
        for seed in (1, 2, 3):
            built.update(fixed_batch(seed))
        return built.state()

    fused = learner(tensorflow_dqn.optimizer_step)
    keras_own = learner(lambda optimizer, variables, xla: lambda gradients: optimizer.apply(gradients, variables))
    for part in ("online", "optimizer"):
        for got, want in zip(fused[part], keras_own[part], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert any(not np.array_equal(a, b) for a, b in zip(fused["online"], fused["target"], strict=True))  # it moved


def test_a_bfloat16_network_trains_in_float32_weights_and_saves_as_a_float32_copy() -> None:
    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_learner
    from breakout_dqn.training.model import build_q_network, float32_copy

    config = resolve({"preset": "cleanrl", "precision": "bfloat16", "xla": False})
    online = build_q_network(config.dueling, precision="bfloat16")
    target = build_q_network(config.dueling, precision="bfloat16")
    assert online.get_layer("conv1").compute_dtype == "bfloat16"
    assert all(str(weight.dtype) == "float32" for weight in online.weights)
    learner = make_learner(config, online, target)
    learner.sync_target()
    batch = fixed_batch(size=16)
    first, _ = learner.update(batch)
    for _ in range(30):
        last, _ = learner.update(batch)
    assert last < 0.5 * first
    artifact = float32_copy(online, config.dueling)
    assert artifact is not online
    assert {layer.dtype_policy.name for layer in artifact.layers} == {"float32"}
    for got, want in zip(artifact.get_weights(), online.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    q_bf16 = np.asarray(online(batch.states))
    q_fp32 = np.asarray(artifact(batch.states))
    assert q_fp32.dtype == np.float32 and q_bf16.dtype == np.float32
    np.testing.assert_allclose(q_bf16, q_fp32, atol=0.05 * np.abs(q_fp32).max() + 1e-3)
    float_model = build_q_network(config.dueling)
    assert float32_copy(float_model, config.dueling) is float_model


@pytest.mark.parametrize("preset", ["default", "pqn"])
def test_the_learning_rate_decays_linearly_to_zero_over_the_agent_steps_worth_of_updates(preset: str) -> None:
    # What the guide and the LR-decay fork's record say the flag does: linear from --learning-rate at
    # the first update to 0 after --learning-rate-decay-steps agent steps' worth of updates (DQN: one
    # per 4 agent steps, so 2.7e-5 at the fork's 730,000th update of 1,000,000).
    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_optimizer, updates_per_agent_step

    config = resolve({"preset": preset, "learning_rate_decay_steps": 4_000_000})
    optimizer = make_optimizer(config)
    total = round(4_000_000 * updates_per_agent_step(config))
    for fraction in (0.0, 0.25, 0.73, 1.0, 1.5):
        optimizer.iterations.assign(int(fraction * total))  # the update count a resumed piece restores
        assert float(optimizer.learning_rate) == pytest.approx(
            config.learning_rate * max(0.0, 1 - fraction), rel=1e-5, abs=1e-12)
    constant = make_optimizer(resolve({"preset": preset}))
    assert float(constant.learning_rate) == pytest.approx(config.learning_rate)
