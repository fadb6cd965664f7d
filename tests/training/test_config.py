"""Presets, flag precedence and the exploration schedule."""

from __future__ import annotations

import pytest

from breakout_dqn.training.config import ConfigError, TrainConfig, build_parser, resolve
from breakout_dqn.training.session import epsilon_at


def parse(*argv: str) -> TrainConfig:
    return resolve(vars(build_parser().parse_args(list(argv))))


def test_keras_example_preset_is_the_example_s_settings() -> None:
    config = parse("--preset", "keras-example")
    assert (config.gamma, config.batch_size, config.learning_rate, config.clipnorm) == (0.99, 32, 2.5e-4, 1.0)
    assert (config.random_steps, config.epsilon_end, config.epsilon_decay_steps) == (50_000, 0.1, 1_000_000)
    assert (config.replay_capacity, config.train_frequency, config.target_update) == (100_000, 4, 10_000)
    assert config.terminal_target == -1.0 and config.solved_reward == 40.0
    assert config.n_step == 1 and not config.double_dqn and not config.dueling and config.global_clipnorm == 0
    assert config.steps == 10_000_000  # the notebook has no cap; the 1M-step decay must be able to finish
    assert parse("--preset", "keras-example", "--steps", "5000").steps == 5000


def test_explicit_flags_override_the_preset() -> None:
    config = parse("--preset", "keras-example", "--replay-capacity", "5000", "--no-dueling", "--dueling")
    assert config.replay_capacity == 5000 and config.dueling
    assert config.learning_rate == 2.5e-4


def test_exploration_is_scheduled_in_absolute_agent_steps_whatever_the_run_length() -> None:
    short, long = parse("--steps", "100000"), parse("--steps", "3000000")
    for config in (short, long):  # a run split into pieces of any --steps explores the same way
        assert config.epsilon_decay_steps == 100_000
        assert epsilon_at(config, 0) == 1.0
        assert epsilon_at(config, 50_000) == pytest.approx(0.505)
        assert epsilon_at(config, 100_000) == pytest.approx(0.01) == epsilon_at(config, 900_000)


def test_cleanrl_preset_is_cleanrl_dqn_atari_s_settings() -> None:
    config = parse("--preset", "cleanrl")
    assert (config.loss, config.n_step, config.double_dqn, config.dueling) == ("mse", 1, False, False)
    assert (config.learning_rate, config.adam_epsilon, config.clipnorm, config.global_clipnorm) == (1e-4, 1e-8, 0, 0)
    assert (config.target_update, config.learning_starts, config.random_steps) == (1_000, 80_000, 0)
    assert (config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps) == (1.0, 0.01, 100_000)
    assert (config.replay_capacity, config.batch_size, config.train_frequency, config.gamma) == (1_000_000, 32, 4, 0.99)
    assert config.steps == 1_000_000


def test_default_is_cleanrl_s_settings_with_huber_double_dqn_and_dueling_and_rainbow_lite_keeps_the_old_default(
) -> None:
    default, cleanrl = parse(), parse("--preset", "cleanrl")
    differences = {k for k, v in default.to_json().items() if cleanrl.to_json()[k] != v}
    assert differences == {"preset", "loss", "double_dqn", "dueling"}
    assert default.loss == "huber" and default.double_dqn and default.dueling
    assert parse("--no-dueling").dueling is False  # the ablation baseline before dueling joined
    assert (parse("--no-dueling").to_json().items() - default.to_json().items()) == {("dueling", False)}
    lite = parse("--preset", "rainbow-lite")
    assert (lite.n_step, lite.double_dqn, lite.dueling, lite.target_update) == (3, True, True, 8_000)
    assert (lite.adam_epsilon, lite.global_clipnorm) == (1.5e-4, 10.0)
    assert (lite.learning_starts, lite.random_steps) == (20_000, 20_000)
    assert parse("--preset", "rainbow-lite", "--no-dueling").dueling is False


def test_keras_example_epsilon_decays_from_step_zero_like_the_notebook() -> None:
    config = parse("--preset", "keras-example")
    assert epsilon_at(config, 50_000) == pytest.approx(1.0 - 0.9 * 50_000 / 1_000_000)


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be > 0"),
    (["--epsilon-end", "2"], "--epsilon-end must be in [0, 1]"),
    (["--learning-rate", "-1"], "--learning-rate must be > 0"),
    (["--num-envs", "8", "--replay-capacity", "64"], "too small"),
    (["--epsilon-decay-steps", "0"], "--epsilon-decay-steps must be > 0"),
])
def test_invalid_settings_are_refused_with_the_flag_named(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(*argv)


def test_a_setting_with_choices_rejects_other_values_by_flag_and_by_config() -> None:
    with pytest.raises(SystemExit):
        parse("--loss", "l1")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        resolve({"precision": "float16"})


def test_double_dqn_is_on_by_default_and_can_be_turned_off() -> None:
    # It joined `default` by its 1M-step ablation (results/ablation-double/).
    assert parse().double_dqn and not parse("--no-double-dqn").double_dqn
