#!/usr/bin/env bash
# Regenerates the protobuf-c code for SentencePiece's tokenizer.model from
# Scripts/proto/sentencepiece_model.proto (our own subset of the message): the .pb-c.c goes to
# Sources/CWire/, the .pb-c.h to Sources/CWire/include/. The generated files are committed.
# Needs protoc-c (apt: protobuf-c-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || { echo "protoc-c not found: apt-get install protobuf-c-compiler" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
protoc-c --proto_path=Scripts/proto --c_out="$tmp" Scripts/proto/sentencepiece_model.proto
mv "$tmp/sentencepiece_model.pb-c.c" Sources/CWire/sentencepiece_model.pb-c.c
mv "$tmp/sentencepiece_model.pb-c.h" Sources/CWire/include/sentencepiece_model.pb-c.h
echo "generated Sources/CWire/sentencepiece_model.pb-c.c and Sources/CWire/include/sentencepiece_model.pb-c.h ($(protoc-c --version | head -1))"
