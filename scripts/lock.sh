#!/usr/bin/env bash
# Refresh requirements/constraints.txt, the pins every install uses (Dockerfile, .ci/run, CI):
# all of pyproject.toml's extras resolved for Linux x86-64 (glibc >= 2.28) and Python 3.11.
#
#   bash scripts/lock.sh                          # add what pyproject.toml newly needs, keep other pins
#   bash scripts/lock.sh --upgrade                # move every pin to the newest allowed release
#   bash scripts/lock.sh --upgrade-package onnxruntime
#
# uv keeps the existing pins as preferences, so a plain run changes only what it must. Needs uv
# (`pip install uv`); UV=/path/to/uv picks another one.
set -euo pipefail
cd "$(dirname "$0")/.."
"${UV:-uv}" pip compile pyproject.toml --all-extras --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh" \
  --quiet --output-file requirements/constraints.txt "$@"
