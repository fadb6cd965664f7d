"""argparse the one way every subcommand uses it: defaults shown alike, one-line errors, counts as ``1e6``."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from breakout_dqn.errors import UsageError

T = TypeVar("T")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends in ``(default: X)`` unless its text already names the default."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``PROG: error: ...``), exit 2, no usage dump."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_COUNT = re.compile(r"^[+-]?(\d[\d_]*)(\.\d*)?([eE][+]?\d+)?$")


def count(text: str) -> int:
    """An integer written as ``1000000``, ``1_000_000`` or ``1e6`` (steps, games, transitions)."""
    cleaned = text.strip()
    if not _COUNT.match(cleaned):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    value = float(cleaned.replace("_", ""))
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def from_environment(variable: str, parse: Callable[[str], T], default: T) -> T:
    """``$variable`` parsed by ``parse`` (unset or empty: ``default``); a bad value raises UsageError naming it."""
    text = os.environ.get(variable, "")
    if not text:
        return default
    try:
        return parse(text)
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise UsageError(f"${variable}={text!r}: {error}") from None
