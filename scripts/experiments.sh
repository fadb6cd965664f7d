#!/usr/bin/env bash
# The measured comparisons behind the presets, as a queue that survives being split across sessions.
#
#   setsid nohup bash scripts/experiments.sh > runs/experiments.log 2>&1 &    # start, or continue
#   bash scripts/experiments.sh --list                                          # where each run stands, time left
#
# Runs one `breakout-dqn train --auto-resume` after another (one at a time: they need both cores),
# each continuing from its newest checkpoint (and its durable replay) when the queue is started
# again. SIGTERM the trainer (`pkill -TERM -f "breakout-dqn train"`) to stop: it checkpoints, and
# the queue stops behind it. A finished run's record goes to results/<name>/: config, metrics.jsonl,
# eval.json (the trainer's final 30 games), the learning curve, and eval-300.json, a 300-game
# `breakout-dqn evaluate` of its model (30 games have a standard error of 5-10 points, too wide to
# tell ablations apart; ~5-10 min); where the run holds two checkpoints or more, also the same
# evaluation of the mean of its last two checkpoints and of the older of them alone. All runs use
# seed 1, the seed of results/cleanrl-1m, so that each differs from `default` in one setting only. A
# run may appear twice: an entry with a fourth field records the run when it reaches that entry's
# steps under that name (default-s1 at 1M, the first baseline, as results/default-s1-1m), and a later
# entry continues it. An entry whose record exists and whose
# run reached its steps is skipped, also when its run directory is gone (a new machine): the
# record's eval.json names the steps behind it. An ablation's record also gets comparison.json (the rule's
# verdict against BASELINE) and vs-baseline-steps.png (both curves). Its replay (~7 GB; its checkpoints stay) is deleted once
# it is recorded and judged to stay out (`python -m breakout_dqn.training.ablation` against BASELINE): it
# will not be continued. One that joins `default`, or that cannot be judged, keeps it: the new
# default's long run continues it. A fifth field, SOURCE@STEP, makes the entry a fork: its run starts
# as a copy of run SOURCE at its checkpoint STEP (replay included, so the fork continues exactly what
# SOURCE would have), then trains with --resume so that its flags change the copied settings; the
# source's own later entries come after its forks in the queue. A fork's replay is deleted once it
# is recorded: forks answer one question and are not continued. Env: QUEUE_FILE (lines
# "name|steps|flags[|record[|SOURCE@STEP]]" instead of the queue below), RUNS (where the run
# directories go), RESULTS (where the records go), EVAL_GAMES (games in eval-<n>.json; 0: none),
# BASELINE (the record ablations are judged against), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs}
RESULTS=${RESULTS:-results}
EVAL_GAMES=${EVAL_GAMES:-300}
BASELINE=${BASELINE:-$RESULTS/ablation-double-dueling}  # `default` (Double DQN + dueling) at 1M, bfloat16

