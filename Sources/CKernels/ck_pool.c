// Persistent worker pool. A run is split into chunks handed out through one atomic ticket that
// holds (run generation << 32 | next chunk): a worker claims a chunk only by a compare-and-swap
// that also proves the run is still the one it read the task of. The caller works too and then
// waits only for claimed chunks to finish (a done counter), never for a worker to wake up: on a
// busy box a descheduled worker used to hold up every matmul until the scheduler ran it (both
// engines' 2-thread decode fell below their 1-thread decode at load 3-4), now the caller simply
// takes its chunks. Idle workers spin briefly, then sleep on a futex (Linux). No allocation per run.
//
// Before it rewrites the task for a new run the caller closes the ticket (new generation, no
// chunk claimable), with a release fence after; a worker puts an acquire fence between reading
// the task and its claiming compare-and-swap. So a worker that read any field of the new run
// cannot claim on the old run's ticket. Without this (until session 12), a worker that loaded
// the finished run's ticket (g, c) with c >= that run's chunk count, then read the next run's
// larger chunk count, claimed chunk c of the next run through the old ticket: that chunk ran
// twice and `done` counted one too many, so the caller either returned while a chunk still ran
// (its stack context then died under the worker: a crash) or never saw `done` equal the chunk
// count (a hang). Seen as a rare hang or crash of the NEON driver under qemu; reproduced on x86
// within a few hundred alternating 2-chunk/64-chunk runs (Scripts/neon/test_kernels.c's pool
// stress and ThreadPoolTests.fewThenManyChunks run that pattern).
//
// Each thread notes the CPU it last ran on. A thread that spins (the caller waiting for a
// claimed chunk, an idle worker waiting for the next run) while the thread it waits for sits
// on the same CPU yields instead: when other processes take one of two cores, the scheduler
// often puts both threads on the other one, and a spin there only burns the time slice the
// other thread needs (both engines' 2-thread prefill fell below their 1-thread prefill on the
// loaded box, the spinning thread holding the CPU for up to the spin limit per matmul).
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE  // sched_getcpu
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "ck_internal.h"
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#define CK_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CK_PAUSE() __asm__ __volatile__("yield")
#else
#define CK_PAUSE() ((void)0)
#endif

// Spin this long before sleeping on the futex: long enough to bridge the gap between two
// matmuls of one decode step (norms, attention), short enough not to burn a core while the
// rank waits for the network or the user. Time-based because `pause` costs 10-140 cycles
// depending on the CPU (about 15 ns here). GEMMA_NODE_SPIN_US overrides the 200 us default
// (0 = sleep at once: kinder when more threads than cores are runnable).
#define CK_SPIN_SECONDS (p->spin_seconds)

struct ck_pool {
    int threads;
    pthread_t *workers;
    _Atomic uint32_t gen;      // bumped once per run (and at shutdown): wakes workers
    _Atomic uint64_t ticket;   // (gen << 32) | next unclaimed chunk of the current run
    _Atomic uint32_t done;     // chunks of the current run finished
    _Atomic int sleepers;      // workers parked on the futex
    _Atomic int caller_sleeping;
    _Atomic int stop;
    double spin_seconds;
    _Atomic int *cpu;          // per thread (0 = caller): the CPU it last noted, -1 unknown
    // The current run's task. Written by the caller before it publishes the ticket, read by
    // workers between loading the ticket and claiming a chunk (relaxed atomics: a worker whose
    // claim then fails may have read the next run's values, which it discards).
    _Atomic(ck_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t count, grain;
    _Atomic uint32_t chunks;
    // Scratch for ck_matmul's quantized activations (grown on demand, reused).
    void *scratch;
    size_t scratch_bytes;
};

typedef struct { ck_pool *pool; int index; } worker_arg;

static int current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

// Notes this thread's CPU and reports whether thread `other` (or, for other < 0, any worker)
// last ran on it: then it cannot run while this thread spins, so this thread should yield.
static int shares_cpu(ck_pool *p, int self, int other) {
    int me = current_cpu();
    atomic_store_explicit(&p->cpu[self], me, memory_order_relaxed);
    if (me < 0) return 0;
    if (other >= 0) return atomic_load_explicit(&p->cpu[other], memory_order_relaxed) == me;
    for (int i = 1; i < p->threads; i++)
        if (atomic_load_explicit(&p->cpu[i], memory_order_relaxed) == me) return 1;
    return 0;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)addr; (void)expected;
    sched_yield();
#endif
}

static void futex_wake_all(_Atomic uint32_t *addr) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

// Claims and runs chunks of run `g` until none are left (or the run is no longer `g`).
static void run_chunks(ck_pool *p, uint32_t g, int thread) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        if ((uint32_t)(t >> 32) != g) return;
        ck_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        int64_t count = atomic_load_explicit(&p->count, memory_order_relaxed);
        int64_t grain = atomic_load_explicit(&p->grain, memory_order_relaxed);
        uint32_t chunks = atomic_load_explicit(&p->chunks, memory_order_relaxed);
        uint32_t c = (uint32_t)t;
        if (c >= chunks) return;
        // Pairs with the caller's release fence after it closes the ticket: if any field above
        // is the next run's, the compare-and-swap below sees the closed ticket and fails.
        atomic_thread_fence(memory_order_acquire);
        // Success proves chunk c of run g was unclaimed, so run g had not finished and the
        // task read above is run g's (the caller closes the ticket before it rewrites the task,
        // and does that only after every chunk of run g is done).
        if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel, memory_order_relaxed))
            continue;
        if (thread > 0) atomic_store_explicit(&p->cpu[thread], current_cpu(), memory_order_relaxed);
        int64_t b = (int64_t)c * grain, e = b + grain;
        if (e > count) e = count;
        fn(ctx, b, e, thread);
        // seq_cst with the caller's caller_sleeping store / done re-check (no lost wake-up).
        if (atomic_fetch_add(&p->done, 1) + 1 == chunks && atomic_load(&p->caller_sleeping))
            futex_wake_all(&p->done);
    }
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    ck_pool *p = wa.pool;
    // Generation 0 is the pool's state at creation: a run may start before this thread does.
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        double start = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            CK_PAUSE();
            if ((++spins & 63) != 0) continue;
            if (shares_cpu(p, wa.index, 0)) sched_yield();
            if (start == 0) start = ck_now();
            if (ck_now() - start > CK_SPIN_SECONDS) {
                atomic_fetch_add(&p->sleepers, 1);
                // Re-check after announcing ourselves so a bump in between is not missed.
                if (atomic_load(&p->gen) == seen) futex_wait(&p->gen, seen);
                atomic_fetch_sub(&p->sleepers, 1);
                start = 0;
            }
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        run_chunks(p, g, wa.index);
    }
    return NULL;
}

