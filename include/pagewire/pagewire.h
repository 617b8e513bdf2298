/*
 * pagewire.h - the C API of the Pagewire distributed shared-memory runtime.
 *
 * One global address range is reserved at the same virtual address in every
 * process of a job. A load or store to it just works: the node's fault
 * service resolves each fault asynchronously through the dataspace manager
 * that backs the touched page.
 *
 * Every call that can fail returns a pw_status_t; pw_status_str() turns it
 * into a sentence, and pw_last_error() gives the detail of the most recent
 * failure on the calling thread (the problem and how to fix it).
 *
 * Usable from C, C++ and Fortran (ISO_C_BINDING): plain types only.
 */
#ifndef PAGEWIRE_PAGEWIRE_H_
#define PAGEWIRE_PAGEWIRE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pw_status {
  PW_OK = 0,
  PW_ERR_INVALID_ARGUMENT = 1, /* a parameter is out of range or malformed */
  PW_ERR_NOT_INITIALIZED = 2,  /* pw_init() has not run (or pw_finalize() has) */
  PW_ERR_ALREADY_INITIALIZED = 3,
  PW_ERR_UNSUPPORTED = 4,      /* the kernel lacks a needed feature */
  PW_ERR_PERMISSION = 5,       /* the kernel refused (see pw_last_error()) */
  PW_ERR_NO_MEMORY = 6,        /* the global range or a pool is exhausted */
  PW_ERR_NOT_FOUND = 7,        /* no such allocation / region */
  PW_ERR_UNAVAILABLE = 8,      /* a peer or manager is gone */
  PW_ERR_INTERNAL = 9,
  PW_ERR_STATE = 10,       /* not allowed now: e.g. releasing a lock this
                              thread does not hold, destroying a held lock */
  PW_ERR_NOT_MEMBER = 11   /* membership declared this rank dead (or it left):
                              it can no longer act in the job */
} pw_status_t;

/* How pages of a collective allocation are homed across the ranks. */
typedef enum pw_placement {
  PW_PLACE_BLOCK = 0,       /* a contiguous share per rank */
  PW_PLACE_CYCLIC = 1,      /* page-interleaved */
  PW_PLACE_FIRST_TOUCH = 2  /* homed where first touched */
} pw_placement_t;

/* Starts the runtime of this process (a rank). argc/argv may be NULL. */
pw_status_t pw_init(int *argc, char ***argv);
/* Stops the runtime: a final barrier with every rank, then unregisters the
 * global range and joins every thread. The runtime is stopped whatever it
 * returns; an error says the final barrier failed (a rank died, or this
 * rank is no longer a member) and why. */
pw_status_t pw_finalize(void);

int pw_rank(void);
int pw_nranks(void);

/* Collective: returns the same address on every rank, or NULL (see
 * pw_last_error()). Memory reads as zero until written.
 *
 * Collective calls (pw_alloc, pw_alloc_on, pw_alloc_sc, pw_attach_file,
 * pw_free) agree or fail together: if one rank's part fails, or the ranks
 * pass different arguments or call different collectives at the same
 * point, every rank gets the same failure (PW_ERR_STATE for a
 * disagreement) and the same pw_last_error() naming each rank and what it
 * did; nothing was allocated or freed anywhere, and the job goes on. */
void *pw_alloc(size_t bytes, pw_placement_t placement);
void *pw_alloc_on(size_t bytes, int home_rank);
pw_status_t pw_free(void *ptr);

/* Collective, like pw_alloc, but sequentially consistent: every load sees
 * the latest store of any rank, without barriers or locks (a single writer
 * or several readers per page at a time; writes invalidate the other
 * copies through the page's home). For code that communicates through
 * plain stores and flags; the CPU's own atomics (__atomic_*, C11/C++
 * atomics) work across ranks on this memory. Placement: PW_PLACE_BLOCK or
 * PW_PLACE_CYCLIC. Free it with pw_free(). */