# name | steps | flags (one change at a time against default) [| record name, default: name]
# The entries recorded before a setting joined `default` pin it off (--no-double-dqn, --no-dueling),
# so that each still names the run behind its record. Double DQN joined first (results/ablation-double:
# 102.8 against 87.0 over 300 games at 1M; that run went on to 3M as results/default-s1-3m), then
# the dueling head (results/ablation-double-dueling: 150.8 against 102.8), whose run is `default`
# at 1M now: the remaining ablations each add one change to it and are judged against its record.
# They pin --precision bfloat16, the arithmetic of that record (bfloat16 + oneDNN on an AMX Xeon),
# so that a piece run on a CPU without bfloat16 instructions stays comparable (it emulates
# bfloat16 under XLA there, 0.68x the speed of float32 + XLA for default's update on a Zen 3:
# results/update_paths_zen3.txt); on a CPU with them it is what `default` picks anyway.
QUEUE=(
  "pqn-s1|3000000|--preset pqn --seed 1"                              # PQN vs DQN per CPU-hour
  "default-s1|1000000|--preset default --seed 1 --no-double-dqn --no-dueling|default-s1-1m"  # the first baseline (float32)
  "pqn-s1|5000000|--preset pqn --seed 1|pqn-s1-5m"                    # the reference agent, still rising at 3M
  # bfloat16 + oneDNN (the fastest path on CPUs with AMX-BF16/AVX512_BF16) against default-s1-1m's float32
  # + XLA: does the cheaper update cost score at 1M? (it decides what --precision auto may choose)
  "default-bf16-s1|1000000|--preset default --seed 1 --no-double-dqn --no-dueling --precision bfloat16 --no-xla"
  "ablation-double|1000000|--preset default --seed 1 --double-dqn --no-dueling"
  "ablation-double|3000000|--preset default --seed 1 --no-dueling|default-s1-3m"  # Double DQN's long run
  "ablation-double-dueling|1000000|--preset default --seed 1 --dueling"  # = default now
  "ablation-dueling-nstep3|1000000|--preset default --seed 1 --precision bfloat16 --n-step 3"
  # the target-period ablation, the last of the list, before the dueling default's long run: at 1M it
  # fits one session on a CPU with bfloat16 instructions (~2 h), where the 3M run (~5-9 h) does not,
  # and the 3M run's directory has been lost with its machine twice (it starts over on a new one).
  "ablation-dueling-target8k|1000000|--preset default --seed 1 --precision bfloat16 --target-update 8000"
  # the dueling default's long run, the candidate to replace PQN as the shipped agent (it did, at 3M)
  "ablation-double-dueling|3000000|--preset default --seed 1 --dueling|default-dueling-s1-3m"
  # (its continuation to 5M was lost with its machine at 4.5M agent steps, unrecorded: retired)
  # PQN trained at the final epsilon 0.01 instead of 0.001 (one change against results/pqn-s1-5m),
  # closer to the evaluation's 0.05: recorded at 5M against pqn-s1-5m, then on to PQN's 10M budget
  "pqn-eps01-s1|5000000|--preset pqn --seed 1 --epsilon-end 0.01|pqn-eps01-s1-5m"
  # bigger batches less often at the same replay ratio (8 samples per agent step): batch 64 every 8
  # agent steps, 1.31x the trainer's speed on a Zen 5 (benchmarks/update_batch_size.py); against the
  # dueling baseline at 1M
  "ablation-dueling-batch64|1000000|--preset default --seed 1 --precision bfloat16 --batch-size 64 --train-frequency 8"
  "pqn-eps01-s1|10000000|--preset pqn --seed 1 --epsilon-end 0.01|pqn-eps01-s1-10m"
  # PQN trained at the evaluation's own epsilon, 0.05 (one change against results/pqn-s1-5m, and
  # against pqn-eps01-s1-5m at the same steps): does the ~110-point gap between the last-100 training
  # mean and the 300-game evaluation close when training plays the evaluation's games?
  "pqn-eps05-s1|5000000|--preset pqn --seed 1 --epsilon-end 0.05|pqn-eps05-s1-5m"
  "pqn-eps05-s1|10000000|--preset pqn --seed 1 --epsilon-end 0.05|pqn-eps05-s1-10m"
  # Why the DQN's curve flattens from 2.4M agent steps (results/default-dueling-s1-3m): the shipped
  # DQN's settings again to 3M (its run directory was lost), then forks of its 3M checkpoint, one
  # change each, to 4M beside the unchanged continuation: float32 instead of bfloat16 (--precision
  # auto picks bfloat16 on CPUs with AVX512_BF16/AMX), and the learning rate decayed linearly toward
  # 0 (over 4M agent steps counted from 0: 0.27x the rate at the fork, ~0 at 4M).
  "dueling-s1|3000000|--preset default --seed 1 --dueling|dueling-s1-3m"
  "fork-dueling-f32-s1|4000000|--preset default --seed 1 --dueling --precision float32|fork-dueling-f32-s1-4m|dueling-s1@3000000"
  "fork-dueling-lrdecay-s1|4000000|--preset default --seed 1 --dueling --learning-rate-decay-steps 4000000|fork-dueling-lrdecay-s1-4m|dueling-s1@3000000"
  "dueling-s1|4000000|--preset default --seed 1 --dueling|dueling-s1-4m"
  # PQN toward CleanRL PQN's 384.85 at 10M: its learning rate decayed linearly to 0 over the run, as
  # CleanRL's pqn_atari_envpool anneals it (one change against the shipped recipe, pqn-eps05-s1-10m,
  # whose last two checkpoints averaged gained 36 points: its constant rate leaves the weights noisy)
  "pqn-eps05-lrdecay-s1|10000000|--preset pqn --seed 1 --epsilon-end 0.05 --learning-rate-decay-steps 10000000|pqn-eps05-lrdecay-s1-10m"
  # The DQN decayed from step 0 to 4M (against dueling-s1-4m): the fork onto a decaying rate at 3M
  # lifted the 4M snapshot from 206.0 to 294.4 (results/fork-dueling-lrdecay-s1-4m); does the
  # `default` preset gain from it over a whole run, or does the smaller rate slow its early climb?
  "dueling-lrdecay-s1|4000000|--preset default --seed 1 --dueling --learning-rate-decay-steps 4000000|dueling-lrdecay-s1-4m"
)
if [ -n "${QUEUE_FILE:-}" ]; then
  mapfile -t QUEUE < <(grep -Ev '^[[:space:]]*(#|$)' "$QUEUE_FILE")
fi

newest_step() {  # the run's newest checkpoint step, or 0
  "$BIN/python" -m breakout_dqn.training.run_directory newest-step "$1" 2>/dev/null || echo 0
}

