"""``--precision auto`` and an unset ``--xla``: each CPU gets its fastest measured path, chosen per piece."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breakout_dqn.training.arguments import build_parser
from breakout_dqn.training.compute_path import (
    cpu_flags,
    describe,
    fastest_path,
    parse_path_name,
    path_name,
    resolved,
    slower_path_note,
)
from breakout_dqn.training.config import resolve
from breakout_dqn.training.run_directory import RunDirectory

XEON_AMX = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
ZEN4 = {"avx2", "avx512f", "avx512_bf16"}
ZEN3 = {"avx2", "fma", "sse4_2"}


def test_cpu_flags_are_read_from_cpuinfo_and_empty_when_it_is_missing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("flags, algorithm, backend, expected", [
    (XEON_AMX, "dqn", "tensorflow", ("bfloat16", False)),
    (ZEN4, "dqn", "tensorflow", ("bfloat16", False)),
    (ZEN3, "dqn", "tensorflow", ("float32", True)),
    (XEON_AMX, "pqn", "tensorflow", ("float32", True)),  # PQN's measured path, whatever the CPU
    (XEON_AMX, "dqn", "jax", ("float32", True)),
])
def test_auto_takes_the_fastest_measured_path_for_the_cpu(flags, algorithm, backend, expected) -> None:
    assert fastest_path(algorithm, flags, backend=backend) == expected


def test_given_settings_are_kept_and_only_the_unset_ones_are_filled_in() -> None:
    assert fastest_path("dqn", XEON_AMX, precision="float32", backend="tensorflow") == ("float32", False)
    assert fastest_path("dqn", ZEN3, precision="bfloat16", backend="tensorflow") == ("bfloat16", True)
    assert fastest_path("dqn", XEON_AMX, xla=True, backend="tensorflow") == ("bfloat16", True)
    assert fastest_path("dqn", ZEN3, precision="float32", xla=False, backend="tensorflow") == ("float32", False)


def test_the_default_config_stays_auto_and_resolves_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    config = resolve({})
    assert (config.precision, config.xla) == ("auto", None)  # what config.json keeps: each piece resolves it
    assert describe(resolved(config, XEON_AMX)) == "bfloat16/oneDNN"
    assert describe(resolved(config, ZEN3)) == "float32/XLA"
    explicit = resolve({"precision": "float32", "xla": True})
    assert resolved(explicit, XEON_AMX) is explicit


def test_xla_flags_parse_as_on_off_or_unset() -> None:
    parser = build_parser()
    assert parser.parse_args(["--no-xla"]).xla is False
    assert parser.parse_args(["--xla"]).xla is True
    assert "xla" not in vars(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "float16"])


def test_a_learner_built_on_a_bfloat16_cpu_computes_in_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    from breakout_dqn.training import compute_path
    from breakout_dqn.training.learners import build_dqn_learner

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    for flags, dtype in ((XEON_AMX, "bfloat16"), (ZEN3, "float32")):
        monkeypatch.setattr(compute_path, "cpu_flags", lambda flags=flags: frozenset(flags))
        learner = build_dqn_learner(resolve({"replay_capacity": 1000}))
        assert learner.online.get_layer("conv1").compute_dtype == dtype
        assert learner.online.get_layer("q_values").compute_dtype == "float32"


def test_auto_resume_continues_a_run_saved_with_another_compute_path(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    saved = resolve({"precision": "float32", "xla": True}).to_json()  # an older run's config.json
    run.config.write_text(json.dumps(saved))
    asked = resolve({}).to_json()  # today's default: auto
    assert run.differences(asked) == []
    assert run.differences({**asked, "seed": 5}) == ["seed: 0 here, 5 asked"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("xla", [True, False])
def test_a_logged_path_name_reads_back(precision, xla):
    assert parse_path_name(path_name(precision, xla)) == (precision, xla)


@pytest.mark.parametrize("name", ["auto", "float16/XLA", "bfloat16/", "float32/xla"])
def test_a_name_that_is_not_a_path_is_refused(name):
    with pytest.raises(ValueError, match="not a compute path"):
        parse_path_name(name)


@pytest.mark.parametrize("flags, settings, expected", [
    (ZEN3, {}, ""),  # auto: nothing to add
    (ZEN3, {"precision": "float32"}, ""),  # what auto takes there anyway
    (ZEN3, {"precision": "bfloat16"},
     "; bfloat16 is emulated on this CPU (no AMX-BF16 or AVX512_BF16)"
     "; this CPU's fastest measured path is float32/XLA (--precision auto)"),
    (ZEN3, {"precision": "float32", "xla": False},
     "; this CPU's fastest measured path is float32/XLA (--precision auto)"),
    (XEON_AMX, {"precision": "bfloat16"}, ""),  # oneDNN filled in: the fastest there
    (XEON_AMX, {"precision": "float32"}, "; this CPU's fastest measured path is bfloat16/oneDNN (--precision auto)"),
    (XEON_AMX, {"preset": "pqn", "precision": "float32"}, ""),  # PQN's path is float32 + XLA everywhere
])
def test_a_path_slower_than_autos_is_named_at_start_up(monkeypatch: pytest.MonkeyPatch, flags, settings,
                                                        expected) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    config = resolve({"preset": "default", "out": "runs/x", **settings})
    assert slower_path_note(config, flags) == expected
