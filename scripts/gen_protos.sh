#!/usr/bin/env bash
# Regenerate the gRPC Python code for protos/ into breakout/ (imports resolve as breakout.v1.*).
#   scripts/gen_protos.sh          regenerate in place
#   scripts/gen_protos.sh --check  regenerate into a temp dir and fail (exit 1) on any diff (CI)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PROTOS=(protos/breakout/v1/agent.proto)
GENERATED=(breakout/v1/agent_pb2.py breakout/v1/agent_pb2_grpc.py breakout/v1/agent_pb2.pyi)

generate() {  # generate OUT_DIR
    "$PYTHON" -m grpc_tools.protoc -I protos --python_out="$1" --grpc_python_out="$1" --pyi_out="$1" "${PROTOS[@]}"
}

case "${1:-}" in
    "")
        generate .
        echo "generated: ${GENERATED[*]}"
        ;;
    --check)
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        generate "$tmp"
        status=0
        for file in "${GENERATED[@]}"; do
            if ! diff -u "$file" "$tmp/$file"; then
                status=1
            fi
        done
        if [ "$status" -ne 0 ]; then
            echo "generated code is stale: run scripts/gen_protos.sh and commit the result" >&2
        else
            echo "generated code is up to date"
        fi
        exit "$status"
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
