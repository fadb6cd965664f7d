"""The training presets as one table of settings, resolved from ``training/config.py`` at build time."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

# Settings that say where and how a run is kept, not what it learns: left out of the comparison.
BOOKKEEPING = {"out", "seed", "resume", "auto_resume", "progress", "preset", "precision", "xla"}


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= 1_000:
        return f"{value:,}"
    return "unset" if value is None else str(value)


def render_presets_table() -> str:
    """Markdown: one row per setting on which the presets differ, one column per preset, with the flag's help."""
    from breakout_dqn.training.config import PRESETS, TrainConfig, resolve

    names = ["default", *sorted(name for name in PRESETS if name != "default")]
    resolved = {name: resolve({"preset": name}) for name in names}
    header = "| setting (flag) | " + " | ".join(f"`{name}`" for name in names) + " | what it is |"
    lines = [header, "|---|" + "---|" * len(names) + "---|"]
    for setting in fields(TrainConfig):
        if setting.name in BOOKKEEPING:
            continue
        values = [getattr(resolved[name], setting.name) for name in names]
        if len({repr(value) for value in values}) == 1:
            continue
        flag = "--" + setting.name.replace("_", "-")
        help_text = " ".join(setting.metadata.get("help", "").split()).replace("|", "\\|")
        lines.append(f"| `{flag}` | " + " | ".join(shown(value) for value in values) + f" | {help_text} |")
    same = [f"`--{setting.name.replace('_', '-')}` {shown(getattr(resolved['default'], setting.name))}"
            for setting in fields(TrainConfig)
            if setting.name not in BOOKKEEPING
            and len({repr(getattr(resolved[name], setting.name)) for name in names}) == 1]
    lines += ["", "The same in every preset: " + ", ".join(same) + "."]
    return "\n".join(lines) + "\n"
