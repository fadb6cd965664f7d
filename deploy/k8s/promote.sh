#!/usr/bin/env bash
# Promote a released model to serving: the step between the gate Job and a rollout.
#
#   bash deploy/k8s/promote.sh --overlay deploy/k8s/overlays/gke/serve \
#       --serve-image REGISTRY/breakout-dqn/serve@sha256:... --repository REGISTRY/breakout-dqn/release \
#       [--seed N]
#
# 1. reads the release records of the gate Job's succeeded pods (the promote container's last log
#    line: releases/<sha256>.onnx, its model_version and verify's mean score); takes --seed's, or
#    the best mean score of those that passed;
# 2. copies that release off the training volume through a short-lived reader pod and checks that
#    its sha256 is its name;
# 3. builds the release image (deploy/k8s/release/Dockerfile: --serve-image plus the model), pushes
#    it to --repository and reads its digest;
# 4. writes the pin into the serving overlay: release.yaml (the image, by digest) and release.env
#    (the model's path in it and its model_version). Commit both; `kubectl apply -k OVERLAY` rolls
#    it out. Nothing in the cluster changes before that apply.
# Exit codes: 0 pinned, 1 a failure (kubectl, docker, a copy whose sha256 is not its name), 2 usage,
# 4 no seed passed the gate (or --seed did not).
# Environment: KUBECTL (default "kubectl --namespace breakout-dqn-training": the gate's namespace and
# context), DOCKER (default docker), JOB (default breakout-dqn-gate), PYTHON (default python3).
set -euo pipefail
read -r -a kubectl <<<"${KUBECTL:-kubectl --namespace breakout-dqn-training}"
read -r -a docker <<<"${DOCKER:-docker}"
python=${PYTHON:-python3}
job=${JOB:-breakout-dqn-gate}
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: promote.sh --overlay DIR --serve-image IMAGE@sha256:... --repository REPO [--seed N]" >&2; exit 2; }

overlay="" serve_image="" repository="" seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) overlay=${2:-}; shift 2 || usage ;;
    --serve-image) serve_image=${2:-}; shift 2 || usage ;;
    --repository) repository=${2:-}; shift 2 || usage ;;
    --seed) seed=${2:-}; shift 2 || usage ;;
    *) usage ;;
  esac
done
[ -n "$overlay" ] && [ -n "$serve_image" ] && [ -n "$repository" ] || usage
[ -f "$overlay/kustomization.yaml" ] || { echo "promote: --overlay $overlay has no kustomization.yaml" >&2; exit 2; }
[[ "$serve_image" =~ @sha256:[0-9a-f]{64}$ ]] || { echo "promote: --serve-image must be pinned by digest (@sha256:...)" >&2; exit 2; }
[[ "$repository" =~ ^[^/]*[.:][^/]*/[^@:]+$ ]] || { echo "promote: --repository must be REGISTRY_HOST/PATH without tag" >&2; exit 2; }
[ -z "$seed" ] || [[ "$seed" =~ ^[0-9]+$ ]] || usage

work=$(mktemp -d)
reader=""
cleanup() {
  [ -z "$reader" ] || "${kubectl[@]}" delete pod "$reader" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The records: one JSON line per seed that passed export, verify and promote.
pods=$("${kubectl[@]}" get pods -l "batch.kubernetes.io/job-name=$job" --field-selector=status.phase=Succeeded \
  -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}')
for pod in $pods; do
  "${kubectl[@]}" logs "$pod" -c promote --tail=1 >> "$work/records.jsonl"
done
touch "$work/records.jsonl"
if ! chosen=$("$python" - "$work/records.jsonl" "$seed" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
if sys.argv[2]:
    records = [r for r in records if r.get("seed") == int(sys.argv[2])]
if not records:
    sys.exit(4)
best = max(records, key=lambda r: r["mean_score"])
print(best["sha256"], best["model_version"], best["seed"], best["mean_score"])
PY
); then
  echo "promote: no release from job $job${seed:+ for seed $seed}: no seed passed the gate" >&2
  exit 4
fi
read -r sha256 version chosen_seed mean_score <<<"$chosen"
[[ "$sha256" =~ ^[0-9a-f]{64}$ ]] || { echo "promote: bad release record: $chosen" >&2; exit 1; }
echo "promote: seed $chosen_seed, mean score $mean_score, model_version $version (releases/$sha256.onnx)"

# 2. The file, through a reader pod that mounts the training volume read-only.
reader="breakout-dqn-release-reader-${sha256:0:12}"
"${kubectl[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $reader
  labels: {app.kubernetes.io/name: breakout-dqn, app.kubernetes.io/component: release-reader}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 900
  automountServiceAccountToken: false
  enableServiceLinks: false
  nodeSelector: {kubernetes.io/arch: amd64}
  securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: reader
      image: $serve_image
      command: [sleep, "600"]
      resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: runs, mountPath: /models, readOnly: true}]
  volumes: [{name: runs, persistentVolumeClaim: {claimName: breakout-dqn-runs, readOnly: true}}]
YAML
"${kubectl[@]}" wait --for=condition=Ready "pod/$reader" --timeout=300s >/dev/null
mkdir "$work/context"
"${kubectl[@]}" exec "$reader" -- cat "/models/releases/$sha256.onnx" > "$work/context/model.onnx"
copied=$(sha256sum "$work/context/model.onnx" | cut -d' ' -f1)
if [ "$copied" != "$sha256" ]; then
  echo "promote: the copy of releases/$sha256.onnx has sha256 $copied: not released" >&2
  exit 1
fi

# 3. The release image, by digest.
tag="$repository:${version//+/-}"  # a tag may not hold "+"
"${docker[@]}" build --file "$here/release/Dockerfile" --build-arg "SERVE_IMAGE=$serve_image" \
  --build-arg "MODEL_SHA256=$sha256" --build-arg "MODEL_VERSION=$version" --tag "$tag" "$work/context" >&2
"${docker[@]}" push "$tag" >&2
image=$("${docker[@]}" inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | grep -m1 "^$repository@sha256:" || true)
[[ "$image" =~ @sha256:[0-9a-f]{64}$ ]] || { echo "promote: no digest for $tag in $repository after the push" >&2; exit 1; }

# 4. The pin, in the overlay (each file replaced whole, never half-written).
trap 'cleanup; rm -f "$overlay/.release.env.$$" "$overlay/.release.yaml.$$"' EXIT
cat > "$overlay/.release.env.$$" <<EOF
BREAKOUT_DQN_MODEL=/opt/breakout-dqn/models/$sha256.onnx
BREAKOUT_DQN_MODEL_VERSION=$version
EOF
cat > "$overlay/.release.yaml.$$" <<EOF
# The image being served, by digest: written by deploy/k8s/promote.sh (seed $chosen_seed, mean score
# $mean_score over the gate's games; model_version $version).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: breakout-dqn-serve
spec:
  template:
    spec:
      initContainers:
        - name: check-model-version
          image: $image
      containers:
        - name: serve
          image: $image
EOF
mv "$overlay/.release.env.$$" "$overlay/release.env"
mv "$overlay/.release.yaml.$$" "$overlay/release.yaml"
echo "promote: pinned $image ($version) in $overlay/release.yaml and release.env"
echo "next: git commit $overlay/release.yaml $overlay/release.env && kubectl apply -k $overlay"
