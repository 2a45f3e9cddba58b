// CWire: the protobuf-c code generated from proto/gemma_node.proto (Scripts/gen_proto.sh), the
// only C behind GemmaWire. Swift calls the generated *__init/pack/unpack/free_unpacked functions.
#pragma once
#include <protobuf-c/protobuf-c.h>
#include "gemma_node.pb-c.h"