recorded_step() {  # the agent steps behind a record (its eval.json's train_agent_steps), or 0
  [ -f "$RESULTS/$1/eval.json" ] || { echo 0; return; }
  "$BIN/python" -c 'import json, sys; print(int(json.load(open(sys.argv[1])).get("train_agent_steps", 0)))' \
    "$RESULTS/$1/eval.json" 2>/dev/null || echo 0
}

recorded() {  # recorded LABEL STEP STEPS: the entry is done (its record exists; its run, or the run
  # behind the record when the run directory is gone, as on a new machine, reached its steps)
  [ -f "$RESULTS/$1/eval.json" ] || return 1
  [ "$2" -ge "$3" ] || [ "$(recorded_step "$1")" -ge "$3" ]
}

progress() {  # progress RUN STEPS: the newest train record's mean of the last 100 training games, and
  # for a run short of STEPS the time left at the median rate of its last 10 train records, if any
  [ -f "$1/metrics.jsonl" ] || return 0
  "$BIN/python" - "$1/metrics.jsonl" "$2" <<'EOF' 2>/dev/null || true
import statistics
import sys
from pathlib import Path
from breakout_dqn.training.metrics import read_metrics
trains = [r for r in read_metrics(Path(sys.argv[1])) if r.get("type") == "train"]
parts = []
scores = [r["recent_score"] for r in trains if r.get("recent_score") is not None]
if scores:
    parts.append(f"mean of the last 100 training games {scores[-1]:.1f}")
rates = [r["steps_per_second"] for r in trains[-10:] if r.get("steps_per_second")]
left = int(sys.argv[2]) - (trains[-1]["step"] if trains else 0)
if rates and left > 0:
    rate = statistics.median(rates)
    hours = left / rate / 3600
    time_left = f"~{hours:.1f} h" if hours >= 1 else f"~{hours * 60:.0f} min"
    parts.append(f"{time_left} left at {rate:.1f} agent steps/s")
print(", ".join(parts))
EOF
}

if [ "${1:-}" = --list ]; then
  for entry in "${QUEUE[@]}"; do
    IFS='|' read -r name steps flags label _ <<< "$entry"
    label=${label:-$name}
    step=$(newest_step "$RUNS/$name")
    state="checkpoint at $step of $steps agent steps"
    progressed=$(progress "$RUNS/$name" "$steps")
    if [ -n "$progressed" ]; then state="$state, $progressed"; fi
    if recorded "$label" "$step" "$steps"; then state="done ($state; $RESULTS/$label)"; fi
    printf '%-20s %s   (%s)\n' "$label" "$state" "$flags"
  done
  exit 0
fi

evaluate() {  # evaluate MODEL JSON OUT: EVAL_GAMES games at the Nature protocol, or the queue stops
  "$BIN/breakout-dqn" evaluate "$1" --episodes "$EVAL_GAMES" --num-envs 16 --json "$2" \
    || { echo "== $3: the $EVAL_GAMES-game evaluation stopped: run this script again to record it" >&2; exit 1; }
}

evaluate_last_two() {  # evaluate_last_two RUN OUT: the mean of the weights of the run's last two
  # checkpoints (eval-<n>-avg2.json, average.json; the model stays in RUNS/<record>-avg2, which
  # ship_reference.sh takes) and the older of the two alone (eval-<n>-at-<step>.json): two DQN snapshots
  # 50,000 agent steps apart scored 131.8 and 254.7, their mean 269.9 (results/dueling-s1-3m/README.md)
  local run=$1 out=$2 older avg snapshot
  avg="$RUNS/$(basename "$out")-avg2"
  rm -rf "$avg"  # made again each time: the run may have moved on since
  # the older step is the one the averaging tool chose (its average.json), not parsed from file names here
  "$BIN/python" -m breakout_dqn.training.average "$run" --last 2 --out "$avg" \
    && older=$("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"][0])' \
                 "$avg/average.json") \
    && snapshot="$RUNS/$(basename "$out")-at-$older" && rm -rf "$snapshot" \
    && "$BIN/python" -m breakout_dqn.training.average "$run" --step "$older" --out "$snapshot" \
    || { echo "== $out: the checkpoints could not be averaged: run this script again to record it" >&2; exit 1; }
  evaluate "$avg/model.keras" "$out/eval-$EVAL_GAMES-avg2.json" "$out"
  evaluate "$snapshot/model.keras" "$out/eval-$EVAL_GAMES-at-$older.json" "$out"
  cp "$avg/average.json" "$out/"
  rm -rf "$snapshot"
}