ck_pool *ck_pool_create(int threads) {
    if (threads < 1) threads = 1;
    ck_pool *p = calloc(1, sizeof(ck_pool));
    if (!p) return NULL;
    p->threads = threads;
    p->spin_seconds = 200e-6;
    p->cpu = calloc((size_t)threads, sizeof(_Atomic int));
    if (!p->cpu) { free(p); return NULL; }
    for (int i = 0; i < threads; i++) atomic_init(&p->cpu[i], -1);
    const char *spin = getenv("GEMMA_NODE_SPIN_US");
    if (spin && *spin) p->spin_seconds = atof(spin) * 1e-6;
    if (threads > 1) {
        p->workers = calloc((size_t)threads - 1, sizeof(pthread_t));
        if (!p->workers) { free(p->cpu); free(p); return NULL; }
        for (int i = 1; i < threads; i++) {
            worker_arg *wa = malloc(sizeof(worker_arg));
            if (wa) { wa->pool = p; wa->index = i; }
            if (!wa || pthread_create(&p->workers[i - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                p->threads = i;  // run with the workers that did start
                break;
            }
        }
    }
    return p;
}

void ck_pool_destroy(ck_pool *p) {
    if (!p) return;
    if (p->threads > 1) {
        atomic_store_explicit(&p->stop, 1, memory_order_release);
        atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
        futex_wake_all(&p->gen);
        for (int i = 0; i < p->threads - 1; i++) pthread_join(p->workers[i], NULL);
    }
    free(p->workers);
    free(p->cpu);
    free(p->scratch);
    free(p);
}

int ck_pool_threads(const ck_pool *p) { return p ? p->threads : 1; }

void ck_pool_run(ck_pool *p, ck_task_fn fn, void *ctx, int64_t count, int64_t grain) {
    if (count <= 0) return;
    if (grain < 1) grain = 1;
    int64_t chunks = (count + grain - 1) / grain;
    if (chunks > 0x7fffffff) {  // the ticket holds 32-bit chunk indices
        grain = (count + 0x7ffffffe) / 0x7fffffff;
        chunks = (count + grain - 1) / grain;
    }
    if (!p || p->threads == 1 || chunks == 1) {
        fn(ctx, 0, count, 0);
        return;
    }
    // Every chunk of the previous run is done (we waited for it), so no worker reads these now
    // except one whose claim will fail: close the ticket first (the new generation with no
    // claimable chunk), then the fence, so a worker that reads any new field below cannot
    // succeed with a compare-and-swap on the previous run's ticket.
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->ticket, (uint64_t)g << 32 | 0xffffffffu, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->count, count, memory_order_relaxed);
    atomic_store_explicit(&p->grain, grain, memory_order_relaxed);
    atomic_store_explicit(&p->chunks, (uint32_t)chunks, memory_order_relaxed);
    atomic_store_explicit(&p->cpu[0], current_cpu(), memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ticket, (uint64_t)g << 32, memory_order_release);
    // seq_cst pairs with the worker's sleepers++ / gen re-check: one of the two sees the other.
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(&p->gen);
    run_chunks(p, g, 0);
    int spins = 0;
    double start = 0;
    uint32_t d;
    while ((d = atomic_load_explicit(&p->done, memory_order_acquire)) != (uint32_t)chunks) {
        CK_PAUSE();
        if ((++spins & 63) != 0) continue;
        if (shares_cpu(p, 0, -1)) sched_yield();
        if (start == 0) start = ck_now();
        if (ck_now() - start > CK_SPIN_SECONDS) {
            atomic_store(&p->caller_sleeping, 1);
            if (atomic_load(&p->done) == d) futex_wait(&p->done, d);
            atomic_store(&p->caller_sleeping, 0);
        }
    }
}

void *ck_pool_scratch(ck_pool *p, size_t bytes) {
    if (p->scratch_bytes >= bytes) return p->scratch;
    void *n = NULL;
    size_t size = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&n, 64, size) != 0) return NULL;
    free(p->scratch);
    p->scratch = n;
    p->scratch_bytes = size;
    return n;
}

double ck_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Hands the allocator's free memory back to the kernel (glibc: malloc_trim). Loading reads
// slices through temporary buffers; once glibc's dynamic mmap threshold has risen, those come
// from the heap and their freed space stays resident (measured: ~450 MiB per rank after
// loading a 26B-A4B MoE at 4 ranks). Called once after a load.
#if defined(__GLIBC__)
#include <malloc.h>
void ck_release_free_heap(void) { (void)malloc_trim(0); }
#else
void ck_release_free_heap(void) {}
#endif
