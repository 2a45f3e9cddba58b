// protobuf-c generated code lives here (see Scripts/gen_proto.sh).
#pragma once
void cwire_placeholder(void);
