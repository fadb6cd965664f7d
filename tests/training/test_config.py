"""Settings per algorithm, presets, flag precedence, the flags' forms and the exploration schedule."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from breakout_dqn.training.arguments import build_parser, shown_config
from breakout_dqn.training.config import (
    PRESETS,
    ConfigError,
    DQNConfig,
    PQNConfig,
    TrainConfig,
    config_from_json,
    resolve,
)
from breakout_dqn.training.exploration import epsilon_at


def parse(*argv: str) -> TrainConfig:
    return resolve(vars(build_parser().parse_args(list(argv))))


def test_each_algorithm_has_its_own_settings_over_the_shared_ones() -> None:
    shared = {f.name for f in fields(TrainConfig)}
    dqn, pqn = {f.name for f in fields(DQNConfig)} - shared, {f.name for f in fields(PQNConfig)} - shared
    assert {"replay_capacity", "target_update", "double_dqn", "dueling"} <= dqn
    assert pqn == {"rollout_steps", "minibatches", "epochs", "q_lambda"}
    assert isinstance(parse(), DQNConfig) and isinstance(parse("--algorithm", "pqn"), PQNConfig)
    assert not hasattr(parse("--preset", "pqn"), "replay_capacity")
    with pytest.raises(ConfigError, match="--replay-capacity: not a setting of --algorithm pqn"):
        parse("--preset", "pqn", "--replay-capacity", "1000")


def test_every_preset_resolves_and_each_named_setting_differs_from_the_algorithm_default() -> None:
    for name, settings in PRESETS.items():
        config = resolve({"preset": name})
        plain = resolve({"algorithm": config.algorithm})
        changed = {key for key, value in config.to_json().items() if plain.to_json()[key] != value} - {"preset"}
        assert changed == set(settings) - {"algorithm"}, name  # a preset names only what it changes


def test_pqn_preset_is_the_pqn_algorithm_s_own_defaults() -> None:
    assert resolve({"preset": "pqn"}).to_json() | {"preset": "x"} == resolve({"algorithm": "pqn"}).to_json() | {
        "preset": "x"}


def test_default_is_cleanrl_s_settings_with_huber_double_dqn_and_dueling() -> None:
    default, cleanrl = parse(), parse("--preset", "cleanrl")
    differences = {k for k, v in default.to_json().items() if cleanrl.to_json()[k] != v}
    assert differences == {"preset", "loss", "double_dqn", "dueling"}
    assert (parse("--no-dueling").to_json().items() - default.to_json().items()) == {("dueling", False)}


def test_explicit_flags_override_the_preset() -> None:
    config = parse("--preset", "keras-example", "--replay-capacity", "5000", "--no-dueling", "--dueling")
    assert config.replay_capacity == 5000 and config.dueling
    assert config.learning_rate == PRESETS["keras-example"]["learning_rate"]
    assert parse("--preset", "keras-example", "--steps", "5000").steps == 5000


@pytest.mark.parametrize("text, steps", [("1e6", 1_000_000), ("1_000_000", 1_000_000), ("2.5e5", 250_000),
                                         ("400", 400)])
def test_step_counts_take_scientific_and_underscored_forms(text: str, steps: int) -> None:
    assert parse("--steps", text).steps == steps


@pytest.mark.parametrize("text", ["1.5", "1e-3", "ten", "1e6.5"])
def test_a_count_that_is_not_a_whole_number_is_refused(text: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse("--steps", text)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps" in err[0] and "not a whole number" in err[0]


def test_exploration_is_scheduled_in_absolute_agent_steps_whatever_the_run_length() -> None:
    short, long = parse("--steps", "100000"), parse("--steps", "3000000")
    for config in (short, long):  # a run split into pieces of any --steps explores the same way
        assert config.epsilon_decay_steps == 100_000
        assert epsilon_at(config, 0) == 1.0
        assert epsilon_at(config, 50_000) == pytest.approx(0.505)
        assert epsilon_at(config, 100_000) == pytest.approx(0.01) == epsilon_at(config, 900_000)


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be > 0"),
    (["--epsilon-end", "2"], "--epsilon-end must be in [0, 1]"),
    (["--learning-rate", "-1"], "--learning-rate must be > 0"),
    (["--num-envs", "8", "--replay-capacity", "40"], "too small"),
    (["--epsilon-decay-steps", "0"], "--epsilon-decay-steps must be > 0"),
    (["--preset", "pqn", "--minibatches", "3"], "must divide a rollout of 4096"),
    (["--preset", "pqn", "--q-lambda", "1.5"], "--q-lambda must be in [0, 1]"),
])
def test_invalid_settings_are_refused_with_the_flag_named(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(*argv)


def test_a_setting_with_choices_rejects_other_values_by_flag_and_by_config() -> None:
    with pytest.raises(SystemExit):
        parse("--loss", "l1")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        resolve({"precision": "float16"})
    with pytest.raises(ConfigError, match="unknown preset 'fastest'"):
        resolve({"preset": "fastest"})


def test_help_shows_the_chosen_preset_s_values() -> None:
    default_help = build_parser(shown_config([])).format_help()
    pqn_help = build_parser(shown_config(["--preset", "pqn"])).format_help()
    assert "--learning-rate" in default_help and "(default: 0.0001)" in default_help
    assert "(default: 0.00025)" in pqn_help and "(default: 0.0001)" not in pqn_help  # PQN's learning rate
    assert "--num-envs" in pqn_help and "(default: 128)" in pqn_help
    assert "not used by --algorithm pqn" in pqn_help  # the DQN settings say they do not apply
    assert "--max-frames-per-episode" not in default_help and "--max-frames " in default_help  # one name


def test_the_old_frame_cap_flag_and_config_key_still_work() -> None:
    assert parse("--max-frames-per-episode", "5000").max_frames == 5000
    old = resolve({}).to_json()
    old["max_frames_per_episode"] = old.pop("max_frames") // 2
    assert config_from_json(old).max_frames == resolve({}).max_frames // 2


def test_print_config_prints_the_resolved_settings_and_writes_nothing(tmp_path, capsys) -> None:
    from breakout_dqn.training.cli import main

    out = tmp_path / "never"
    assert main(["--preset", "pqn", "--steps", "2e6", "--out", str(out), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == resolve({"preset": "pqn", "steps": 2_000_000, "out": str(out)}).to_json()
    assert not out.exists()
