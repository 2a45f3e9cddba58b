// Accessors for Open MPI's cast macros, which Swift cannot import.
#pragma once
#include <mpi.h>
static inline MPI_Comm gn_comm_world(void) { return MPI_COMM_WORLD; }
