"""The parity gate: prove that the ONNX model (onnxruntime) keeps the Keras model's policy.

Every export runs four checks; all must pass or nothing is written to ``--out``:

1. **Real stacks** (``MIN_REAL_STACKS`` = 10,000 or more): frame stacks from real Breakout games
   (ale-py vector env, Nature preprocessing, no-op starts), played by an epsilon-greedy mix of the
   Keras policy and random actions (``epsilon`` spread from 0.1 to 1.0 across the envs, so both
   on-policy and off-policy states appear). Keras and onnxruntime run the same batches of 512.
2. **Edge cases**: an all-0 stack and an all-255 stack (batch 1), one real stack (batch 1), 64
   uniform-noise stacks, and 1,024 real stacks in one batch (a large batch).
3. **Fingerprint**: onnxruntime reproduces the Keras Q-values stored in the model's own metadata
   (``export.fingerprint``): the exact check ``breakout-dqn verify`` repeats later.
4. **Behavioural parity**: one full game (5 lives, capped at the Nature 18,000 frames) played
   greedily by the Keras model and one by the ONNX model from the same seed (same no-op start),
   with FIRE after lost lives; the two action sequences must be identical. The Keras game also
   records what onnxruntime would have chosen on the very same observations (lockstep), which
   pinpoints the first differing step if the games diverge.

**Tolerances** (``ATOL``, ``RTOL``): every Q-value must satisfy
``|q_onnx - q_keras| <= 1e-5 + 1e-5*|q_keras| + allowance`` (float32 Q-values of a trained Breakout
agent reach ~10; measured drift on real stacks is ~1e-7..1e-6 absolute, ~1e-6 relative), and the
argmax must agree on every row except near-ties, where the Keras values of the two actions are
themselves within tolerance (``export.compare``). A game whose action sequences first differ at
such a near-tie passes and says so in the report; any other difference fails.

**Float32 rounding allowance.** Keras and onnxruntime both compute in float32, in different
summation orders, so each is off the exact Q-values by its own rounding, and the gate, which
compares the two, sees the sum. That rounding scales with the size of the terms summed, not with
the result: on uniform-noise stacks a trained dueling head sums terms of ~30 to a value of ~0.3,
and Keras alone is ~1e-5 off exact arithmetic, which is the whole of ``ATOL``. So for every case
the gate also runs the Keras model rebuilt in float64 with the same weights (``exact_q_function``)
and measures ``rounding = max |q_keras - q_exact|`` on that case; the allowance is
``ROUNDING_FACTOR * rounding`` (2: two float32 evaluations each ``rounding`` off exact can differ
by twice that). On real stacks ``rounding`` is ~1e-6, so the allowance barely moves the bound; a
conversion fault (a weight off by 0.1% of its spread moves Q by ~1e-4) is still far outside it.
The report gives each case's ``keras_rounding`` and ``onnx_rounding`` (ONNX vs exact) so a
failure says which side drifted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.export import fingerprint
from breakout_dqn.export.compare import Comparison, compare

ATOL = 1e-5
RTOL = 1e-5
ROUNDING_FACTOR = 2.0  # allowance = ROUNDING_FACTOR x the Keras model's own float32 rounding on the case
MIN_REAL_STACKS = 10_000
BATCH_SIZE = 512
LARGE_BATCH = 1024
NOISE_BATCH = 64
COLLECT_ENVS = 16
COLLECT_EPSILONS = (0.1, 1.0)  # per-env exploration rate, spread linearly over the envs

QFn = contract.QFn
"""Maps uint8 frame stacks ``[N,84,84,4]`` to float32 Q-values ``[N,4]``."""


def keras_q_function(model: Any) -> QFn:
    """A Keras model as a ``QFn``: one ``tf.function`` with a dynamic batch, inference mode."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *contract.STACK_SHAPE), tf.uint8, name=contract.INPUT_NAME)
    forward = tf.function(lambda frames: model(frames, training=False), input_signature=[spec])

    def q_values(frames: np.ndarray) -> np.ndarray:
        contract.check_frames(frames)
        return np.asarray(forward(frames), dtype=np.float32)

    return q_values


