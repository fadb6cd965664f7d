"""Training settings: the ones every algorithm shares, one dataclass per algorithm on top, the presets.

Every field is a ``breakout-dqn train`` flag (``training.arguments``); ``config.json`` in a run
directory holds the resolved settings, flat. Units: 1 agent step = 4 emulator frames, per game.
Why each default is what it is: docs/algorithms/dqn.md and docs/algorithms/pqn.md, from the records
in results/ (results/README.md indexes them).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from breakout_dqn.errors import UsageError

# Flag groups, in the order help shows them.
GROUPS = {
    "run": "the run",
    "learning": "learning (every algorithm)",
    "dqn": "DQN (--algorithm dqn): replay and target network",
    "pqn": "PQN (--algorithm pqn): rollouts of many games, Q(lambda)",
    "compute": "compute",
    "games": "the games",
    "bookkeeping": "checkpoints, metrics and evaluations",
}


def setting(help_text: str, group: str, choices: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text, "group": group, "choices": choices}, **kwargs)


@dataclass
class TrainConfig:
    """The settings every algorithm's run has; ``DQNConfig`` and ``PQNConfig`` add their own."""

    preset: str = setting("settings bundle applied before explicit flags", "run", default="default")
    algorithm: str = setting("dqn (replay + target network) | pqn (no replay, no target network)", "run",
                             choices=("dqn", "pqn"), default="dqn")
    out: str = setting("run directory (model.keras, config.json, metrics.jsonl, checkpoints/, eval.json, tb/)",
                       "run", default="runs/breakout")
    resume: bool = setting("continue the run in --out from its latest checkpoint", "run", default=False)
    auto_resume: bool = setting(
        "continue the run in --out if it holds this run's checkpoints, start it if --out is empty, refuse if "
        "--out holds another run (a restarted batch job's command line)", "run", default=False)
    steps: int = setting("total agent steps over all games (1 step = 4 frames; 1e6 and 1_000_000 work)", "run",
                         default=1_000_000)
    seed: int = setting("seed for the games, network init, exploration and sampling", "run", default=0)
    num_envs: int = setting("Breakout games stepped together by ale-py's C++ vector env", "run", default=8)
    gamma: float = setting("discount per agent step", "learning", default=0.99)
    epsilon_start: float = setting("exploration rate at step 0", "learning", default=1.0)
    epsilon_end: float = setting("exploration rate after the decay", "learning", default=0.01)
    epsilon_decay_steps: int = setting(
        "agent steps of linear epsilon decay from step 0 (absolute: how a run is split does not change it)",
        "learning", default=100_000)
    optimizer: str = setting("adam | radam (Liu et al. 2020; PQN's)", "learning", choices=("adam", "radam"),
                             default="adam")
    learning_rate: float = setting("optimizer learning rate", "learning", default=1e-4)
    learning_rate_decay_steps: int = setting(
        "linear learning-rate decay to 0 over this many agent steps' worth of updates, counted from the first "
        "update (absolute; the DQN's start after --learning-starts); 0 = constant", "learning", default=0)
    adam_epsilon: float = setting("Adam / RAdam epsilon", "learning", default=1e-8)
    clipnorm: float = setting("clip each gradient tensor to this L2 norm; 0 = off", "learning", default=0.0)
    global_clipnorm: float = setting("clip the global gradient L2 norm; 0 = off", "learning", default=0.0)
    loss: str = setting("TD loss: huber (Nature DQN) | mse (CleanRL)", "learning", choices=("huber", "mse"),
                        default="huber")
    layer_norm: bool = setting("LayerNorm after each conv and hidden dense layer, before ReLU (PQN's network)",
                               "learning", default=False)
    precision: str = setting(
        "update arithmetic: auto | float32 | bfloat16 (weights and the saved model stay float32); auto = this "
        "CPU's fastest measured path (training/compute_path.py)", "compute",
        choices=("auto", "float32", "bfloat16"), default="auto")
    xla: bool | None = setting(
        "compile the update with XLA; off = TensorFlow's oneDNN kernels; unset = the faster of the two for "
        "this CPU (training/compute_path.py)", "compute", default=None)
    backend: str = setting(
        "Keras backend: auto (= $KERAS_BACKEND, else tensorflow) | tensorflow | jax; set before Keras is imported "
        "(docs/guides/gpu.md)", "compute", choices=("auto", "tensorflow", "jax"), default="auto")
    device: str = setting(
        "where the learner computes: auto (a GPU if the backend sees one, else the CPU) | cpu | gpu (exit 2 if the "
        "backend sees no GPU)", "compute", choices=("auto", "cpu", "gpu"), default="auto")
    sticky_actions: float = setting("repeat_action_probability (0 = the Nature setting)", "games", default=0.0)
    noop_max: int = setting("up to this many no-op frames at each game start", "games", default=30)
    max_frames: int = setting("emulator frames before a training game is truncated", "games", default=108_000)
    checkpoint_every: int = setting("agent steps between checkpoints (also on SIGINT/SIGTERM)", "bookkeeping",
                                    default=50_000)
    keep_checkpoints: int = setting("checkpoints kept on disk", "bookkeeping", default=2)
    log_every: int = setting("agent steps between metrics.jsonl / TensorBoard records", "bookkeeping",
                             default=5_000)
    eval_every: int = setting("agent steps between evaluations during training; 0 = only at the end",
                              "bookkeeping", default=100_000)
    eval_episodes: int = setting("games per periodic evaluation", "bookkeeping", default=8)
    final_eval_episodes: int = setting("games of the final evaluation written to eval.json", "bookkeeping",
                                       default=30)
    solved_reward: float = setting(
        "stop when the mean of the last 100 per-life clipped rewards passes this (the Keras example's 40); "
        "0 = off", "bookkeeping", default=0.0)
    progress: bool = setting("show a progress bar", "bookkeeping", default=True)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DQNConfig(TrainConfig):
    """DQN (Mnih et al. 2015) with Double DQN targets and a dueling head: these defaults ARE ``default``."""

    replay_capacity: int = setting("transitions kept (1M: about 7.1 GB, one 84x84 uint8 frame each)", "dqn",
                                   default=1_000_000)
    durable_replay: bool = setting(
        "keep the replay memory-mapped in OUT/replay (as much disk as memory) so a resume continues with it",
        "dqn", default=True)
    batch_size: int = setting("transitions per update", "dqn", default=32)
    n_step: int = setting("n-step return length (Sutton 1988; Rainbow uses 3)", "dqn", default=1)
    learning_starts: int = setting("agent steps collected before the first update", "dqn", default=80_000)
    random_steps: int = setting("agent steps of uniformly random actions at the start", "dqn", default=0)
    train_frequency: int = setting("agent steps per gradient update", "dqn", default=4)
    target_update: int = setting("agent steps between target-network syncs", "dqn", default=1_000)
    double_dqn: bool = setting("Double DQN targets (van Hasselt et al. 2016)", "dqn", default=True)
    dueling: bool = setting("dueling value/advantage head (Wang et al. 2016)", "dqn", default=True)
    terminal_target: float | None = setting(
        "TD target forced at terminal transitions (unset = the n-step return alone; the Keras example: -1)",
        "dqn", default=None)


