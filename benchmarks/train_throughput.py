"""Trainer throughput of each preset, as ratios against the ``cleanrl`` preset measured in the same run.

For every preset asked for, the real trainer (``breakout-dqn train``) runs a short piece into a
temporary directory and its own ``metrics.jsonl`` gives the agent steps/s of the learning phase
(after the first log window, which holds XLA compilation). For DQN presets the isolated compiled
update (batch 32, warmed up) is timed too, and the efficiency is steps/s * t_update / train_frequency
(1.0 = every cycle spent in updates). For PQN the loop's own timers split each rollout into acting
+ games, Q(lambda) targets and training epochs. ``cleanrl`` is the baseline: the same update as
CleanRL's dqn_atari.py (~100 agent steps/s on 2 cores, measured apart from this project), run here. Each
preset runs on its default compute path for this CPU (``--precision auto``: training/compute_path.py),
named in its row; ``--paths`` adds the isolated update of each ``--path-presets`` preset (``cleanrl``
unless told) on each path, ``--paths-only`` that alone (no trainer runs), ``--trainer-paths``
each preset's whole trainer on float32 + XLA, float32 + oneDNN and bfloat16 + oneDNN, and
``--optimizer-step`` the optimizer's step alone on the oneDNN paths, Keras' own against the one
the learners run there (its own XLA cluster), in interleaved rounds.

Usage: python benchmarks/train_throughput.py [--presets pqn default rainbow-lite] [--dqn-steps 6000]
       [--pqn-steps 32768] [--paths] [--path-presets cleanrl default] [--paths-only] [--trainer-paths]
       [--optimizer-step] [--keras-example-steps 0]
       [--json results/train_throughput.json]
Pause any training run first (SIGSTOP): the figures are only valid on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LOG_EVERY = {"dqn": 1000, "pqn": 4096}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
TRAINER_PATHS = (("float32", True), ("float32", False), ("bfloat16", False))  # (precision, xla)
WARM_UP_STEPS = 1000  # DQN: random steps before learning, kept short


def isolated_update_seconds(preset: str, repeats: int = 30, **settings) -> float:
    """Best-of-3 mean time of one compiled DQN update of the preset's network (batch as configured)."""
    import numpy as np

    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import build_learner
    from breakout_dqn.training.replay import Batch

    config = resolve({"preset": preset, **settings})
    rng = np.random.default_rng(0)
    size = config.batch_size
    batch = Batch(rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8), rng.integers(0, 4, size).astype(np.int32),
                  rng.random(size).astype(np.float32), np.full(size, 0.97, np.float32), np.zeros(size, np.float32),
                  rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8))
    learner = build_learner(config)
    for _ in range(10):
        learner.update(batch)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats // 3):
            learner.update(batch)
        best = min(best, (time.perf_counter() - started) / (repeats // 3))
    return best


def optimizer_step_milliseconds(precision: str, optimizer: str, rounds: int = 5, repeats: int = 40) -> dict:
    """The optimizer's step over the default network's weights on the oneDNN path, as Keras runs it
    (``optimizer.apply`` in a ``tf.function``) and as the learners run it (``optimizer_step``: its own
    XLA cluster); medians of ``rounds`` interleaved rounds of ``repeats`` steps each."""
    import statistics

    import tensorflow as tf

    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.learners import make_optimizer
    from breakout_dqn.training.learners.tensorflow_dqn import optimizer_step
    from breakout_dqn.training.model import build_q_network

    config = resolve({"precision": precision, "xla": False, "optimizer": optimizer})
    variables = build_q_network(precision=precision).trainable_variables
    gradients = [tf.random.normal(v.shape, stddev=1e-3, seed=index) for index, v in enumerate(variables)]
    steps = {}
    for name, fused in (("keras", False), ("fused", True)):
        built = make_optimizer(config)
        built.build(variables)
        # xla=True gives Keras' own apply, which an update compiled whole by XLA calls; here it runs in
        # a plain tf.function, as it did on the oneDNN path before.
        steps[name] = optimizer_step(built, variables, xla=False) if fused else tf.function(
            optimizer_step(built, variables, xla=True))
        for _ in range(5):
            steps[name](gradients)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(repeats):
                step(gradients)
            times[name].append((time.perf_counter() - started) / repeats * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def trainer_run(preset: str, steps: int, extra_flags: tuple[str, ...] = ()) -> dict:
    """Run the real trainer; return steps/s over the learning phase after its first log window, and the
    compute path it took (its default for this CPU unless ``extra_flags`` give one)."""
    from breakout_dqn.training.config import resolve

    algorithm = resolve({"preset": preset}).algorithm
    log_every = LOG_EVERY[algorithm]
    flags = ["--preset", preset, "--steps", str(steps), "--eval-every", "0", "--final-eval-episodes", "1",
             "--log-every", str(log_every), "--checkpoint-every", str(10 * steps), "--no-progress", *extra_flags]
    first_learning_step = 0
    if algorithm == "dqn":
        first_learning_step = WARM_UP_STEPS
        flags += ["--learning-starts", str(WARM_UP_STEPS), "--random-steps", str(WARM_UP_STEPS),
                  "--replay-capacity", "100000", "--no-durable-replay"]
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "run"
        subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "train", "--out", str(out), *flags], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train" and r["step"] > first_learning_step + log_every]
    if not train:
        raise SystemExit(f"train_throughput: {steps:,} agent steps of {preset} leave no log window after the "
                         f"first one past step {first_learning_step:,}: give at least "
                         f"{first_learning_step + 3 * log_every:,}")
    seconds = sum(log_every / r["steps_per_second"] for r in train)
    result = {"preset": preset, "algorithm": algorithm, "steps_per_second": len(train) * log_every / seconds,
              "measured_steps": len(train) * log_every, "compute": train[-1].get("compute")}
    if algorithm == "pqn":
        phases = {phase: sum(r[f"seconds_{phase}"] for r in train) for phase in ("rollout", "targets", "training")}
        result["phase_ms_per_1000_steps"] = {phase: round(1e6 * value / result["measured_steps"], 1)
                                             for phase, value in phases.items()}
    return result


def keras_example_steps_per_second(steps: int) -> float:
    """The notebook's loop, faithfully: lists of float stacks, eager tape update, a model call per step."""
    import ale_py
    import gymnasium as gym
    import numpy as np
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, scale_obs=True, terminal_on_life_loss=True)
    env = gym.wrappers.FrameStackObservation(env, 4)

    def create_q_model():
        inputs = layers.Input(shape=(84, 84, 4))
        x = layers.Conv2D(32, 8, strides=4, activation="relu")(inputs)
        x = layers.Conv2D(64, 4, strides=2, activation="relu")(x)
        x = layers.Conv2D(64, 3, strides=1, activation="relu")(x)
        x = layers.Dense(512, activation="relu")(layers.Flatten()(x))
        return keras.Model(inputs=inputs, outputs=layers.Dense(4, activation="linear")(x))

    model, model_target = create_q_model(), create_q_model()
    optimizer = keras.optimizers.Adam(learning_rate=0.00025, clipnorm=1.0)
    loss_function = keras.losses.Huber()
    states, next_states, actions, rewards, dones = [], [], [], [], []
    state = np.moveaxis(np.array(env.reset(seed=0)[0]), 0, -1)
    warmup, started = 100, None
    for frame_count in range(1, warmup + steps + 1):
        if frame_count == warmup:
            started = time.perf_counter()
        if np.random.rand() < 0.1:
            action = np.random.choice(4)
        else:
            action = int(tf.argmax(model(tf.expand_dims(tf.convert_to_tensor(state), 0), training=False)[0]))
        next_state, reward, terminated, truncated, _ = env.step(action)
        next_state = np.moveaxis(np.array(next_state), 0, -1)
        states.append(state)
        next_states.append(next_state)
        actions.append(action)
        rewards.append(reward)
        dones.append(terminated or truncated)
        state = next_state
        if terminated or truncated:
            state = np.moveaxis(np.array(env.reset()[0]), 0, -1)
        if frame_count % 4 == 0 and len(dones) > 32:
            indices = np.random.choice(range(len(dones)), size=32)
            state_sample = np.array([states[i] for i in indices])
            next_sample = np.array([next_states[i] for i in indices])
            reward_sample = [rewards[i] for i in indices]
            action_sample = [actions[i] for i in indices]
            done_sample = tf.convert_to_tensor([float(dones[i]) for i in indices])
            future = model_target.predict(next_sample, verbose=0)
            updated = reward_sample + 0.99 * tf.reduce_max(future, axis=1)
            updated = updated * (1 - done_sample) - done_sample
            masks = tf.one_hot(action_sample, 4)
            with tf.GradientTape() as tape:
                q_action = tf.reduce_sum(tf.multiply(model(state_sample), masks), axis=1)
                loss = loss_function(updated, q_action)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    env.close()
    assert started is not None
    return steps / (time.perf_counter() - started)


UPDATE_PATHS = (("float32", True), ("float32", False), ("bfloat16", False), ("bfloat16", True))  # (precision, xla)


def update_paths(presets: list[str]) -> list[dict]:
    """Each preset's isolated update on each compute path, printed with its speed against the same
    preset's float32 + XLA update (the baseline, measured first) and the path ``auto`` takes here."""
    from breakout_dqn.training.compute_path import cpu_flags, fastest_path, path_name
    from breakout_dqn.training.config import resolve

    flags = cpu_flags()
    print(f"cpu: {cpu_name()}; flags: avx512f={'avx512f' in flags}, avx512_bf16={'avx512_bf16' in flags}, "
          f"amx_bf16={'amx_bf16' in flags}")
    results = []
    for preset in presets:
        config = resolve({"preset": preset})
        auto = path_name(*fastest_path(config.algorithm, flags))
        reference_ms = None
        for precision, xla in UPDATE_PATHS:
            milliseconds = isolated_update_seconds(preset, precision=precision, xla=xla) * 1000
            reference_ms = reference_ms or milliseconds
            path = path_name(precision, xla)
            results.append({"preset": preset, "path": path, "t_update_ms": milliseconds,
                            "x_float32_xla": reference_ms / milliseconds, "auto": path == auto})
            print(f"{preset} update, {path:<16} {milliseconds:6.1f} ms  x{reference_ms / milliseconds:.2f} the "
                  f"speed of float32/XLA{'  (--precision auto takes it here)' if path == auto else ''}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["pqn", "default", "rainbow-lite"],
                        choices=["pqn", "default", "cleanrl", "rainbow-lite", "keras-example"])
    parser.add_argument("--dqn-steps", type=int, default=6000, help="agent steps per DQN trainer run")
    parser.add_argument("--pqn-steps", type=int, default=32768, help="agent steps of the PQN trainer run")
    parser.add_argument("--keras-example-steps", type=int, default=0, help="the notebook's own loop; 0 = skip")
    parser.add_argument("--paths", action="store_true",
                        help="also time the --path-presets' update on each compute path (XLA or oneDNN, "
                             "float32 or bfloat16)")
    parser.add_argument("--path-presets", nargs="+", default=["cleanrl"],
                        choices=["default", "cleanrl", "rainbow-lite", "keras-example"],
                        help="the DQN presets whose update --paths times on each path")
    parser.add_argument("--paths-only", action="store_true",
                        help="only time the updates of --path-presets on each path (no trainer runs)")
    parser.add_argument("--trainer-paths", action="store_true",
                        help="also run each preset's trainer on float32/XLA, float32/oneDNN and bfloat16/oneDNN")
    parser.add_argument("--optimizer-step", action="store_true",
                        help="also time the optimizer's step on the oneDNN paths: Keras' own against the fused one")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    presets = list(dict.fromkeys(["cleanrl", *args.presets]))  # the baseline first
    from breakout_dqn.training.config import resolve

    if args.paths_only:
        results = update_paths(args.path_presets)
        if args.json:
            args.json.write_text(json.dumps({"machine": cpu_name(), "cpus": os.cpu_count(),
                                             "baseline": "each preset's float32 + XLA update",
                                             "results": results}, indent=2) + "\n")
        return
    results = []
    for preset in presets:
        config = resolve({"preset": preset})
        result = trainer_run(preset, args.pqn_steps if config.algorithm == "pqn" else args.dqn_steps)
        if config.algorithm == "dqn":
            result["t_update_ms"] = isolated_update_seconds(preset) * 1000
            result["efficiency"] = result["steps_per_second"] * result["t_update_ms"] / 1000 / config.train_frequency
        results.append(result)
    baseline = results[0]["steps_per_second"]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; baseline: cleanrl preset "
          f"(CleanRL dqn_atari's update), {baseline:.1f} agent steps/s")
    print(f"{'preset':<14}{'algorithm':<10}{'steps/s':>9}{'x cleanrl':>10}  details")
    for result in results:
        details = ""
        if "t_update_ms" in result:
            details = (f"{result['compute']}: update {result['t_update_ms']:.1f} ms, "
                       f"efficiency {result['efficiency']:.2f}")
        if "phase_ms_per_1000_steps" in result:
            phases = result["phase_ms_per_1000_steps"]
            details = f"{result['compute']}: " + ", ".join(
                f"{phase} {value:.0f} ms" for phase, value in phases.items()) + " per 1,000 steps"
        print(f"{result['preset']:<14}{result['algorithm']:<10}{result['steps_per_second']:>9.1f}"
              f"{result['steps_per_second'] / baseline:>10.2f}  {details}")
    if args.paths:
        results.extend(update_paths(args.path_presets))
    if args.optimizer_step:  # the step the learners fuse into one XLA cluster on the oneDNN path
        for precision in ("float32", "bfloat16"):
            for optimizer in ("adam", "radam"):
                step = optimizer_step_milliseconds(precision, optimizer)
                results.append({"optimizer_step": f"{optimizer}, {precision} oneDNN", **step})
                print(f"{optimizer:<5} step, {precision:<8} oneDNN: Keras' own {step['keras']:5.2f} ms, fused "
                      f"{step['fused']:5.2f} ms: x{step['keras'] / step['fused']:.2f} as fast")
    if args.trainer_paths:  # the whole trainer, not only its update, on each path
        from breakout_dqn.training.compute_path import path_name

        for result in [r for r in results if r.get("preset") in args.presets]:
            steps = args.pqn_steps if result["algorithm"] == "pqn" else args.dqn_steps
            for precision, xla in TRAINER_PATHS:
                path = path_name(precision, xla)  # as the trainer logs it in result["compute"]
                if path == result["compute"]:
                    continue  # its default path, measured above
                other = trainer_run(result["preset"], steps, ("--precision", precision, "--xla" if xla else "--no-xla"))
                results.append({**other, "preset": f"{result['preset']} on {path}"})
                speed_up = result["steps_per_second"] / other["steps_per_second"]
                print(f"{result['preset']} trainer on {path:<16}{other['steps_per_second']:7.1f} agent steps/s: "
                      f"its default path ({result['compute']}) runs x{speed_up:.2f} as fast")
    if args.keras_example_steps:
        example = keras_example_steps_per_second(args.keras_example_steps)
        results.append({"preset": "keras-example notebook loop", "steps_per_second": example})
        print(f"{'notebook loop':<24}{example:>9.1f}{example / baseline:>10.2f}  the Keras example's own loop")
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_name(), "cpus": os.cpu_count(),
                                         "baseline": "cleanrl", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
