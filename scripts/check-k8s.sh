#!/usr/bin/env bash
# Check the Kubernetes manifests offline (no cluster): render every kustomization under deploy/k8s
# (each stage, each overlay; components are rendered through the overlays that use them) with
# `kubectl kustomize`, and
#   - validate every object against the API schema of one pinned Kubernetes version with
#     kubernetes-validate --strict (a misspelt or unknown field fails; so does a kind or apiVersion
#     that version does not serve);
#   - hold every image reference to the registry policy (scripts/check_k8s_images.py): a registry
#     host everywhere, and a sha256 digest in every overlay (deploy/k8s/overlays/: what gets deployed).
# Custom resources are not in the Kubernetes schema: the kinds in CUSTOM below are reported as
# skipped, by name; any other object that does not validate fails the check.
#
#   bash scripts/check-k8s.sh                   # against Kubernetes $KUBERNETES_VERSION (1.35.0)
#
# Needs kubectl (with its built-in kustomize) and the dev extra's kubernetes-validate; PYTHON
# picks the interpreter that has it (default: python). The semantic checks (probes, grace
# periods, storage vs replay size, retries, the gate, security context) are tests/deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1.35: the oldest minor still maintained upstream when this was written; every field used here
# is GA there (gRPC probes 1.27, podFailurePolicy 1.31, backoffLimitPerIndex 1.33, the preStop
# sleep action 1.34).
version=${KUBERNETES_VERSION:-1.35.0}
python=${PYTHON:-python}
# apiVersion/kind of the custom resources the components use, whose schemas ship with their
# operators (not vendored here); tests/deploy/ checks what they select and mount.
CUSTOM=(
  "monitoring.coreos.com/v1/PodMonitor"  # Prometheus Operator (components/serve-metrics)
  "cert-manager.io/v1/Certificate"       # cert-manager (components/serve-tls)
)
command -v kubectl >/dev/null || { echo "check-k8s: kubectl not found: it renders the manifests" >&2; exit 2; }
"$python" -c "import kubernetes_validate, yaml" 2>/dev/null \
  || { echo "check-k8s: kubernetes-validate not installed: pip install -e '.[dev]'" >&2; exit 2; }
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

# "apiVersion/kind name" of each object in a rendered file, one a line.
objects_of() {
  "$python" -c 'import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc:
        print(doc["apiVersion"] + "/" + doc["kind"], doc["metadata"]["name"])' "$1"
}

failed=0
checked=0
for file in $(find deploy/k8s -name kustomization.yaml | sort); do
  dir=$(dirname "$file")
  grep -q '^kind: Component' "$file" && continue  # rendered as part of the overlays that use it
  out="$rendered/$(echo "$dir" | tr / _).yaml"
  if ! kubectl kustomize "$dir" > "$out"; then
    echo "FAIL $dir: kubectl kustomize failed"; failed=1; continue
  fi
  checked=$((checked + 1))
  objects=0
  skipped=()
  while read -r kind name; do
    objects=$((objects + 1))
    for custom in "${CUSTOM[@]}"; do
      [ "$kind" = "$custom" ] && skipped+=("${kind##*/} $name")
    done
  done < <(objects_of "$out")
  report=$("$python" -m kubernetes_validate --strict --kubernetes-version "$version" "$out" 2>&1) || true
  passed=$(grep -c ' passed for resource ' <<<"$report" || true)
  # kubernetes-validate exits 0 when it finds no schema for a kind/apiVersion (only a WARN line):
  # every object must have passed, but those of the custom kinds.
  expected=$((objects - ${#skipped[@]}))
  if [ "$objects" -eq 0 ] || [ "$passed" -ne "$expected" ]; then
    echo "FAIL $dir: $passed of $expected objects valid against Kubernetes $version"
    grep -v ' passed for resource ' <<<"$report" | sed "s#$out#$dir#" || true
    failed=1
    continue
  fi
  digest=()
  case "$dir" in deploy/k8s/overlays/*) digest=(--require-digest) ;; esac
  if ! images=$("$python" scripts/check_k8s_images.py "$out" "${digest[@]}"); then
    echo "FAIL $dir: images break the registry policy"
    sed 's/^/     /' <<<"$images"
    failed=1
    continue
  fi
  echo "ok   $dir: $passed objects valid against Kubernetes $version${digest:+, images pinned by digest}"
  for skip in "${skipped[@]}"; do
    echo "     skipped $skip: a custom resource, not in the Kubernetes schema"
  done
done
[ "$checked" -gt 0 ] || { echo "check-k8s: no kustomization found under deploy/k8s" >&2; exit 1; }
exit "$failed"