record() {  # results/<name>/: the run's record, never checkpoints or replay
  local run=$1 out=$2
  mkdir -p "$out"
  if [ "$EVAL_GAMES" -gt 0 ]; then  # the Nature protocol over many games: what ablations are told apart by
    evaluate "$run/model.keras" "$out/eval-$EVAL_GAMES.json" "$out"
    if [ "$(find "$run/checkpoints" -name 'checkpoint-*.npz' | wc -l)" -ge 2 ]; then
      evaluate_last_two "$run" "$out"
    fi
  fi
  "$BIN/breakout-dqn" plot "$run" --out "$out/learning_curve.png"
  cp "$run/config.json" "$run/metrics.jsonl" "$run/eval.json" "$out/"  # eval.json last: it marks the record done
}

verdict() {  # verdict LABEL: the ablation rule's verdict on the record against BASELINE's, or nothing;
  # the comparison stays in the record as comparison.json
  local out="$RESULTS/$1/comparison.json"
  if "$BIN/python" -m breakout_dqn.training.ablation "$BASELINE" "$RESULTS/$1" \
      --eval "eval-$EVAL_GAMES.json" --json "$out" > /dev/null; then
    "$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["verdict"])' "$out" || true
  fi
}

plot_against_baseline() {  # plot_against_baseline LABEL: both learning curves on one plot, in the record
  [ -d "$BASELINE" ] || return 0
  "$BIN/breakout-dqn" plot "$BASELINE" "$RESULTS/$1" --labels "$(basename "$BASELINE") (baseline)" "$1" \
    --out "$RESULTS/$1/vs-baseline-steps.png" || echo "== $1: no plot against $BASELINE" >&2
}

drop_replay_unless_it_joins() {  # drop_replay_unless_it_joins RUN LABEL
  local judged
  judged=$(verdict "$2")
  case $judged in
    "stays out"*) rm -rf "$1/replay"; echo "== $2 $judged: its replay is deleted" ;;
    "") echo "== $2: not judged against $BASELINE: its replay is kept" ;;
    *) echo "== $2: $judged: its replay is kept (the new default's long run may continue it)" ;;
  esac
}

fork() {  # fork RUN SOURCE@STEP: RUN starts as a copy of run SOURCE at its newest checkpoint, STEP, once
  local run=$1 source="$RUNS/${2%@*}" at=${2#*@} step need free
  [ -n "$(ls -A "$run/checkpoints" 2>/dev/null)" ] && return 0  # forked before: it continues itself
  step=$(newest_step "$source")
  if [ "$step" != "$at" ]; then
    echo "== $(basename "$run"): cannot fork $source at $at agent steps: its newest checkpoint is at $step" \
      "(a fork needs the source's checkpoint and replay at $at exactly: run the source's entry to $at first)" >&2
    return 1
  fi
  need=$(du -sk "$source" | cut -f1)
  free=$(df -Pk "$RUNS" | awk 'NR == 2 {print $4}')
  if [ "$free" -le "$need" ]; then
    echo "== $(basename "$run"): cannot fork $source: it takes $((need / 1024)) MiB, $((free / 1024)) MiB free" >&2
    return 1
  fi
  rm -rf "$run.forking"  # a copy cut short last time
  cp -a "$source" "$run.forking" && rm -f "$run.forking/train.lock" && mv "$run.forking" "$run"
  echo "== $(basename "$run"): forked from $source at $at agent steps"
}

for entry in "${QUEUE[@]}"; do
  IFS='|' read -r name steps flags label from <<< "$entry"
  label=${label:-$name}
  run="$RUNS/$name"
  if recorded "$label" "$(newest_step "$run")" "$steps"; then
    echo "== $label: done ($RESULTS/$label)"
    continue
  fi
  resume=(--auto-resume)
  if [ -n "$from" ]; then
    fork "$run" "$from" || exit 1
    resume=(--auto-resume --resume)  # the copied settings, changed by this entry's flags
  fi
  echo "== $(date -u +%FT%TZ) $label: $steps agent steps ($flags)"
  # shellcheck disable=SC2086  # flags are words
  if ! "$BIN/breakout-dqn" train --out "$run" "${resume[@]}" --steps "$steps" $flags; then
    echo "== $name stopped before $steps steps (signal or error): run this script again to continue" >&2
    exit 1
  fi
  step=$(newest_step "$run")
  if [ "$step" -lt "$steps" ]; then
    echo "== $name stopped at $step of $steps steps: run this script again to continue" >&2
    exit 1
  fi
  if [ ! -f "$RESULTS/$label/eval.json" ]; then
    record "$run" "$RESULTS/$label"
    case $name in ablation-*) plot_against_baseline "$label"; drop_replay_unless_it_joins "$run" "$label" ;; esac
    if [ -n "$from" ]; then rm -rf "$run/replay"; echo "== $label: a fork is not continued: its replay is deleted"; fi
  fi
  echo "== $label done: $RESULTS/$label"
done
echo "== queue done"
