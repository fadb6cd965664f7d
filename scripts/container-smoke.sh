#!/usr/bin/env bash
# Build and run both container targets without a Docker engine or a registry:
# podman + runc, a Debian bookworm base made with debootstrap from this machine's apt mirror,
# then: train a few hundred steps in the `train` image into a mounted directory, export it
# (parity gate included), serve it from the slim `serve` image, and play a game through gRPC
# (GetAction, then PlayGame on raw screens);
# every container with a read-only root filesystem and a writable /tmp, as in deploy/k8s.
#
#   sudo bash scripts/container-smoke.sh [--keep]     (needs root for podman/debootstrap)
#
# Prints the time of each step. Env: SMOKE_DIR (work dir, default /var/tmp/breakout-dqn-smoke),
# SMOKE_PORT (default 50071), SMOKE_STEPS (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${SMOKE_DIR:-/var/tmp/breakout-dqn-smoke}
PORT=${SMOKE_PORT:-50071}
STEPS=${SMOKE_STEPS:-300}
BASE=localhost/bookworm-python3:latest
KEEP=${1:-}
mkdir -p "$WORK"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "tools: podman, runc, debootstrap"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

# crun 1.8 rejects this host's cgroup layout and podman's default ulimits exceed the host's.
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$WORK/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
export CONTAINERS_CONF="$WORK/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/storage.conf"

if ! podman image exists "$BASE"; then
  step "base image: debootstrap bookworm minbase (python3, venv, pip, CA certificates)"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)}
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$WORK/rootfs" "$mirror" >/dev/null
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

build() {  # target tag
  podman build --quiet --format docker --network=host --build-arg "BASE_IMAGE=$BASE" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --target "$1" -t "$2" . >/dev/null
}
step "build: serve target (slim, no TensorFlow)"
build serve localhost/breakout-dqn-serve:smoke
step "build: train target"
build train localhost/breakout-dqn:smoke
# The previous run's images lost their :smoke tags to these: drop them (~2.8 GB a run; 38 GB of
# them had gathered on a developer machine after a day of CI runs). Tagged images, the base included, stay.
podman image prune --force >/dev/null
podman run --rm --entrypoint python localhost/breakout-dqn-serve:smoke -c \
  "import importlib.util as u, sys; sys.exit(1 if u.find_spec('tensorflow') else 0)" \
  || { echo "serve image contains TensorFlow"; exit 1; }
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep smoke

MODELS="$WORK/models"
rm -rf "$MODELS" && mkdir -p "$MODELS" && chmod 0777 "$MODELS"   # the images run as uid 10001
# As the Kubernetes pods run them (deploy/k8s): a read-only root filesystem with only /tmp (and the
# mounted /models) writable, as the images' numeric user.
RO=(--read-only --read-only-tmpfs=false --tmpfs /tmp:rw,mode=1777 --user 10001:10001)
run() { podman run --rm --network=host "${RO[@]}" -v "$MODELS:/models" "$@"; }

step "train: $STEPS agent steps into the mounted /models (a relative --out lands there: the image's workdir)"
run localhost/breakout-dqn:smoke train --out runs/smoke --steps "$STEPS" --num-envs 4 \
  --learning-starts 100 --random-steps 100 --replay-capacity 4000 --eval-every 0 \
  --final-eval-episodes 1 --log-every 100 --no-progress
step "export: parity gate, then /models/model.onnx"
[ -f "$MODELS/runs/smoke/model.keras" ] || { echo "container-smoke: no runs/smoke under /models" >&2; exit 1; }
run localhost/breakout-dqn:smoke export /models/runs/smoke/model.keras --out /models/model.onnx
step "verify"
run localhost/breakout-dqn:smoke verify /models/model.onnx

step "serve: slim image on 127.0.0.1:$PORT"
podman rm -f breakout-dqn-smoke >/dev/null 2>&1 || true
podman run -d --name breakout-dqn-smoke --network=host "${RO[@]}" -v "$MODELS:/models:ro" \
  -e "BREAKOUT_DQN_PORT=$PORT" \
  localhost/breakout-dqn-serve:smoke serve --model /models/model.onnx >/dev/null
cleanup() { [ "$KEEP" = "--keep" ] || podman rm -f breakout-dqn-smoke >/dev/null 2>&1 || true; }
trap cleanup EXIT
for _ in $(seq 60); do
  podman exec breakout-dqn-smoke python -m breakout_dqn.serving.healthcheck --target "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  sleep 1
done
podman exec breakout-dqn-smoke python -m breakout_dqn.serving.healthcheck --target "127.0.0.1:$PORT"
# The image's own HEALTHCHECK, run once by hand (no systemd here to schedule it).
if ! podman healthcheck run breakout-dqn-smoke 2>/dev/null; then echo "image HEALTHCHECK failed"; exit 1; fi
echo "image HEALTHCHECK: healthy"
step "play: one game through gRPC from the train image"
run localhost/breakout-dqn:smoke play --server "127.0.0.1:$PORT" --episodes 1
step "play --raw: one game through PlayGame (raw screens; the serve image preprocesses)"
run localhost/breakout-dqn:smoke play --server "127.0.0.1:$PORT" --episodes 1 --raw
step "done: container smoke passed"
