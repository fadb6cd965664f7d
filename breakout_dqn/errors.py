"""One error family for every subcommand: each error carries the exit code CI users gate on.

``breakout_dqn.cli`` maps any ``BreakoutDQNError`` to one line on stderr and its exit code; a
subcommand raises, it does not print and return numbers. Anything else is a bug: it exits 1 with
a traceback. The codes are part of the interface (docs: "Export and CI gating"): never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # an I/O failure (disk full, unreadable file) or an internal error
    USAGE = 2  # a bad flag, environment variable, input file or configuration
    CONTRACT = 3  # a model that breaks the contract (breakout_dqn.contract)
    GATE = 4  # a gate not passed: the parity gate (export), the score floor (verify)


class BreakoutDQNError(Exception):
    """Base of every error a user can cause or fix; ``exit_code`` says how the process ends."""

    exit_code: int = ExitCode.USAGE  # an ExitCode, or 128 + a signal's number (a run stopped by it)

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(BreakoutDQNError):
    """A value that cannot work, named with where it came from (a flag or a ``BREAKOUT_DQN_*`` variable)."""

    exit_code = ExitCode.USAGE


class OperationFailed(BreakoutDQNError):
    """The work could not be done although the request was valid (a full disk, a lost connection)."""

    exit_code = ExitCode.FAILURE


class GateFailed(BreakoutDQNError):
    """A model measured and found short of a gate (parity, score floor)."""

    exit_code = ExitCode.GATE


class ModelLoadError(UsageError, ValueError):
    """A model file that is missing, unreadable, or not a model of this project's kind."""


class ContractError(BreakoutDQNError, ValueError):
    """An array, a payload or a model that does not match the contract (``breakout_dqn.contract``)."""

    exit_code = ExitCode.CONTRACT


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters (library errors span many lines)."""
    text = " ".join(str(error).split())[:limit]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