def _shared(name: str, default: Any) -> Any:
    """A shared setting with another default for one algorithm (same help and group)."""
    return field(default=default, metadata=TrainConfig.__dataclass_fields__[name].metadata)


@dataclass
class PQNConfig(TrainConfig):
    """PQN (Gallici et al. 2024) as purejaxql's pqn_atari runs it: these defaults ARE the ``pqn`` preset."""

    algorithm: str = _shared("algorithm", "pqn")
    steps: int = _shared("steps", 10_000_000)
    num_envs: int = _shared("num_envs", 128)
    epsilon_end: float = _shared("epsilon_end", 0.001)
    epsilon_decay_steps: int = _shared("epsilon_decay_steps", 1_000_000)
    optimizer: str = _shared("optimizer", "radam")
    learning_rate: float = _shared("learning_rate", 2.5e-4)
    global_clipnorm: float = _shared("global_clipnorm", 10.0)
    loss: str = _shared("loss", "mse")
    layer_norm: bool = _shared("layer_norm", True)
    checkpoint_every: int = _shared("checkpoint_every", 250_000)
    log_every: int = _shared("log_every", 16_384)
    eval_every: int = _shared("eval_every", 500_000)
    rollout_steps: int = setting("agent steps per game in each rollout", "pqn", default=32)
    minibatches: int = setting("minibatches per epoch over a rollout", "pqn", default=32)
    epochs: int = setting("passes over each rollout", "pqn", default=2)
    q_lambda: float = setting("lambda of the Q(lambda) targets", "pqn", default=0.65)


CONFIGS: dict[str, type[TrainConfig]] = {"dqn": DQNConfig, "pqn": PQNConfig}
# Settings renamed since; a config.json or a checkpoint written before keeps loading.
RENAMED = {"max_frames_per_episode": "max_frames"}

