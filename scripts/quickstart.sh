#!/usr/bin/env bash
# Fresh machine -> a working pipeline, in one command:
#   1. set up a virtualenv with the `train` extra (TensorFlow, ale-py, onnxruntime, grpcio, ...);
#   2. watch the shipped agent (models/breakout-dqn.onnx): serve it over gRPC and play one game
#      of real Breakout through the server, recording a video;
#   3. run the main job on a small default: train 20k agent steps -> export (parity gate) -> verify.
# Everything lands in runs/quickstart-<time>/. Env: QUICKSTART_STEPS (default 20000), PORT (50051).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${QUICKSTART_STEPS:-20000}
PORT=${PORT:-50051}
OUT="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

if [ ! -x .venv/bin/breakout-dqn ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --constraint requirements/constraints.txt -e ".[train]"
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/3 the shipped agent, served over gRPC on 127.0.0.1:$PORT, plays one game"
breakout-dqn serve --port "$PORT" > "$OUT/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
breakout-dqn play --server "127.0.0.1:$PORT" --episodes 1 --video "$OUT/shipped-agent.mp4"
kill -TERM "$server" && wait "$server" || true
trap - EXIT

echo "== 2/3 train $STEPS agent steps (default preset) into $OUT/run"
breakout-dqn train --out "$OUT/run" --steps "$STEPS" --learning-starts 5000 --epsilon-decay-steps 10000 \
  --replay-capacity 100000 --eval-every 0 --final-eval-episodes 5 --checkpoint-every 10000
breakout-dqn plot "$OUT/run"

echo "== 3/3 export behind the parity gate, then verify"
breakout-dqn export "$OUT/run/model.keras" --out "$OUT/model.onnx"
breakout-dqn verify "$OUT/model.onnx"
echo "done: $OUT"
