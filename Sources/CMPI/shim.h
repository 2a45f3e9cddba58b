// Accessors for Open MPI's cast macros (MPI_COMM_WORLD, MPI_FLOAT, ...), which Swift cannot
// import, plus two tiny process helpers. Only GemmaMPI imports this module.
#pragma once
#include <mpi.h>
#include <stdio.h>

static inline MPI_Comm gn_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm gn_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype gn_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype gn_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype gn_int64(void) { return MPI_INT64_T; }
static inline MPI_Op gn_op_sum(void) { return MPI_SUM; }
static inline MPI_Op gn_op_max(void) { return MPI_MAX; }
static inline void *gn_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *gn_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler gn_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Request gn_request_null(void) { return MPI_REQUEST_NULL; }
static inline int gn_any_source(void) { return MPI_ANY_SOURCE; }

/// Under mpirun stdout is a pipe and therefore fully buffered; rank output would arrive late
/// and out of order. Swift 6 rejects touching `stdout` directly, hence this helper.
static inline void gn_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
