#!/usr/bin/env bash
# Check the Kubernetes manifests offline (no cluster): render every kustomization under deploy/k8s
# (the whole, each stage, each overlay) with `kubectl kustomize`, and validate every object
# against the API schema of one pinned Kubernetes version with kubernetes-validate --strict (a
# misspelt or unknown field fails; so does a kind or apiVersion that version does not serve).
#
#   bash scripts/check-k8s.sh                   # against Kubernetes $KUBERNETES_VERSION (1.35.0)
#
# Needs kubectl (with its built-in kustomize) and the dev extra's kubernetes-validate; PYTHON
# picks the interpreter that has it (default: python). The semantic checks (probes, grace
# periods, memory vs replay size, security context) are tests/deploy/test_manifests.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1.35: the oldest minor still maintained upstream when this was written; every field used here
# is GA there (gRPC probes 1.27, podFailurePolicy 1.31, the preStop sleep action 1.34).
version=${KUBERNETES_VERSION:-1.35.0}
python=${PYTHON:-python}
command -v kubectl >/dev/null || { echo "check-k8s: kubectl not found: it renders the manifests" >&2; exit 2; }
"$python" -c "import kubernetes_validate" 2>/dev/null \
  || { echo "check-k8s: kubernetes-validate not installed: pip install -e '.[dev]'" >&2; exit 2; }
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

failed=0
checked=0
for file in $(find deploy/k8s -name kustomization.yaml | sort); do
  dir=$(dirname "$file")
  grep -q '^kind: Component' "$file" && continue  # rendered as part of the stages that use it
  out="$rendered/$(echo "$dir" | tr / _).yaml"
  if ! kubectl kustomize "$dir" > "$out"; then
    echo "FAIL $dir: kubectl kustomize failed"; failed=1; continue
  fi
  objects=$(grep -c '^kind: ' "$out" || true)
  report=$("$python" -m kubernetes_validate --strict --kubernetes-version "$version" "$out" 2>&1) || true
  passed=$(grep -c ' passed for resource ' <<<"$report" || true)
  # kubernetes-validate exits 0 when it finds no schema for a kind/apiVersion (only a WARN line):
  # every object must have passed.
  if [ "$objects" -eq 0 ] || [ "$passed" -ne "$objects" ]; then
    echo "FAIL $dir: $passed of $objects objects valid against Kubernetes $version"
    grep -v ' passed for resource ' <<<"$report" | sed "s#$out#$dir#" || true
    failed=1
  else
    echo "ok   $dir: $objects objects valid against Kubernetes $version"
  fi
  checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "check-k8s: no kustomization found under deploy/k8s" >&2; exit 1; }
exit "$failed"
