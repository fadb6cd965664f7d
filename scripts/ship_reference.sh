#!/usr/bin/env bash
# Ship a training run as the reference agent: evaluate -> export (parity gate) -> verify -> record.
#
#   bash scripts/ship_reference.sh [RUN_DIR] [EPISODES]      (defaults: runs/reference, 30)
#
# RUN_DIR is a stopped (SIGTERM) or finished `breakout-dqn train` run: its model.keras was saved
# with its newest checkpoint. Writes models/breakout-dqn.onnx and results/<run name>/{eval,parity,
# verify,config}.json, metrics.jsonl and learning_curve.png (the run's record), then plays the shipped
# model's long evaluation: GAMES_PER_SEED games for each of SEEDS (100 x "0 1 2": 300 games, ~8 min
# on 2 cores), merged by scripts/merge_verify.py into results/<run name>/eval-<games>.json (a Keras
# evaluation the experiment queue left there is kept as eval-<games>-keras.json). Nothing
# is replaced unless the export's parity gate and verify (MIN_SCORE) pass; check `git diff` before committing.
# Env: RESULTS, MODEL (other destinations), MIN_SCORE (verify gate, default 20), SEEDS (empty: no long
# evaluation), GAMES_PER_SEED, BIN (where breakout-dqn is; default .venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/reference}
EPISODES=${2:-30}
MIN_SCORE=${MIN_SCORE:-20}  # verify fails (and nothing is recorded) below it
RESULTS=${RESULTS:-results/$(basename "$RUN")}
MODEL=${MODEL:-models/breakout-dqn.onnx}
SEEDS=${SEEDS-0 1 2}
GAMES_PER_SEED=${GAMES_PER_SEED:-100}
BIN=${BIN:-.venv/bin}
export TF_CPP_MIN_LOG_LEVEL=2

# The run directory's names and its newest checkpoint come from breakout_dqn.training.run_directory.
layout=$("$BIN/python" -m breakout_dqn.training.run_directory newest-checkpoint "$RUN") \
  || { echo "ship_reference: no checkpoint in $RUN" >&2; exit 2; }
checkpoint=$(echo "$layout" | sed -n 1p)
steps=$(echo "$layout" | sed -n 2p)
[ -f "$RUN/model.keras" ] || { echo "ship_reference: no $RUN/model.keras" >&2; exit 2; }
if [ "$checkpoint" -nt "$RUN/model.keras" ]; then
  echo "ship_reference: $checkpoint is newer than $RUN/model.keras (being saved?): try again" >&2
  exit 2
fi
games=$(( GAMES_PER_SEED * $(echo "$SEEDS" | wc -w) ))
if [ -n "$SEEDS" ]; then  # a Keras evaluation already under that name (the queue's) is kept, renamed
  "$BIN/python" scripts/merge_verify.py --set-aside "$RESULTS/eval-$games.json"
fi
staged=$(mktemp -d)
cp breakout_dqn/__init__.py "$staged/version.py"
shipped=""
# A failed step puts the version back: only a model that shipped makes a release.
trap '[ -n "$shipped" ] || cp "$staged/version.py" breakout_dqn/__init__.py; rm -rf "$staged"' EXIT
version=$("$BIN/python" scripts/bump_version.py)  # a new shipped model is a new release (CHANGELOG.md)
echo "== release $version: its model's metadata and pin carry it"

echo "== evaluate $RUN/model.keras ($steps agent steps), $EPISODES games"
"$BIN/breakout-dqn" evaluate "$RUN/model.keras" --episodes "$EPISODES" --json "$staged/eval.json"
score=$("$BIN/python" -c "import json,sys; print(round(json.load(open(sys.argv[1]))['mean'], 1))" "$staged/eval.json")

echo "== export (parity gate)"
"$BIN/breakout-dqn" export "$RUN/model.keras" --out "$staged/model.onnx" --json "$staged/parity.json" \
  --train-steps "$steps" --eval-score "$score"

echo "== verify the export, $EPISODES games"
"$BIN/breakout-dqn" verify "$staged/model.onnx" --min-score "$MIN_SCORE" --episodes "$EPISODES" --json "$staged/verify.json"

echo "== record in $RESULTS"
"$BIN/python" - "$checkpoint" "$staged/eval.json" "$RUN" "$EPISODES" "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path

from breakout_dqn.training.checkpoint import load_checkpoint

checkpoint, eval_path, run, episodes, results = sys.argv[1:]
_, state = load_checkpoint(Path(checkpoint))
record = json.load(open(eval_path))
record["model"] = f"{run}/model.keras"
record.update(
    train_agent_steps=state["step"], train_frames=4 * state["step"], train_updates=state["updates"],
    train_games=state["games"], train_wall_seconds=round(state["wall_seconds"], 1),
    command=f"breakout-dqn evaluate {run}/model.keras --episodes {episodes} --json {results}/eval.json",
    recorded_by="scripts/ship_reference.sh",
)
json.dump(record, open(eval_path, "w"), indent=2)
open(eval_path, "a").write("\n")
EOF
# The records name where the model is shipped, not the staging copy that was exported and verified.
sed -i "s|$staged/model.onnx|$MODEL|g" "$staged/parity.json" "$staged/verify.json"
mkdir -p "$(dirname "$MODEL")"
cp "$staged/model.onnx" "$MODEL.tmp" && mv "$MODEL.tmp" "$MODEL"
shipped=1
if [ "$MODEL" = models/breakout-dqn.onnx ]; then  # the Kubernetes serving Deployment pins the shipped model's version
  pin=$("$BIN/python" deploy/k8s/serve/check_model_version.py --model "$MODEL" --print)
  sed -i -E "s/(BREAKOUT_DQN_MODEL_VERSION=)[^ ]+/\1$pin/" deploy/k8s/serve/kustomization.yaml \
    deploy/k8s/overlays/gke/serve/release.env
  echo "pinned $pin in deploy/k8s/serve/kustomization.yaml and overlays/gke/serve/release.env"
  "$BIN/python" scripts/bump_version.py --retag "$version" > /dev/null  # the images of the release
fi
mkdir -p "$RESULTS"
cp "$staged/eval.json" "$staged/parity.json" "$staged/verify.json" "$RESULTS/"
cp "$RUN/config.json" "$RUN/metrics.jsonl" "$RESULTS/"
"$BIN/breakout-dqn" plot "$RUN" --out "$RESULTS/learning_curve.png"
echo "shipped: $steps agent steps, score $score over $EPISODES games"
if [ -n "$SEEDS" ]; then
  human=$("$BIN/python" -c "from breakout_dqn.atari import HUMAN_SCORE; print(HUMAN_SCORE)")
  reports=()
  for seed in $SEEDS; do
    echo "== verify $MODEL: $GAMES_PER_SEED games, seed $seed"
    # Exit 4 (below the human score) is still a measurement: keep it, the record says so.
    "$BIN/breakout-dqn" verify "$MODEL" --min-score "$human" --episodes "$GAMES_PER_SEED" --seed "$seed" --json \
      > "$staged/verify-seed$seed.json" || [ $? -eq 4 ]
    reports+=("$staged/verify-seed$seed.json")
  done
  "$BIN/python" scripts/merge_verify.py "$RESULTS/eval-$games.json" "${reports[@]}"
fi
echo "now write release $version in CHANGELOG.md, and update models/MODEL_CARD.md and the docs' numbers from $RESULTS"
