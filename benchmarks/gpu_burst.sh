#!/usr/bin/env bash
# GPU burst: DQN `default` and PQN trained for a few minutes each on the GPU (Keras' JAX backend), then
# the same on the CPU, with their agent steps/s, the GPU's utilisation, where a step's time goes
# (benchmarks/train_phases.py) and short learning curves (docs/guides/gpu.md). Made for the project's
# H100 machines: Python 3.12 with jax + CUDA, no network and no TensorFlow; what they lack travels as
# wheels (bash benchmarks/gpu_burst_wheels.sh, run where PyPI is reachable).
#
#   bash benchmarks/gpu_burst.sh --out DIR [--wheels .whl] [--seconds 100] [--cpu-seconds 50]
#        [--profile-seconds 1] [--cpu-backends "jax"] [--no-gpu] [--no-profile]
#
# --seconds / --cpu-seconds: wall time of each trainer run on the GPU / the CPU, start-up included (each is
# stopped by SIGTERM, which checkpoints, as a batch job's stop would). The defaults take about 7 minutes
# on a 16-core H100 machine, install included. Without an NVIDIA GPU (no `nvidia-smi -L`) the GPU half is
# skipped, and said so. DIR receives at most 6 files, rewritten after each run (a call cut short keeps
# what ran): summary.md, summary.json, curves.csv, runs.tar.gz (each run's metrics.jsonl and
# config.json), gpu-utilisation.csv (nvidia-smi samples) and burst.log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
out="" wheels="" seconds=100 cpu_seconds=50 profile_seconds=1 cpu_backends="jax" gpu=1 profile=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --cpu-seconds) cpu_seconds=$2; shift 2 ;;
    --profile-seconds) profile_seconds=$2; shift 2 ;;
    --cpu-backends) cpu_backends=$2; shift 2 ;;
    --no-gpu) gpu=0; shift ;;
    --no-profile) profile=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_burst: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "gpu_burst: --out DIR is required" >&2; exit 2; }
case "$python" in */*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/burst.log") 2>&1
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-burst.XXXXXX")
mkdir -p "$work/runs"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
started=$(date +%s)
say() { echo "gpu_burst [$(( $(date +%s) - started ))s]: $*"; }

if [ -n "$wheels" ]; then  # a machine without network: the carried wheels, beside its own packages
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
    "$wheels"/*.whl
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  say "installed $(ls "$wheels" | wc -l) wheels from $wheels"
fi
if [ "$gpu" = 1 ] && ! nvidia-smi -L >/dev/null 2>&1; then
  say "no NVIDIA GPU here (nvidia-smi -L failed): the GPU half is skipped"
  gpu=0
fi

# From $work, not the checkout: `python -` and `python -m` put the current folder first on sys.path.
cd "$work"
"$python" - "$work/versions.json" <<'EOF'
import importlib.util, json, platform, sys
from importlib import metadata
from breakout_dqn.training.device import cpu_name
versions = {}
for name in ("breakout-dqn", "jax", "jaxlib", "keras", "numpy", "ale-py"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
machine = {"python": platform.python_version(), "cpu": cpu_name(),
           "tensorflow_installed": importlib.util.find_spec("tensorflow") is not None}
json.dump({"packages": versions, "machine": machine}, open(sys.argv[1], "w"), indent=2)
print(json.dumps({**versions, **machine}))
EOF

sampler=""
if [ "$gpu" = 1 ]; then
  nvidia-smi -L
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv,noheader,nounits -lms 500 \
    >"$out/gpu-utilisation.csv" &
  sampler=$!
fi
trap '[ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true; rm -rf "$work"' EXIT

phases() {  # device backend dqn-envs pqn-envs
  say "phase profile on $1 ($2): DQN games $3, PQN games $4"
  KERAS_BACKEND=$2 timeout -k 30 200 "$python" "$repo/benchmarks/train_phases.py" --device "$1" \
    --seconds "$profile_seconds" --dqn-envs $3 --pqn-envs $4 --json "$work/phases-$1-$2.json" \
    || say "phase profile on $1 ($2) failed (exit $?)"
}

train() {  # algorithm device backend seconds log-every [more train flags]
  local name="$1-$2-$3" preset=default status=0
  [ "$1" = pqn ] && preset=pqn
  say "train $name for $4 s"
  (KERAS_BACKEND=$3 timeout --preserve-status -k 60 -s TERM "$4" "$python" -m breakout_dqn.cli train \
    --out "runs/$name" --preset "$preset" --backend "$3" --device "$2" --seed 1 --no-durable-replay \
    --eval-every 0 --checkpoint-every 1000000000 --log-every "$5" --no-progress "${@:6}") || status=$?
  # 143: stopped by the SIGTERM above after its checkpoint, as planned; 0: finished its steps first.
  case "$status" in 0|143) ;; *) say "train $name exited $status" ;; esac
  summarize >/dev/null
}

summarize() {  # the figures so far into $out
  "$python" "$repo/benchmarks/gpu_burst_summary.py" "$work/runs" "$out" --utilisation "$out/gpu-utilisation.csv" \
    --phases "$work"/phases-*.json --versions "$work/versions.json"
  local kept
  kept=$(cd "$work" && ls runs/*/metrics.jsonl runs/*/config.json 2>/dev/null || true)
  [ -z "$kept" ] || tar -czf "$out/runs.tar.gz" -C "$work" $kept
}

if [ "$gpu" = 1 ]; then
  [ "$profile" = 0 ] || phases gpu jax "8 32" "32 128"
  train dqn gpu jax "$seconds" 4096
  train pqn gpu jax "$seconds" 4096
fi
for backend in $cpu_backends; do
  [ "$profile" = 0 ] || phases cpu "$backend" "8" "32"
  # DQN's warm-up of 80,000 agent steps would fill a CPU run's minute: it learns from 8,192 here.
  train dqn cpu "$backend" "$cpu_seconds" 512 --learning-starts 8192
  train pqn cpu "$backend" "$cpu_seconds" 4096
done

[ -z "$sampler" ] || { kill "$sampler" 2>/dev/null || true; sampler=""; }
summarize
say "done: $(ls "$out" | tr '\n' ' ')"