void *pw_alloc_sc(size_t bytes, pw_placement_t placement);

/* Collective: maps the file at `path` (the same path on every rank) into
 * global memory, read-only for ranks other than `home_rank`, whose file
 * manager reads pages on demand when any rank first touches them. Free it
 * with pw_free(). */
void *pw_attach_file(const char *path, int home_rank);

/* Collective: what any rank wrote before the barrier, every rank sees after
 * it (release consistency: a release and an acquire for everyone). */
pw_status_t pw_barrier(void);

/* Release: this rank's writes to global memory reach their homes.
 * Acquire: every cached copy of another rank's page is dropped, so later
 * reads see what was released elsewhere. Barriers and locks do both. */
pw_status_t pw_release(void);
pw_status_t pw_acquire(void);

/* Global locks. A pw_lock_t lives in global memory (from pw_alloc), so
 * every rank names the same lock. Init once (any one rank) before use.
 * Acquire is a release plus an acquire of the writes made under the lock;
 * release makes this rank's writes visible to the next holder. Requests
 * queue at the lock's home (FIFO), nobody spins. Not recursive. */
typedef struct pw_lock {
  uint64_t word;
} pw_lock_t;
pw_status_t pw_lock_init(pw_lock_t *lock);
pw_status_t pw_lock_acquire(pw_lock_t *lock);
pw_status_t pw_lock_release(pw_lock_t *lock);
pw_status_t pw_lock_destroy(pw_lock_t *lock);

/* 64-bit atomics on 8-byte aligned words of global memory, performed at the
 * word's home (one-sided atomics). Cached copies of the page are not
 * updated: read atomically updated words with pw_atomic_load. */
pw_status_t pw_atomic_fetch_add(uint64_t *addr, uint64_t value, uint64_t *old);
/* Stores `desired` if the word equals `expected`; *old gets the value seen. */
pw_status_t pw_atomic_cas(uint64_t *addr, uint64_t expected, uint64_t desired,
                          uint64_t *old);
pw_status_t pw_atomic_load(uint64_t *addr, uint64_t *value);
pw_status_t pw_atomic_store(uint64_t *addr, uint64_t value);

/* The global range of this job: every pointer into it is valid on every
 * rank. */
void *pw_global_base(void);
size_t pw_global_size(void);

/* Fault statistics of this rank since pw_init(). */
typedef struct pw_stats {
  uint64_t faults;          /* fault events handled by this rank */
  uint64_t remote_fetches;  /* pages fetched from other ranks (one-sided READ) */
  uint64_t coalesced;       /* faults that joined an outstanding fetch */
  uint64_t failed;          /* faults that ended in SIGBUS */
  uint64_t served;          /* fetches this rank's home manager answered */
  uint64_t twins;           /* pages twinned at a first write */
  uint64_t diff_bytes;      /* modified bytes written home at releases */
  uint64_t invalidated;     /* cached copies dropped at acquires */
  double mean_latency_us;   /* fault resolution latency */
  double p50_latency_us;
  double p99_latency_us;
  uint64_t readaheads;      /* pages fetched ahead of a fault (PAGEWIRE_READAHEAD) */
  uint64_t pushed;          /* stale copies replaced by pages their homes pushed
                               at barriers (PAGEWIRE_PUSH) */
  uint64_t notices;         /* written pages this rank named to other ranks at
                               barriers, one per page and receiver (a page of
                               its own only to the ranks that cache it) */
  uint64_t suspected_ranks; /* ranks silent past their lease: still members,
                               faults on their pages wait for them */
  uint64_t dead_ranks;      /* ranks declared dead or gone (left) */
} pw_stats_t;

pw_status_t pw_get_stats(pw_stats_t *stats);

const char *pw_status_str(pw_status_t status);
/* Detail of the last failure on this thread; "" if none. */
const char *pw_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PAGEWIRE_PAGEWIRE_H_ */
