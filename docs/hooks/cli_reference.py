"""The CLI reference page, rendered from each subcommand's own argparse parser at build time.

Every module named in ``breakout_dqn.cli.COMMANDS`` exposes ``build_parser()``; a module without
one stops the build (``ReferenceError``), so the page can never describe flags the code lacks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import textwrap
from collections.abc import Iterator

MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|])")  # help is plain text: shown as written, never as markup
HELP_WIDTH_COLUMNS = 100  # argparse wraps help to $COLUMNS: fixed, so the page does not depend on the terminal


class ReferenceError(RuntimeError):
    """A reference page cannot be generated from the code (e.g. a subcommand module lacks build_parser)."""


@contextlib.contextmanager
def plain_environment() -> Iterator[None]:
    """Defaults as a fresh shell sees them: no ``BREAKOUT_DQN_*`` variables, a fixed help width."""
    saved = dict(os.environ)
    try:
        for name in [name for name in os.environ if name.startswith("BREAKOUT_DQN_")]:
            del os.environ[name]
        os.environ["COLUMNS"] = str(HELP_WIDTH_COLUMNS)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def subcommand_parser(module_name: str) -> argparse.ArgumentParser:
    """The parser a subcommand's module builds with ``build_parser()``; ReferenceError if it has none."""
    module = importlib.import_module(module_name)
    build_parser = getattr(module, "build_parser", None)
    if not callable(build_parser):
        raise ReferenceError(f"{module_name} has no build_parser(): the CLI reference is generated from it")
    parser = build_parser()
    if not isinstance(parser, argparse.ArgumentParser):
        raise ReferenceError(f"{module_name}.build_parser() returned {type(parser).__name__}, not an ArgumentParser")
    return parser


def options_table(parser: argparse.ArgumentParser) -> list[str]:
    """One Markdown table per argument group, in the words and defaults ``--help`` prints."""
    formatter = parser._get_formatter()  # argparse has no public API for one action's expanded help
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [action for action in group._group_actions
                   if action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)]
        if not actions:
            continue
        lines += ["", f"**{group.title}**", "", "| argument | what it does |", "|---|---|"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            help_text = formatter._expand_help(action) if action.help else ""
            help_cell = MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(help_text.split()))
            lines.append(f"| `{invocation}` | {help_cell} |")
    return lines


def render_cli_reference(commands: dict[str, tuple[str, str]], program: str = "breakout-dqn") -> str:
    """Markdown for every subcommand: summary, usage, its options as tables per group, ``--help`` verbatim."""
    lines = [
        "# CLI reference",
        "",
        f"One console script, `{program}`, with one subcommand per job. This page is generated when the",
        "site is built, from each subcommand's own parser (`build_parser()` in the module named below),",
        "so it always matches the installed code. Defaults are those of a shell without `BREAKOUT_DQN_*`",
        "variables. Exit codes: see [Contracts](contracts.md#exit-codes).",
        "",
        "| subcommand | module | what it does |",
        "|---|---|---|",
    ]
    lines += [f"| [`{name}`](#{program}-{name}) | `{module}` | {summary} |"
              for name, (module, summary) in commands.items()]
    with plain_environment():
        for name, (module_name, summary) in commands.items():
            parser = subcommand_parser(module_name)
            lines += ["", f"## {program} {name}", "", f"{summary}.", ""]
            lines += ["```text", parser.format_usage().rstrip(), "```"]
            if parser.description:
                lines += ["", " ".join(parser.description.split())]
            lines += options_table(parser)
            help_text = textwrap.indent(parser.format_help().rstrip(), "    ")
            lines += ["", f'??? note "`{program} {name} --help`, verbatim"', "", "    ```text", help_text, "    ```"]
    return "\n".join(lines) + "\n"
