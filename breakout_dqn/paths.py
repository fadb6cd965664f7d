"""Checks on output paths, made before long work (a game, an evaluation) rather than after it."""

from __future__ import annotations

import tempfile
from pathlib import Path


def output_path_error(flag: str, path: Path, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` cannot be written as the output of ``flag``, or None if it can.

    Creates the missing parent directories and probes them with a temporary file (removed), so
    the answer holds for root too, where permission bits say nothing.
    """
    if suffixes and path.suffix.lower() not in suffixes:
        return f"{flag} must end in {' or '.join(suffixes)}, got {path}"
    if path.is_dir():
        return f"{flag} {path} is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        return f"{flag} {path}: cannot write in {path.parent}: {error.strerror or error}"
    return None
