#!/usr/bin/env bash
# mypy over the installed layout: the stage folders (training/, export/, serving/) install as
# breakout_dqn.<stage> (pyproject.toml's package-dir), a mapping mypy cannot follow from the checkout,
# so it checks a link tree of that layout (scripts/installed_layout.py, under build/, ignored by git).
# Arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(python scripts/installed_layout.py build/typecheck)
cd "$tree"
mypy --config-file "$OLDPWD/pyproject.toml" -p breakout_dqn "$@"
