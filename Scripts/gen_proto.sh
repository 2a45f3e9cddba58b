#!/usr/bin/env bash
# Regenerates the protobuf-c code of the control-plane wire from Sources/CWire/proto/*.proto:
# the .pb-c.c goes to Sources/CWire/, the .pb-c.h to Sources/CWire/include/ (the public header
# directory SwiftPM exposes to Swift). The generated files are committed; run this after
# editing the .proto and commit both. Needs protoc-c (apt: protobuf-c-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || { echo "protoc-c not found: apt-get install protobuf-c-compiler" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
protoc-c --proto_path=Sources/CWire/proto --c_out="$tmp" Sources/CWire/proto/gemma_node.proto
# The generated .c includes "gemma_node.pb-c.h" by bare name: the include/ directory is on
# the target's header path, so no rewrite is needed.
mv "$tmp/gemma_node.pb-c.c" Sources/CWire/gemma_node.pb-c.c
mv "$tmp/gemma_node.pb-c.h" Sources/CWire/include/gemma_node.pb-c.h
echo "generated Sources/CWire/gemma_node.pb-c.c and Sources/CWire/include/gemma_node.pb-c.h ($(protoc-c --version | head -1))"