def exact_q_function(model: Any) -> QFn:
    """The Keras ``model`` rebuilt in float64 with its weights, as a ``QFn`` returning float64 Q-values.

    Every layer but the uint8 input is cloned with a float64 dtype policy (a mixed-precision
    model is computed in float64 too), so its Q-values are the exact ones both float32 models
    round. Used only to measure rounding (module docstring); it never decides an argmax.
    """
    import keras
    import tensorflow as tf

    def as_float64(layer: Any) -> Any:
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    exact = keras.models.clone_model(model, clone_function=as_float64)
    exact.set_weights([np.asarray(weight, dtype=np.float64) for weight in model.get_weights()])
    spec = tf.TensorSpec((None, *contract.STACK_SHAPE), tf.uint8, name=contract.INPUT_NAME)
    forward = tf.function(lambda frames: exact(frames, training=False), input_signature=[spec])

    def q_values(frames: np.ndarray) -> np.ndarray:
        contract.check_frames(frames)
        return np.asarray(forward(frames), dtype=np.float64)

    return q_values


def batched(q_fn: QFn, frames: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """``q_fn`` over ``frames`` uint8 ``[N,84,84,4]`` in batches; float32 ``[N,4]``."""
    return np.concatenate([q_fn(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)])


def collect_stacks(q_fn: QFn, count: int, *, seed: int = 0, num_envs: int = COLLECT_ENVS) -> np.ndarray:
    """Play real Breakout and return the first ``count`` observed stacks, uint8 ``[count,84,84,4]``.

    Env ``i`` takes a uniformly random action with probability ``epsilon_i`` (0.1..1.0), else the
    greedy action of ``q_fn``; FIRE is pressed after lost lives; finished games reset themselves.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    rng = np.random.default_rng(seed)
    epsilons = np.linspace(*COLLECT_EPSILONS, num=num_envs)
    stacks = np.empty((count, *contract.STACK_SHAPE), dtype=np.uint8)
    games = atari.GameStepper(atari.make_vector_env(num_envs, life_loss_info=False,
                                                    max_frames_per_episode=atari.NATURE_MAX_FRAMES))
    try:
        observations = games.reset(seed=seed)
        filled = 0
        while filled < count:
            frames = contract.channels_last(observations)
            take = min(num_envs, count - filled)
            stacks[filled:filled + take] = frames[:take]
            filled += take
            actions = atari.explore(np.argmax(q_fn(frames), axis=1), epsilons, rng)
            observations = games.step(actions).observations
    finally:
        games.close()
    return stacks


def distinct_count(stacks: np.ndarray) -> int:
    """Number of distinct stacks in uint8 ``[N,84,84,4]``."""
    return len({hashlib.blake2b(stack.tobytes(), digest_size=16).digest() for stack in stacks})


def edge_cases(real: np.ndarray) -> dict[str, np.ndarray]:
    """Named uint8 batches: all-0 and all-255 (batch 1), one real stack, noise, a large real batch."""
    zeros, full = fingerprint.edge_stacks()
    large = real[:LARGE_BATCH] if len(real) >= LARGE_BATCH else np.resize(real, (LARGE_BATCH, *contract.STACK_SHAPE))
    return {
        "zeros_batch1": zeros[None],
        "all255_batch1": full[None],
        "real_batch1": real[:1],
        f"noise_batch{NOISE_BATCH}": fingerprint.noise_stacks(seed=1, count=NOISE_BATCH),
        f"real_batch{LARGE_BATCH}": np.ascontiguousarray(large),
    }


def behavioural_parity(keras_q: QFn, onnx_q: QFn, *, seed: int = 0, atol: float = ATOL, rtol: float = RTOL,
                       max_frames: int = atari.NATURE_MAX_FRAMES) -> dict[str, Any]:
    """Play one greedy game with each model from ``seed``; compare the action sequences.

    Returns a JSON-ready dict: ``identical``, ``passed``, steps and scores of both games, the
    first differing step (or None) and whether it was a near-tie, and the lockstep Q comparison
    on the Keras game's observations.
    """
    keras_actions: list[np.ndarray] = []
    lockstep_onnx_actions: list[np.ndarray] = []
    q_keras: list[np.ndarray] = []
    q_onnx: list[np.ndarray] = []

    def keras_act(frames: np.ndarray) -> np.ndarray:
        q_k, q_o = keras_q(frames), onnx_q(frames)
        q_keras.append(q_k)
        q_onnx.append(q_o)
        keras_actions.append(np.argmax(q_k, axis=1))
        lockstep_onnx_actions.append(np.argmax(q_o, axis=1))
        return keras_actions[-1]

    onnx_actions: list[np.ndarray] = []

    def onnx_act(frames: np.ndarray) -> np.ndarray:
        onnx_actions.append(np.argmax(onnx_q(frames), axis=1))
        return onnx_actions[-1]

    def play(act: atari.ActFn) -> atari.GameResult:
        return atari.play_games(act, 1, seed=seed, num_envs=1, max_frames_per_episode=max_frames)[0]

    keras_game, onnx_game = play(keras_act), play(onnx_act)
    seq_k = np.concatenate(keras_actions)
    seq_o = np.concatenate(onnx_actions)
    lockstep = np.concatenate(lockstep_onnx_actions)
    q_k_all, q_o_all = np.concatenate(q_keras), np.concatenate(q_onnx)
    lockstep_cmp = compare(q_k_all, q_o_all, atol, rtol)
    differ = np.flatnonzero(seq_k[:len(seq_o)] != seq_o[:len(seq_k)])
    identical = len(seq_k) == len(seq_o) and len(differ) == 0
    first = int(differ[0]) if len(differ) else (None if identical else min(len(seq_k), len(seq_o)))
    near_tie: bool | None = None
    if first is not None and first < len(seq_k):
        # Same observation up to ``first``: the lockstep ONNX choice there explains the divergence.
        row_cmp = compare(q_k_all[first:first + 1], q_o_all[first:first + 1], atol, rtol)
        near_tie = bool(lockstep[first] != seq_k[first] and row_cmp.passed)
    return {
        "seed": seed,
        "max_frames": max_frames,
        "identical": identical,
        "passed": identical or bool(near_tie),
        "keras": dataclasses.asdict(keras_game),
        "onnx": dataclasses.asdict(onnx_game),
        "first_difference_step": first,
        "first_difference_near_tie": near_tie,
        "lockstep": dataclasses.asdict(lockstep_cmp),
    }


@dataclasses.dataclass
class GateReport:
    """Everything the gate measured; ``passed`` only if every part passed (JSON via ``to_json``)."""

    passed: bool
    failures: list[str]
    tolerance: dict[str, Any]
    real_stacks: dict[str, Any]
    edge_cases: dict[str, dict[str, Any]]
    fingerprint: dict[str, Any]
    behaviour: dict[str, Any]
    timings_s: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(name: str, result: Comparison, atol: float, rtol: float) -> str:
    allowance = f" + {result.allowance:.2g}" if result.allowance else ""
    return (f"{name}: max |dq| {result.max_abs_dq:.3g} ({result.max_tolerance_ratio:.3g}x the tolerance "
            f"{atol:g} + {rtol:g}*|q|{allowance}), argmax agreement {100 * result.argmax_agreement:.2f}%, "
            f"finite {result.finite}")


def judge(q_keras: np.ndarray, q_onnx: np.ndarray, q_exact: np.ndarray | None, atol: float,
          rtol: float) -> tuple[Comparison, dict[str, Any]]:
    """Compare ONNX with Keras on one case, allowing for Keras' float32 rounding when ``q_exact``
    (float64 Q-values of the same stacks) is given; returns the comparison and its JSON."""
    rounding: dict[str, float | None] = {"keras_rounding": None, "onnx_rounding": None}
    allowance = 0.0
    if q_exact is not None:
        keras_off = np.abs(np.asarray(q_keras, np.float64) - q_exact)
        onnx_off = np.abs(np.asarray(q_onnx, np.float64) - q_exact)
        rounding = {"keras_rounding": float(keras_off.max()),
                    "onnx_rounding": float(np.where(np.isfinite(onnx_off), onnx_off, np.inf).max())}
        if np.isfinite(keras_off).all():
            allowance = ROUNDING_FACTOR * float(keras_off.max())
    result = compare(q_keras, q_onnx, atol, rtol, allowance)
    return result, dataclasses.asdict(result) | rounding


def check_fingerprint(onnx_q: QFn, fingerprint_value: str | None, failures: list[str]) -> dict[str, Any]:
    """Check 3: the ONNX model reproduces the probe fingerprint stored at export; appends to ``failures``."""
    try:
        probe_cmp, decoded = fingerprint.check(onnx_q, fingerprint_value)
    except fingerprint.FingerprintError as error:
        failures.append(f"fingerprint: {error}")
        return {"passed": False, "error": str(error)}
    if not probe_cmp.passed:
        failures.append(_describe("fingerprint probe", probe_cmp, decoded.atol, decoded.rtol))
    return dataclasses.asdict(probe_cmp) | {"atol": decoded.atol, "rtol": decoded.rtol}


def run_gate(keras_q: QFn, onnx_q: QFn, stacks: np.ndarray, *, fingerprint_value: str | None, seed: int = 0,
             atol: float = ATOL, rtol: float = RTOL, min_stacks: int | None = None,
             max_frames: int = atari.NATURE_MAX_FRAMES, exact_q: QFn | None = None) -> GateReport:
    """Run checks 1-4 (module docstring) on real ``stacks`` uint8 ``[N,84,84,4]``.

    ``fingerprint_value`` is the model's ``breakout_dqn.parity_fingerprint`` metadata.
    ``min_stacks`` defaults to ``MIN_REAL_STACKS`` (read at call time). ``exact_q`` (float64
    Q-values, ``exact_q_function``) turns on the float32 rounding allowance; without it the
    allowance is 0.
    """
    min_stacks = MIN_REAL_STACKS if min_stacks is None else min_stacks
    contract.check_frames(stacks)
    failures: list[str] = []
    timings: dict[str, float] = {}

    started = time.perf_counter()
    def exact(frames: np.ndarray) -> np.ndarray | None:
        return None if exact_q is None else batched(exact_q, frames)

    real, real_json = judge(batched(keras_q, stacks), batched(onnx_q, stacks), exact(stacks), atol, rtol)
    timings["real_stacks"] = time.perf_counter() - started
    real_json |= {"distinct": distinct_count(stacks), "source": "real Breakout play"}
    if len(stacks) < min_stacks:
        failures.append(f"real stacks: {len(stacks)} compared, the gate needs at least {min_stacks}")
    if not real.passed:
        failures.append(_describe("real stacks", real, atol, rtol))

    started = time.perf_counter()
    edges: dict[str, dict[str, Any]] = {}
    for name, frames in edge_cases(stacks).items():
        result, edges[name] = judge(keras_q(frames), onnx_q(frames), exact(frames), atol, rtol)
        if not result.passed:
            failures.append(_describe(name, result, atol, rtol))
    timings["edge_cases"] = time.perf_counter() - started

    started = time.perf_counter()
    finger_json = check_fingerprint(onnx_q, fingerprint_value, failures)
    timings["fingerprint"] = time.perf_counter() - started

    started = time.perf_counter()
    behaviour = behavioural_parity(keras_q, onnx_q, seed=seed, atol=atol, rtol=rtol, max_frames=max_frames)
    timings["behaviour"] = time.perf_counter() - started
    if not behaviour["passed"]:
        failures.append(f"behaviour: greedy games from seed {seed} differ first at step "
                        f"{behaviour['first_difference_step']} (Keras {behaviour['keras']['steps']} steps, "
                        f"score {behaviour['keras']['score']:g}; ONNX {behaviour['onnx']['steps']} steps, "
                        f"score {behaviour['onnx']['score']:g})")
    return GateReport(
        passed=not failures,
        failures=failures,
        tolerance={"atol": atol, "rtol": rtol, "min_real_stacks": min_stacks,
                   "rounding_factor": ROUNDING_FACTOR if exact_q is not None else 0.0,
                   "rule": "|q_onnx - q_keras| <= atol + rtol*|q_keras| + rounding_factor*max|q_keras - q_float64| "
                           "element-wise (the max per case); argmax equal except near-ties"},
        real_stacks=real_json,
        edge_cases=edges,
        fingerprint=finger_json,
        behaviour=behaviour,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )
