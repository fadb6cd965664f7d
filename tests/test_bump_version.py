"""A shipped model is a new release: the version's minor part moves, once, in the one place it is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bump_version import IMAGE_TAG, bump_minor, image_files, retag

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


def test_retag_names_every_image_of_the_project_and_nothing_else() -> None:
    text = ("image: registry.invalid/breakout-dqn:0.2.0\nimage: registry.invalid/breakout-dqn-serve:0.2.0\n"
            "image: registry.invalid/breakout-dqn-train-gpu:0.2.0\n"
            "docker build -t REGISTRY/breakout-dqn/serve:0.2.0 .\n"
            "image: registry.invalid/other:0.2.0\nBREAKOUT_DQN_MODEL_VERSION=0.2.0+5b228c2bd79f\n")
    retagged = retag(text, "0.3.0")
    assert retagged.count(":0.3.0") == 4
    assert "other:0.2.0" in retagged and "BREAKOUT_DQN_MODEL_VERSION=0.2.0+5b228c2bd79f" in retagged


def test_the_manifests_images_are_tagged_with_the_package_version() -> None:
    from breakout_dqn import __version__

    tags = {(path.name, match.group(0)) for path in image_files() for match in IMAGE_TAG.finditer(path.read_text())}
    assert len(tags) >= 5  # the train, serve and train-gpu images and the guide's commands
    stale = sorted(tag for tag in tags if not tag[1].endswith(f":{__version__}"))
    assert not stale, f"images not tagged {__version__} (python scripts/bump_version.py --retag {__version__}): {stale}"
