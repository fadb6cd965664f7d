"""Build the installed package layout as a link tree: ``TARGET/breakout_dqn/training -> training/``, ...

pyproject.toml maps the stage folders into ``breakout_dqn`` (package-dir), a mapping that tools reading
source trees cannot follow (mypy; griffe, behind the docs' Python API page). They read this tree instead.
Usage: ``python scripts/installed_layout.py TARGET`` (replaced if it exists; keep it under build/).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """pyproject.toml's ``[tool.setuptools.package-dir]``: installed package name -> folder."""
    section = (root / "pyproject.toml").read_text().split("[tool.setuptools.package-dir]")[1].split("\n[")[0]
    return dict(re.findall(r'^"([\w.]+)" = "(\w+)"$', section, re.MULTILINE))


def build_layout(target: Path, root: Path = ROOT) -> Path:
    """The link tree under ``target``: the packages at their installed names, each file a symlink."""
    if target.exists():
        shutil.rmtree(target)
    for top in ("breakout", "breakout_dqn"):
        (target / top).mkdir(parents=True)
        for path in (root / top).iterdir():
            (target / top / path.name).symlink_to(path)
    for package, folder in package_dirs(root).items():
        (target / Path(*package.split("."))).symlink_to(root / folder)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/installed_layout.py TARGET")
    print(build_layout(Path(sys.argv[1]).resolve()))
