"""Training configuration: one typed dataclass, its presets, every field a CLI flag."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _flag(help_text: str, choices: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text, "choices": choices}, **kwargs)


@dataclass
class TrainConfig:
    """Every setting of a run. Units: 1 agent step = 4 emulator frames, per env."""

    preset: str = _flag(
        "settings bundle applied before explicit flags: default | cleanrl | rainbow-lite | pqn | keras-example",
        default="default")
    algorithm: str = _flag(
        "dqn (replay + target network) | pqn (no replay, no target network: Q(lambda) over short rollouts of "
        "many games)", choices=("dqn", "pqn"), default="dqn")
    out: str = _flag("run directory (model.keras, config.json, metrics.jsonl, checkpoints/, eval.json, tb/)",
                     default="runs/breakout")
    resume: bool = _flag("continue the run in --out from its latest checkpoint", default=False)
    auto_resume: bool = _flag(
        "continue the run in --out if it holds this run's checkpoints, start it if --out is empty, refuse if "
        "--out holds another run (a restarted batch job's command line)", default=False)
    steps: int = _flag("total agent steps over all envs (1 step = 4 frames)", default=1_000_000)
    seed: int = _flag("seed for envs, network init, exploration and sampling", default=0)
    num_envs: int = _flag("Breakout games stepped together by ale-py's C++ vector env", default=8)
    # Replay
    replay_capacity: int = _flag("transitions kept (1M fits in about 7.1 GB: one 84x84 uint8 frame each)",
                                 default=1_000_000)
    durable_replay: bool = _flag(
        "keep the replay memory-mapped in OUT/replay (as much disk as memory) so --resume continues with it",
        default=True)
    batch_size: int = _flag("transitions per update", default=32)
    n_step: int = _flag("n-step return length (Sutton 1988; Rainbow uses 3)", default=1)
    gamma: float = _flag("discount per agent step", default=0.99)
    # PQN (Gallici et al. 2024): on-policy rollouts instead of replay
    rollout_steps: int = _flag("PQN: agent steps per game in each rollout", default=32)
    minibatches: int = _flag("PQN: minibatches per epoch over a rollout", default=32)
    epochs: int = _flag("PQN: passes over each rollout", default=2)
    q_lambda: float = _flag("PQN: lambda of the Q(lambda) targets", default=0.65)
    # Schedule
    learning_starts: int = _flag("agent steps collected before the first update", default=80_000)
    random_steps: int = _flag("agent steps of uniformly random actions at the start", default=0)
    train_frequency: int = _flag("agent steps per gradient update", default=4)
    target_update: int = _flag("agent steps between target-network syncs", default=1_000)
    epsilon_start: float = _flag("exploration rate at step 0", default=1.0)
    epsilon_end: float = _flag("exploration rate after the decay", default=0.01)
    epsilon_decay_steps: int = _flag(
        "agent steps of linear epsilon decay from step 0 (absolute: how a run is split does not change it)",
        default=100_000)
    # Optimiser and loss
    optimizer: str = _flag("adam | radam (Liu et al. 2020; PQN's)", choices=("adam", "radam"), default="adam")
    learning_rate: float = _flag("optimizer learning rate", default=1e-4)
    learning_rate_decay_steps: int = _flag(
        "agent steps of linear learning-rate decay to 0 from step 0 (absolute); 0 = constant", default=0)
    adam_epsilon: float = _flag("Adam / RAdam epsilon", default=1e-8)
    clipnorm: float = _flag("clip each gradient tensor to this L2 norm; 0 = off", default=0.0)
    global_clipnorm: float = _flag("clip the global gradient L2 norm; 0 = off", default=0.0)
    loss: str = _flag("TD loss: huber (Nature DQN) | mse (CleanRL)", choices=("huber", "mse"), default="huber")
    double_dqn: bool = _flag("Double DQN targets (van Hasselt et al. 2016)", default=True)
    dueling: bool = _flag("dueling value/advantage head (Wang et al. 2016)", default=True)
    layer_norm: bool = _flag("LayerNorm after each conv and hidden dense layer, before ReLU (PQN's network)",
                             default=False)
    terminal_target: float | None = _flag(
        "TD target forced at terminal transitions (unset = the n-step return alone)", default=None)
    # Compute
    precision: str = _flag(
        "update arithmetic: auto | float32 | bfloat16 (Keras mixed_bfloat16: weights, Q-values and the saved "
        "model stay float32). auto = the fastest path measured for this CPU, chosen by each piece of the run: "
        "DQN on a CPU with AMX-BF16 or AVX512_BF16 -> bfloat16, otherwise float32 (training/compute_path.py)",
        choices=("auto", "float32", "bfloat16"), default="auto")
    xla: bool | None = _flag(
        "compile the update with XLA (tf.function jit_compile); off = TensorFlow's oneDNN kernels; unset = the "
        "faster of the two for this CPU, chosen by each piece (DQN: oneDNN on CPUs with bfloat16 instructions, "
        "XLA elsewhere; PQN: XLA)", default=None)
    backend: str = _flag(
        "Keras backend: auto (= $KERAS_BACKEND, else tensorflow) | tensorflow | jax; set before Keras is imported "
        "(Keras reads KERAS_BACKEND once per process; docs/guides/gpu.md)", choices=("auto", "tensorflow", "jax"),
        default="auto")
    device: str = _flag(
        "where the learner computes: auto (a GPU if the backend sees one, else the CPU) | cpu | gpu (exit 2 if the "
        "backend sees no GPU)", choices=("auto", "cpu", "gpu"), default="auto")
    # Environment
    sticky_actions: float = _flag("repeat_action_probability (0 = the Nature setting)", default=0.0)
    noop_max: int = _flag("up to this many no-op frames at each game start", default=30)
    max_frames_per_episode: int = _flag("emulator frames before a training game is truncated", default=108_000)
    # Bookkeeping
    checkpoint_every: int = _flag("agent steps between checkpoints (also on SIGINT/SIGTERM)", default=50_000)
    keep_checkpoints: int = _flag("checkpoints kept on disk", default=2)
    log_every: int = _flag("agent steps between metrics.jsonl / TensorBoard records", default=5_000)
    eval_every: int = _flag("agent steps between evaluations during training; 0 = only at the end", default=100_000)
    eval_episodes: int = _flag("games per periodic evaluation", default=8)
    final_eval_episodes: int = _flag("games of the final evaluation written to eval.json", default=30)
    solved_reward: float = _flag(
        "stop when the running mean of the last 100 per-life clipped rewards passes this; 0 = off", default=0.0)
    progress: bool = _flag("show a progress bar", default=True)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Where each `default` choice comes from (the dataclass defaults above ARE this preset). The default
# is the best configuration measured on these 2 cores, at 1M agent steps, seed 1 (README "Presets"):
# - CleanRL dqn_atari's settings (Huang et al. 2022), measured first with plain Nature-DQN targets
#   (Double DQN and the dueling head joined later, below; 1-step returns), Adam 1e-4 / eps 1e-8
#   without gradient clipping, hard target copy every 1,000 agent steps, epsilon 1.0 -> 0.01 over
#   the first 100k agent steps (absolute), 80k steps before learning, no separate random phase,
#   replay 1M, 1M agent steps.
#   Measured against the previous default (now `rainbow-lite`: Double + dueling + 3-step returns,
#   target sync 8k, Adam eps 1.5e-4, global clip 10, warm-up 20k): mean of the last 100 training
#   games at 1M agent steps 93.4 with these settings (91.5 +- 47.3 over 300 evaluation games; seed 1,
#   results/default-s1-1m/; an earlier run, ~85, ../shared/NOTES.md) and 79.7 with the `cleanrl`
#   preset (MSE; 82.9 +- 54.0 over 300 evaluation games; results/cleanrl-1m/),
#   against 28 for `rainbow-lite` (results/rainbow-lite-3m/metrics.jsonl, the first 1M steps of its
#   3M-step run; that run also decayed epsilon in 25k steps and refilled its replay at two resumes).
# - Huber loss (Nature DQN) rather than CleanRL's MSE: the two seed-1 runs (otherwise the same
#   settings; results/default-s1-1m/vs-cleanrl-steps.png) match to within a point up to 250k, then
#   Huber runs 3-14 points ahead (last-100 means 14.1 / 14.5 at 250k, 39.5 / 33.6 at 500k, 67.7 /
#   60.7 at 750k, 93.4 / 79.7 at 1M; 300-game evaluations 91.5 +- 47.3 / 82.9 +- 54.0, about two
#   combined standard errors apart). One seed each: Huber is kept because it measured higher and
#   bounds the gradient of a rare large TD error, not because the loss is shown to matter.
# - 8 envs, one update per 4 agent steps over all of them, batch 32: the Nature DQN replay ratio.
# - --precision auto / --xla unset: the fastest measured path for the CPU (training/compute_path.py).
#   On CPUs with bfloat16 instructions that is bfloat16 + oneDNN, whose run (results/default-bf16-s1/,
#   an AMX Xeon) scored 87.0 +- 40.9 over 300 evaluation games against float32 + XLA's 91.5 +- 47.3
#   (gap -4.4, within two combined standard errors, 7.2: no cost by the rule set before it finished),
#   with a last-100 mean of 83.2 at 1M against 93.4 (level to 600k, then 4-10 points under), in 2.68
#   CPU-hours against 5.97 (1.49x the float32 + XLA trainer's agent steps/s on the same Xeon).
# - Double DQN targets (van Hasselt et al. 2016): the first ablation against this baseline, one
#   change at 1M agent steps, seed 1, on bfloat16 + oneDNN (results/ablation-double/): 102.8 +- 61.5
#   over 300 evaluation games against 87.0 +- 40.9 (gap +15.7, beyond two combined standard errors,
#   8.5) and a last-100 mean of 101.5 against 83.2 at 1M; also above float32's 91.5 / 93.4 (gap
#   +11.3 against 9.0). It joins by the rule set before it finished (training/ablation.py); its
#   curve matches the baseline's to 600k and pulls ahead after 700k. It costs one more forward pass
#   per update (the online network on the next states). That run, continued to 3M agent steps
#   (results/default-s1-3m/): 244.6 / 261.8 on the training curve at 2M / 3M, 169.8 / 218.2 over
#   300 evaluation games, in 5.98 / 8.77 CPU-hours.
# - Dueling head (Wang et al. 2016): the second ablation, one change against Double DQN's run at 1M
#   agent steps, seed 1 (results/ablation-double-dueling/): 150.8 +- 70.9 over 300 evaluation games
#   against 102.8 +- 61.5 (gap +48.1, beyond two combined standard errors, 10.8) and a last-100 mean
#   of 150.8 against 101.5 (ahead from 200k on: 21.1 / 52.9 / 110.1 against 14.0 / 38.3 / 64.7 at
#   250k / 500k / 750k, `python -m breakout_dqn.training.ablation ... --at`), in 3.39 CPU-hours
#   against 3.24. It joins by the rule: dueling=True above.
#   The next ablations are judged against this run (scripts/experiments.sh, BASELINE).
# - 3-step returns: the third ablation, the first against that baseline, at 1M agent steps, seed 1
#   (results/ablation-dueling-nstep3/): 58.5 +- 39.0 over 300 evaluation games against 150.8 (gap
#   -92.3, threshold 9.3) and a last-100 mean of 54.7 against 150.8 (level to 400k, then behind and
#   flat from 800k). It stays out by the rule: n_step=1 above.
# - Target sync every 8,000 agent steps (Dopamine, Rainbow; `rainbow-lite` ships it): the fourth
#   ablation, the second against that baseline, at 1M agent steps, seed 1
#   (results/ablation-dueling-target8k/): 110.2 +- 62.5 over 300 evaluation games against 150.8
#   (gap -40.7, threshold 10.9) and a last-100 mean of 104.6 against 150.8 (flat to ~250k, then
#   climbing at about the baseline's pace, ~250k steps behind it). It stays out by the rule: target_update=1_000 above.
# - Run-to-run noise, measured after those verdicts: a second run of this default's settings and seed
#   on another CPU (the first 1M agent steps of results/default-dueling-s1-3m/) scored 114.0 +- 59.8
#   over 300 evaluation games against the first run's 150.8 (gap -36.8; last-100 124.4 against
#   150.8). The rule's threshold (~11) counts the evaluation's noise, not the training's, so Double
#   DQN's gap (+15.7) is within the spread of two runs and the 8k target period's (-40.7) about its
#   size; the dueling head's (+48.1) is a little beyond it and 3-step returns' (-92.3) far beyond.
# - The long run: that second run, on to 3M agent steps (results/default-dueling-s1-3m/; bfloat16 +
#   oneDNN on a Zen 4, 10.41 CPU-hours): a last-100 mean of 309.6 at 2M and 301.5 at 3M, and
#   269.7 +- 115.4 over 300 evaluation games of its ONNX model (standard error 6.7), ahead of PQN's
#   5M agent (225.6, +44.1, 4.5 combined standard errors) and of the Double DQN run without the
#   dueling head at 3M (218.2, results/default-s1-3m/): the shipped agent since.
_RAINBOW_LITE: dict[str, Any] = {
    # The previous default (results/rainbow-lite-3m: 36.2 over 300 games after 3M agent steps): the three
    # Rainbow components that need no distributional head or prioritized replay (Hessel et al. 2018),
    # Adam eps 1.5e-4 and target sync every 8k steps with a 20k warm-up (Rainbow, Dopamine), global
    # grad-norm clip 10 (Stable-Baselines3). The reference run decayed epsilon over its first 25k
    # steps (10% of its first 250k-step piece, before schedules were absolute); this preset, like the
    # others, decays it over 100k.
    "steps": 3_000_000,
    "n_step": 3,
    "double_dqn": True,
    "dueling": True,
    "adam_epsilon": 1.5e-4,
    "global_clipnorm": 10.0,
    "target_update": 8_000,
    "learning_starts": 20_000,
    "random_steps": 20_000,
}
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "rainbow-lite": _RAINBOW_LITE,
    # CleanRL's dqn_atari.py (Huang et al. 2022), as its 1M-step model card ran it: Nature DQN targets,
    # MSE loss, Adam 1e-4 / eps 1e-8 without gradient clipping, hard target copy every 1,000 agent
    # steps, epsilon 1.0 -> 0.01 over the first 10% of 1M steps, 80k steps before learning, replay 1M.
    # Differences, by design: 8 games step together (one update per 4 agent steps over all of them,
    # the same replay ratio) and the replay stores frames once (CleanRL stores 4-frame stacks).
    "cleanrl": {
        "steps": 1_000_000,
        "n_step": 1,
        "double_dqn": False,
        "dueling": False,
        "loss": "mse",
        "learning_rate": 1e-4,
        "adam_epsilon": 1e-8,
        "clipnorm": 0.0,
        "global_clipnorm": 0.0,
        "target_update": 1_000,
        "epsilon_end": 0.01,
        "epsilon_decay_steps": 100_000,
        "learning_starts": 80_000,
        "random_steps": 0,
        "replay_capacity": 1_000_000,
    },
    # PQN as purejaxql's pqn_atari.yaml runs it: 128 games x 32-step rollouts, 2 epochs of 32
    # minibatches (128 transitions each), Q(lambda=0.65) targets, RAdam 2.5e-4 (constant), global
    # grad-norm clip 10, LayerNorm network, epsilon 1.0 -> 0.001 over the first 1M agent steps (10% of
    # its 10M), MSE loss. Per agent step: one acting pass and two training passes (a third of DQN's
    # network work at one update of 32 per 4 steps, counting the target and backward passes).
    # Measured here (seed 1): a mean of the last 100 training games of 179.9 at 3M agent steps in
    # 4.76 CPU-hours (results/pqn-s1/) and 348.8 at 5M in 8.0 (results/pqn-s1-5m/, the shipped
    # agent until `default`'s 3M run beat it over 300 evaluation games, 269.7 against 225.6), where
    # the `default` of that time (no Double DQN, no dueling head) needed 5.95 CPU-hours for 93.4 at
    # 1M (results/default-s1-1m/).
    "pqn": {
        "algorithm": "pqn",
        "steps": 10_000_000,
        "num_envs": 128,
        "rollout_steps": 32,
        "minibatches": 32,
        "epochs": 2,
        "q_lambda": 0.65,
        "gamma": 0.99,
        "optimizer": "radam",
        "learning_rate": 2.5e-4,
        "adam_epsilon": 1e-8,
        "clipnorm": 0.0,
        "global_clipnorm": 10.0,
        "loss": "mse",
        "layer_norm": True,
        "double_dqn": False,
        "dueling": False,
        "n_step": 1,
        "epsilon_end": 0.001,
        "epsilon_decay_steps": 1_000_000,
        "learning_starts": 0,
        "random_steps": 0,
        "durable_replay": False,
        "checkpoint_every": 250_000,
        "log_every": 16_384,
        "eval_every": 500_000,
    },
    # The Keras example, exactly: wrap_deepmind envs (per-life episodes, clipped rewards), updates
    # start as soon as the buffer holds more than one batch, 50k fully random steps, epsilon decays
    # 1.0 -> 0.1 over 1M steps from step 0, Adam(2.5e-4, clipnorm=1.0), replay 100k, target every
    # 10k steps, and the terminal target forced to -1.
    "keras-example": {
        "steps": 10_000_000,  # the notebook has no cap: it runs until solved ("good results around 10 million")
        "n_step": 1,
        "double_dqn": False,
        "dueling": False,
        "learning_rate": 2.5e-4,
        "adam_epsilon": 1e-7,
        "clipnorm": 1.0,
        "global_clipnorm": 0.0,
        "random_steps": 50_000,
        "learning_starts": 32,
        "epsilon_end": 0.1,
        "epsilon_decay_steps": 1_000_000,
        "replay_capacity": 100_000,
        "target_update": 10_000,
        "terminal_target": -1.0,
        "solved_reward": 40.0,
    },
}


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


def build_parser(prog: str = "breakout-dqn train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a DQN on real Breakout (ale-py). Flags override the chosen --preset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata['help']} (default preset: {default})"
        if f.name == "preset":
            parser.add_argument(flag, choices=sorted(PRESETS), help=f.metadata["help"])
        elif f.metadata["choices"]:
            parser.add_argument(flag, choices=f.metadata["choices"], help=help_text)
        elif isinstance(default, bool) or f.type == "bool | None":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif default is None:
            parser.add_argument(flag, type=float, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), help=help_text)
    return parser


def resolve(explicit: dict[str, Any]) -> TrainConfig:
    """Dataclass defaults <- preset <- explicit flags, then validated."""
    preset = explicit.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], **explicit}
    unknown = set(values) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}")
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    positive = ["steps", "num_envs", "replay_capacity", "batch_size", "n_step", "train_frequency",
                "target_update", "epsilon_decay_steps", "rollout_steps", "minibatches", "epochs", "checkpoint_every",
                "keep_checkpoints", "log_every",
                "final_eval_episodes"]
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(config, name)}")
    non_negative = ["learning_starts", "random_steps", "noop_max", "learning_rate_decay_steps", "eval_every",
                    "eval_episodes", "clipnorm", "global_clipnorm"]
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if not 0.0 < config.gamma <= 1.0:
        raise ConfigError(f"--gamma must be in (0, 1], got {config.gamma}")
    for name in ("epsilon_start", "epsilon_end", "sticky_actions"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(config, name)}")
    for f in fields(TrainConfig):
        choices = f.metadata["choices"]
        if choices and getattr(config, f.name) not in choices:
            flag, value = f.name.replace("_", "-"), getattr(config, f.name)
            raise ConfigError(f"--{flag} must be one of {list(choices)}, got {value!r}")
    if config.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be > 0, got {config.learning_rate}")
    if not 0.0 <= config.q_lambda <= 1.0:
        raise ConfigError(f"--q-lambda must be in [0, 1], got {config.q_lambda}")
    if config.algorithm == "pqn":
        validate_pqn(config)
        return
    per_env = config.replay_capacity // config.num_envs
    if per_env < config.n_step + 8:
        raise ConfigError(
            f"--replay-capacity {config.replay_capacity} is too small for {config.num_envs} envs "
            f"and n-step {config.n_step}: need at least {(config.n_step + 8) * config.num_envs}"
        )


def validate_pqn(config: TrainConfig) -> None:
    rollout = config.num_envs * config.rollout_steps
    if rollout % config.minibatches:
        raise ConfigError(f"--minibatches {config.minibatches} must divide a rollout of {rollout} transitions "
                          f"(--num-envs x --rollout-steps)")
    for name in ("double_dqn", "dueling"):
        if getattr(config, name):
            raise ConfigError(f"--{name.replace('_', '-')} is a DQN setting (PQN has no target network); "
                              f"pass --no-{name.replace('_', '-')}")


def save_config(config: TrainConfig, path: Path) -> None:
    from breakout_dqn.files import atomic_write_text

    atomic_write_text(path, json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")


def load_config(path: Path) -> TrainConfig:
    data = json.loads(Path(path).read_text())
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in known})
