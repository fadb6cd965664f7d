"""A shipped model is a new release: the version's minor part moves, once, in the one place it is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bump_version import bump_minor

ROOT = Path(__file__).resolve().parents[1]


def test_the_minor_part_moves_and_the_patch_resets() -> None:
    text, version = bump_minor('"""doc"""\n\n__version__ = "0.2.3"\n')
    assert version == "0.3.0" and '__version__ = "0.3.0"' in text and text.startswith('"""doc"""')


@pytest.mark.parametrize("text", ["no version here\n", '__version__ = "1.0"\n',
                                  '__version__ = "1.0.0"\n__version__ = "1.1.0"\n'])
def test_a_file_without_exactly_one_version_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected one __version__"):
        bump_minor(text)


def test_the_script_rewrites_the_file_it_is_given(tmp_path: Path) -> None:
    package = tmp_path / "__init__.py"
    package.write_text((ROOT / "breakout_dqn" / "__init__.py").read_text())
    from breakout_dqn import __version__

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bump_version.py"), "--file", str(package)],
                            capture_output=True, text=True, check=True)
    major, minor, _ = __version__.split(".")
    assert result.stdout.strip() == f"{major}.{int(minor) + 1}.0"
    assert f'__version__ = "{result.stdout.strip()}"' in package.read_text()
    broken = tmp_path / "broken.py"
    broken.write_text("nothing\n")
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "bump_version.py"), "--file", str(broken)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and broken.read_text() == "nothing\n"
