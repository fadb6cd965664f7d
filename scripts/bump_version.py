#!/usr/bin/env python3
"""Bump the package's minor version (``X.Y.Z`` -> ``X.(Y+1).0``) in breakout_dqn/__init__.py; print the new one.

    python scripts/bump_version.py [--file PATH]

A new shipped model is a new release (CHANGELOG.md): ``scripts/ship_reference.sh`` runs this before its
export, so the model's metadata and its Kubernetes pin (``<version>+<sha256[:12]>``) name the release.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

VERSION = re.compile(r'^__version__ = "(\d+)\.(\d+)\.(\d+)"$', re.MULTILINE)
DEFAULT = Path(__file__).resolve().parents[1] / "breakout_dqn" / "__init__.py"


def bump_minor(text: str) -> tuple[str, str]:
    """(the file's text with the next minor version, that version); ValueError without one version line."""
    found = VERSION.findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one __version__ = \"X.Y.Z\" line, found {len(found)}")
    major, minor, _ = (int(part) for part in found[0])
    version = f"{major}.{minor + 1}.0"
    return VERSION.sub(f'__version__ = "{version}"', text), version


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=DEFAULT)
    args = parser.parse_args(argv)
    try:
        text, version = bump_minor(args.file.read_text())
    except (OSError, ValueError) as error:
        print(f"bump_version: error: {args.file}: {error}", file=sys.stderr)
        return 2
    args.file.write_text(text)
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
