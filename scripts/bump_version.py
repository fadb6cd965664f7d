#!/usr/bin/env python3
"""Bump the package's minor version (``X.Y.Z`` -> ``X.(Y+1).0``) in breakout_dqn/__init__.py; print the new one.

    python scripts/bump_version.py [--file PATH]
    python scripts/bump_version.py --retag VERSION     # the images' tags in deploy/k8s and its guide

A new shipped model is a new release (CHANGELOG.md): ``scripts/ship_reference.sh`` runs this before its
export, so the model's metadata and its Kubernetes pin (``<version>+<sha256[:12]>``) name the release,
and ``--retag`` once the model has shipped, so the manifests' images name the release too.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

VERSION = re.compile(r'^__version__ = "(\d+)\.(\d+)\.(\d+)"$', re.MULTILINE)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "breakout_dqn" / "__init__.py"
# This project's images as the manifests and the Kubernetes guide name them: breakout-dqn:X.Y.Z,
# breakout-dqn-serve:..., breakout-dqn-train-gpu:..., and REGISTRY/breakout-dqn/train:... in the guide.
IMAGE_TAG = re.compile(r"\b(breakout-dqn(?:-serve|-train-gpu)?|breakout-dqn/(?:train|serve|train-gpu)):\d+\.\d+\.\d+\b")


def image_files(root: Path = ROOT) -> list[Path]:
    """The files that name the images by tag."""
    return [*sorted((root / "deploy" / "k8s").rglob("*.yaml")), root / "docs" / "guides" / "kubernetes.md"]


def retag(text: str, version: str) -> str:
    """``text`` with every image of this project tagged ``version``."""
    return IMAGE_TAG.sub(lambda match: f"{match.group(1)}:{version}", text)


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
    parser.add_argument("--retag", metavar="VERSION", help="tag the images in deploy/k8s and its guide VERSION instead")
    args = parser.parse_args(argv)
    if args.retag is not None:
        if not re.fullmatch(r"\d+\.\d+\.\d+", args.retag):
            print(f"bump_version: error: --retag {args.retag!r} is not X.Y.Z", file=sys.stderr)
            return 2
        for path in image_files():
            text = path.read_text()
            if retag(text, args.retag) != text:
                path.write_text(retag(text, args.retag))
                print(path.relative_to(ROOT))
        return 0
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
