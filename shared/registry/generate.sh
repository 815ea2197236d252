#!/usr/bin/env bash
# Regenerate registry_pb2.py and registry_pb2_grpc.py from registry.proto.
#
#   shared/registry/generate.sh [OUT_DIR]        (default: this folder)
#
# Needs grpcio-tools (pip install "grpcio-tools==1.81.1", the version the
# checked-in files were made with; it must match the installed protobuf
# runtime: `pip check`). The proto is compiled from a temporary
# fedehr/shared/registry/ tree so that the generated imports are absolute
# (`from fedehr.shared.registry import registry_pb2`). The generator command:
#
#   python -m grpc_tools.protoc -I "$TMP" --python_out="$TMP" --grpc_python_out="$TMP" \
#       "$TMP/fedehr/shared/registry/registry.proto"
#
# tests/shared/registry/test_generated.py checks that the checked-in files are current.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE}"
PYTHON="${PYTHON:-python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/fedehr/shared/registry"
cp "$HERE/registry.proto" "$TMP/fedehr/shared/registry/registry.proto"
"$PYTHON" -m grpc_tools.protoc -I "$TMP" --python_out="$TMP" --grpc_python_out="$TMP" \
    "$TMP/fedehr/shared/registry/registry.proto"
DOC='"""Generated from registry.proto by shared/registry/generate.sh (python -m grpc_tools.protoc); do not edit."""'
for name in registry_pb2.py registry_pb2_grpc.py; do
    { echo "$DOC"; cat "$TMP/fedehr/shared/registry/$name"; } > "$OUT/$name"
done
