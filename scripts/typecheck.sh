#!/usr/bin/env bash
# mypy over the installed layout: the stage folders (training/, export/, serving/) install as
# breakout_dqn.<stage> (pyproject.toml's package-dir), a mapping mypy cannot follow from the checkout,
# so it checks a link tree of that layout built under build/ (ignored by git). Arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/breakout_dqn"
for path in breakout_dqn/*.py; do ln -s "$PWD/$path" "$tree/$path"; done
for stage in training export serving models; do ln -s "$PWD/$stage" "$tree/breakout_dqn/$stage"; done
ln -s "$PWD/breakout" "$tree/breakout"
cd "$tree"
mypy --config-file "$OLDPWD/pyproject.toml" -p breakout_dqn "$@"
