"""Atomic writes leave the old file or the whole new one, never a part; hashes read the whole file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from breakout_dqn.files import atomic_path, atomic_write_bytes, atomic_write_text, file_sha256


def test_atomic_writes_replace_the_file_and_make_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "run" / "eval.json"
    atomic_write_text(target, "old\n")
    atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert [path.name for path in target.parent.iterdir()] == ["eval.json"]  # no temp file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the model in place")
    with pytest.raises(RuntimeError, match="conversion failed"), atomic_path(target) as temp:
        assert temp.parent == target.parent and temp.suffix == ".onnx" and temp != target
        temp.write_bytes(b"half a mod")
        raise RuntimeError("conversion failed")
    assert target.read_bytes() == b"the model in place"
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]


def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "config.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_file_sha256_hashes_every_block(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 123)  # three 1 MiB reads, the last one short
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()