# Presets: settings applied over the algorithm's defaults, before explicit flags. What each was measured
# to do, and why `default` is what it is: docs/algorithms/dqn.md ("Presets"), docs/experiments.md.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # CleanRL's dqn_atari.py (Huang et al. 2022): Nature DQN targets and MSE.
    "cleanrl": {"double_dqn": False, "dueling": False, "loss": "mse"},
    # The three Rainbow components that need no distributional head or prioritized replay (Hessel et al.
    # 2018), with Rainbow's Adam epsilon, target period and warm-up, and SB3's global gradient clip.
    "rainbow-lite": {"steps": 3_000_000, "n_step": 3, "adam_epsilon": 1.5e-4, "global_clipnorm": 10.0,
                     "target_update": 8_000, "learning_starts": 20_000, "random_steps": 20_000},
    # PQN as purejaxql runs it (PQNConfig's defaults).
    "pqn": {"algorithm": "pqn"},
    # The Keras example, exactly (it has no step cap: "good results around 10 million").
    "keras-example": {"steps": 10_000_000, "double_dqn": False, "dueling": False, "learning_rate": 2.5e-4,
                      "adam_epsilon": 1e-7, "clipnorm": 1.0, "random_steps": 50_000, "learning_starts": 32,
                      "epsilon_end": 0.1, "epsilon_decay_steps": 1_000_000, "replay_capacity": 100_000,
                      "target_update": 10_000, "terminal_target": -1.0, "solved_reward": 40.0},
}


class ConfigError(UsageError):
    """A setting that cannot work; the message names the flag and why."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def all_fields() -> dict[str, dataclasses.Field]:
    """Every setting of every algorithm, by name (the flags of ``breakout-dqn train``)."""
    found: dict[str, dataclasses.Field] = {}
    for config_class in CONFIGS.values():
        for setting_field in fields(config_class):
            found.setdefault(setting_field.name, setting_field)
    return found


def resolve(explicit: dict[str, Any]) -> TrainConfig:
    """The algorithm's defaults <- the preset <- explicit settings, then validated."""
    preset = explicit.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    values = {**PRESETS[preset], **explicit}
    algorithm = values.get("algorithm", "dqn")
    if algorithm not in CONFIGS:
        raise ConfigError(f"--algorithm must be one of {list(CONFIGS)}, got {algorithm!r}")
    config_class = CONFIGS[algorithm]
    own = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - set(all_fields()))
    if unknown:
        raise ConfigError(f"unknown settings: {unknown}")
    foreign = sorted(name for name in explicit if name not in own)
    if foreign:
        raise ConfigError(f"{', '.join(flag(name) for name in foreign)}: not a setting of --algorithm {algorithm}")
    config = config_class(**{name: value for name, value in values.items() if name in own})
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse a setting that cannot work, naming its flag."""
    for setting_field in fields(config):
        value, choices = getattr(config, setting_field.name), setting_field.metadata["choices"]
        if choices and value not in choices:
            raise ConfigError(f"{flag(setting_field.name)} must be one of {list(choices)}, got {value!r}")
    positive = ["steps", "num_envs", "epsilon_decay_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                "final_eval_episodes", "learning_rate", "replay_capacity", "batch_size", "n_step",
                "train_frequency", "target_update", "rollout_steps", "minibatches", "epochs"]
    non_negative = ["noop_max", "learning_rate_decay_steps", "eval_every", "eval_episodes", "clipnorm",
                    "global_clipnorm", "learning_starts", "random_steps"]
    unit_interval = ["epsilon_start", "epsilon_end", "sticky_actions", "q_lambda"]
    for name in (name for name in positive if hasattr(config, name)):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{flag(name)} must be > 0, got {getattr(config, name)}")
    for name in (name for name in non_negative if hasattr(config, name)):
        if getattr(config, name) < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {getattr(config, name)}")
    for name in (name for name in unit_interval if hasattr(config, name)):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"{flag(name)} must be in [0, 1], got {getattr(config, name)}")
    if not 0.0 < config.gamma <= 1.0:
        raise ConfigError(f"--gamma must be in (0, 1], got {config.gamma}")
    if isinstance(config, DQNConfig):
        from breakout_dqn.training.replay import min_capacity

        needed = min_capacity(config.num_envs, config.n_step)
        if config.replay_capacity < needed:
            raise ConfigError(f"--replay-capacity {config.replay_capacity} is too small for {config.num_envs} "
                              f"games and n-step {config.n_step}: need at least {needed}")
    if isinstance(config, PQNConfig) and (config.num_envs * config.rollout_steps) % config.minibatches:
        raise ConfigError(f"--minibatches {config.minibatches} must divide a rollout of "
                          f"{config.num_envs * config.rollout_steps} transitions (--num-envs x --rollout-steps)")


def save_config(config: TrainConfig, path: Path) -> None:
    from breakout_dqn.files import atomic_write_text

    atomic_write_text(path, json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")


def config_from_json(data: dict[str, Any]) -> TrainConfig:
    """A config from a ``config.json``'s settings (older names renamed, other algorithms' settings dropped)."""
    data = {RENAMED.get(key, key): value for key, value in data.items()}
    config_class = CONFIGS.get(data.get("algorithm", "dqn"), DQNConfig)
    own = {f.name for f in fields(config_class)}
    return config_class(**{key: value for key, value in data.items() if key in own})


def load_config(path: Path) -> TrainConfig:
    return config_from_json(json.loads(Path(path).read_text()))
