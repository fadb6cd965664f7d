"""The training presets as one table of settings, resolved from ``training/config.py`` at build time."""

from __future__ import annotations

from typing import Any

# Settings that say where and how a run is kept, not what it learns: left out of the comparison.
BOOKKEEPING = {"out", "seed", "resume", "auto_resume", "progress", "preset", "precision", "xla"}


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= 1_000:
        return f"{value:,}"
    return "unset" if value is None else str(value)


NOT_APPLICABLE = "—"  # the preset's algorithm has no such setting (a PQN preset's replay size)


def render_presets_table() -> str:
    """Markdown: one row per setting on which the presets differ, one column per preset, with the flag's help.

    Settings of every algorithm (``all_fields``): a DQN-only setting reads "—" under a PQN preset.
    """
    from breakout_dqn.training.config import PRESETS, all_fields, flag, resolve

    names = ["default", *sorted(name for name in PRESETS if name != "default")]
    resolved = {name: resolve({"preset": name}) for name in names}
    settings = [setting for name, setting in all_fields().items() if name not in BOOKKEEPING]

    def values(setting_name: str) -> list[str]:
        return [shown(getattr(resolved[name], setting_name)) if hasattr(resolved[name], setting_name)
                else NOT_APPLICABLE for name in names]

    header = "| setting (flag) | " + " | ".join(f"`{name}`" for name in names) + " | what it is |"
    lines = [header, "|---|" + "---|" * len(names) + "---|"]
    same = []
    for setting in settings:
        row = values(setting.name)
        if len(set(row)) == 1:
            same.append(f"`{flag(setting.name)}` {row[0]}")
            continue
        help_text = " ".join(setting.metadata.get("help", "").split()).replace("|", "\\|")
        lines.append(f"| `{flag(setting.name)}` | " + " | ".join(row) + f" | {help_text} |")
    lines += ["", f"{NOT_APPLICABLE}: the preset's algorithm has no such setting. "
              "The same in every preset: " + ", ".join(same) + "."]
    return "\n".join(lines) + "\n"
