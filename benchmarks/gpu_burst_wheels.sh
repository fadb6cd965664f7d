#!/usr/bin/env bash
# Fill a folder (default .whl/, git-ignored) with what benchmarks/gpu_burst.sh needs on a GPU machine
# that has Python 3.12 and jax with CUDA but no network and no TensorFlow: the project's own wheel and
# the packages of its JAX training path beyond that machine's image, at the versions
# requirements/constraints.txt pins. Run it where PyPI is reachable, in the repository root.
#
#   bash benchmarks/gpu_burst_wheels.sh [DEST]        # then: gpu_burst.sh --wheels DEST
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
python=${PYTHON:-python3}
# Not in the GPU machines' image (docs/guides/gpu.md); numpy, h5py, ml-dtypes, rich, absl-py, protobuf,
# packaging, tqdm, cloudpickle and typing-extensions are.
packages=(keras namex optree ale-py gymnasium farama-notifications tensorboardx)

pins=()
for name in "${packages[@]}"; do
  pin=$(grep -i "^${name}==" requirements/constraints.txt || true)
  [ -n "$pin" ] || { echo "gpu_burst_wheels: no pin for $name in requirements/constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done

rm -rf "$dest"
mkdir -p "$dest"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${pins[@]}"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" .
rm -rf build ./*.egg-info
ls -1 "$dest"
du -sh "$dest"
