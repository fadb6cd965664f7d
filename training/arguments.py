"""``breakout-dqn train``'s flags, generated from the settings dataclasses (``training.config``).

Flags not given stay unset (``argparse.SUPPRESS``), so that ``resolve`` applies the preset under them;
help shows the values of the preset (and algorithm) named on the command line.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING
from typing import Any

from breakout_dqn.arguments import ArgumentParser, count
from breakout_dqn.errors import BreakoutDQNError
from breakout_dqn.training.config import GROUPS, PRESETS, TrainConfig, all_fields, flag, resolve

PROG = "breakout-dqn train"
# Older spellings still accepted (hidden from help): scripts written before the CLI was made one.
ALIASES = {"max_frames": "--max-frames-per-episode"}


def _type(default: Any):
    """How a flag's text becomes the setting: counts as ``1e6`` too (``breakout_dqn.arguments.count``)."""
    if isinstance(default, bool) or not isinstance(default, int | float):
        return str
    return count if isinstance(default, int) else float


def build_parser(shown: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The parser; its help shows ``shown``'s values (default: the ``default`` preset's)."""
    shown = shown if shown is not None else resolve({})
    parser = ArgumentParser(
        prog=PROG, argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DQN (or PQN) on real Breakout (ale-py). Explicit flags override the chosen --preset; "
        f"the defaults below are those of --preset {shown.preset} (--algorithm {shown.algorithm}).",
        epilog="Print the resolved settings without training: breakout-dqn train [FLAGS] --print-config")
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    groups["run"].add_argument("--print-config", action="store_true",
                               help="print the resolved settings as JSON and exit (nothing is written)")
    shown_values = shown.to_json()
    for name, setting_field in all_fields().items():
        meta, names = setting_field.metadata, [flag(name), *([ALIASES[name]] if name in ALIASES else [])]
        value = shown_values.get(name, setting_field.default if setting_field.default is not MISSING else None)
        note = "" if name in shown_values else f"; not used by --algorithm {shown.algorithm}"
        help_text = f"{meta['help']} (default: {value}{note})"
        group = groups[meta["group"]]
        if name == "preset":
            group.add_argument(*names, metavar="NAME", help=f"{meta['help']}: {', '.join(PRESETS)} "
                               f"(default: default)")
        elif meta["choices"]:
            group.add_argument(*names, choices=meta["choices"], help=help_text)
        elif isinstance(setting_field.default, bool) or setting_field.type == "bool | None":
            group.add_argument(*names, action=argparse.BooleanOptionalAction, help=help_text)
        elif setting_field.default is None:
            group.add_argument(*names, type=float, help=help_text)
        else:
            group.add_argument(*names, type=_type(setting_field.default),
                               help=help_text, metavar=name.split("_")[-1].upper())
        if name in ALIASES:  # hide the alias: help lists the one name
            group._group_actions[-1].option_strings = [flag(name)]
    return parser


def shown_config(argv: list[str]) -> TrainConfig:
    """The settings help should show: those of the ``--preset`` and ``--algorithm`` in ``argv``, if valid."""
    early = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    early.add_argument("--preset")
    early.add_argument("--algorithm")
    known, _ = early.parse_known_args(argv)
    try:
        return resolve(vars(known))
    except BreakoutDQNError:  # a bad --preset or --algorithm: the full parse names it
        return resolve({})


def explicit_settings(argv: list[str]) -> tuple[dict[str, Any], bool]:
    """(the settings given on the command line, --print-config)."""
    values = vars(build_parser(shown_config(argv)).parse_args(argv))
    return values, bool(values.pop("print_config", False))
