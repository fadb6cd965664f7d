"""The packages stay readable: no function longer than a screen (issue: "a house the next engineer can carry on")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("breakout_dqn", "training", "export", "serving")
MAX_FUNCTION_LINES = 60


def long_functions(path: Path) -> list[str]:
    """``file:line name (N lines)`` for each function or method in ``path`` over the limit, decorators excluded."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_the_packages_is_longer_than_60_lines() -> None:
    sources = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(sources) > 40  # the packages are where this test thinks they are
    assert [problem for path in sources for problem in long_functions(path)] == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    sample = ROOT / "build" / "shape_probe.py"
    sample.parent.mkdir(exist_ok=True)
    sample.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    try:
        assert [problem.split()[1] for problem in long_functions(sample)] == ["long"]
    finally:
        sample.unlink()
