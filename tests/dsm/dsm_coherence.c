/*
 * dsm_coherence.c - release consistency, verified exactly against a
 * sequential reference. Run under pagewire-run with a test name:
 *   pagewire-run -n 4 dsm_coherence histogram|false_sharing|queue|atomics|races|acquire[_racing]
 *
 *   histogram      every thread of every rank adds items to a global
 *                  histogram under per-bin locks (HIST_THREADS threads per
 *                  rank, HIST_BIN_STRIDE words between bins; HIST_TRACE=path
 *                  writes "rank thread item bin old-value" per increment
 *                  to path.RANK, to find two increments that read the
 *                  same value)
 *   false_sharing  every rank writes disjoint bytes of the same pages (homed
 *                  on one rank, and spread block-wise), then a barrier: the
 *                  final image is exact on every rank
 *   queue          producers and a consumer exchange items through a
 *                  lock-protected ring buffer in global memory
 *   atomics        counters incremented by every thread of every rank reach
 *                  the exact total (fetch-add and a CAS loop)
 *   races          writers flush while other ranks' threads keep faulting
 *                  the same pages, over many epochs; nothing written is lost
 *   acquire        pw_release / pw_acquire without locks or barriers: one
 *                  rank writes pages the others hold cached copies of and
 *                  publishes through an atomic; after pw_acquire they see
 *                  the new bytes, and their own bytes of the same pages,
 *                  written before it, are not lost
 *   acquire_racing the same with the others' own bytes written by a second
 *                  thread that keeps writing them while pw_acquire runs
 *   readahead      ranks walk through pages homed on rank 0 that they cached
 *                  before (so read-ahead applies): every page is fetched
 *                  once (or pushed with the barrier), some ahead of their
 *                  fault, and every value is the latest after each barrier;
 *                  PAGEWIRE_READAHEAD=0 fetches none ahead
 *   push           rank 0 writes its pages every epoch and the others read
 *                  them after each barrier: they subscribe and get them
 *                  pushed with the barrier (few fetches, many pushes; none
 *                  with PAGEWIRE_PUSH=0). Every few epochs rank 1 writes a
 *                  word of one page too, so its push must be refused: every
 *                  rank must read both writers' values
 *   push_locks     the same page pushed at every barrier while a second
 *                  thread on every rank uses a lock: rank 0's writes a
 *                  word of the page under the lock and publishes its count
 *                  in an atomic; the others' read both under the lock and
 *                  must agree, though a barrier may push an older copy of
 *                  the page meanwhile (it must not replace the newer one
 *                  the lock's grant made them fetch); each of them also
 *                  writes its own word of the page under the lock and must
 *                  read it back
 *   notices        every rank writes all its home pages in every epoch; rank
 *                  0 has read them all once, each rank reads one page of
 *                  its right neighbour every epoch, and from half-way one
 *                  page of the rank two to its right too (a cacher that
 *                  registers late). Every value read is the latest, and a
 *                  rank names its pages at a barrier only to their cachers:
 *                  at most kNoticePages + 2 notices per barrier, not
 *                  kNoticePages x (ranks - 1)
 *   lock_log       rank 0 writes page A in a few sections of a lock, then
 *                  rank 1 writes page B in thousands; rank 3, which took
 *                  the lock once at the start (and cached A), takes it
 *                  again only at the end, with no barrier in between. The
 *                  lock's log of writes outgrows its bound meanwhile and
 *                  A's entries go; rank 3 must still read A's and B's last
 *                  values
 *   hot            a home page written in epoch after epoch (left writable,
 *                  "hot"), then not for many epochs (write-protected again
 *                  at its probe), then written once more: every rank sees
 *                  every value after the barrier that follows it
 *
 * Prints "dsm_coherence: <test> rank R ok" or names the first difference
 * and exits non-zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096
#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "dsm_coherence: rank %d: ", rank);        \
      fprintf(stderr, __VA_ARGS__);                             \
      fprintf(stderr, " (%s)\n", pw_last_error());              \
      exit(1);                                                  \
    }                                                           \
  } while (0)

static int rank, nranks;

static uint64_t Mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

/* ---- histogram under locks ---- */
enum { kBins = 32, kItems = 400, kHistThreads = 4 };
/* HIST_THREADS: threads per rank (default 4, at most 4). */
static int HistThreads(int r) {
  (void)r;
  const char *e = getenv("HIST_THREADS");
  int n = e ? atoi(e) : kHistThreads;
  return n < 1 ? 1 : n > kHistThreads ? kHistThreads : n;
}
static uint64_t *bins;
static size_t bin_stride = 1; /* words between bins: 512 puts each on its own page */
static pw_lock_t *bin_locks;

static int nbins = kBins; /* HIST_BINS: fewer bins (and locks) in use */

static FILE *trace;
static void *HistogramWorker(void *arg) {
  long t = (long)arg;
  for (int i = 0; i < kItems; i++) {
    uint64_t item = ((uint64_t)rank << 32) | ((uint64_t)t << 16) | (uint64_t)i;
    int b = (int)(Mix(item) % (uint64_t)nbins);
    CHECK(pw_lock_acquire(&bin_locks[b]) == PW_OK, "lock_acquire bin %d", b);
    uint64_t old = bins[b * bin_stride];
    bins[b * bin_stride] = old + 1;
    if (trace) fprintf(trace, "%d %ld %d %d %llu\n", rank, t, i, b, (unsigned long long)old);
    CHECK(pw_lock_release(&bin_locks[b]) == PW_OK, "lock_release bin %d", b);
  }
  return NULL;
}

static void Histogram(void) {
  if (getenv("HIST_BIN_STRIDE")) bin_stride = (size_t)atol(getenv("HIST_BIN_STRIDE"));
  if (getenv("HIST_BINS")) nbins = atoi(getenv("HIST_BINS"));
  if (getenv("HIST_TRACE")) {
    char path[256];
    snprintf(path, sizeof path, "%s.%d", getenv("HIST_TRACE"), rank);
    trace = fopen(path, "w");
  }
  if (nbins < 1 || nbins > kBins) nbins = kBins;
  bins = pw_alloc(kBins * bin_stride * sizeof(uint64_t), PW_PLACE_CYCLIC);
  bin_locks = pw_alloc(kBins * sizeof(pw_lock_t), PW_PLACE_CYCLIC);
  CHECK(bins && bin_locks, "pw_alloc");
  if (rank == 0) {
    for (int b = 0; b < kBins; b++) CHECK(pw_lock_init(&bin_locks[b]) == PW_OK, "lock_init");
  }
  pw_barrier();
  pthread_t th[kHistThreads];
  for (long t = 0; t < HistThreads(rank); t++) pthread_create(&th[t], NULL, HistogramWorker, (void *)t);
  for (long t = 0; t < HistThreads(rank); t++) pthread_join(th[t], NULL);
  CHECK(pw_barrier() == PW_OK, "barrier");
  uint64_t want[kBins] = {0};
  for (int r = 0; r < nranks; r++)
    for (long t = 0; t < HistThreads(r); t++)
      for (int i = 0; i < kItems; i++)
        want[Mix(((uint64_t)r << 32) | ((uint64_t)t << 16) | (uint64_t)i) % (uint64_t)nbins]++;
  for (int b = 0; b < kBins; b++) CHECK(bins[b * bin_stride] == want[b], "bin %d is %llu, want %llu", b, (unsigned long long)bins[b * bin_stride], (unsigned long long)want[b]);
  /* Bad input: releasing a lock not held, destroying a held one (held here,
   * and held by another rank: its home knows), and a lock outside global
   * memory. */
  pw_lock_t local;
  CHECK(pw_lock_release(&bin_locks[0]) == PW_ERR_STATE, "releasing an unheld lock: %s", pw_last_error());
  CHECK(pw_lock_acquire(&local) == PW_ERR_INVALID_ARGUMENT, "a lock outside global memory was accepted");
  pw_barrier();
  if (rank == 1) {
    CHECK(pw_lock_acquire(&bin_locks[1]) == PW_OK, "acquire");
    CHECK(pw_lock_destroy(&bin_locks[1]) == PW_ERR_STATE, "destroying a lock this rank holds: %s", pw_last_error());
  }
  pw_barrier();
  if (rank != 1) {
    CHECK(pw_lock_destroy(&bin_locks[1]) == PW_ERR_STATE, "destroying a lock rank 1 holds: %s", pw_last_error());
    CHECK(strstr(pw_last_error(), "held by rank 1") != NULL, "the refusal names the holder: %s", pw_last_error());
  }
  pw_barrier();
  if (rank == 1) CHECK(pw_lock_release(&bin_locks[1]) == PW_OK, "release");
  pw_barrier();
  CHECK(pw_lock_destroy(&bin_locks[1]) == PW_OK, "destroying a free lock: %s", pw_last_error());
  pw_barrier();
  pw_free(bins);
  pw_free(bin_locks);
}

/* ---- false sharing ---- */
static void FalseSharing(void) {
  const size_t pages = 16;
  /* Layouts: all on rank 0, block, and first touch (whoever reads a page
   * first owns it; on verbs its key reaches the others with the page). */
  for (int layout = 0; layout < 3; layout++) {
    unsigned char *g = layout == 0   ? pw_alloc_on(pages * PAGE, 0)
                       : layout == 1 ? pw_alloc(pages * PAGE, PW_PLACE_BLOCK)
                                     : pw_alloc(pages * PAGE, PW_PLACE_FIRST_TOUCH);
    CHECK(g, "pw_alloc");
    for (int round = 1; round <= 3; round++) {
      /* Byte i belongs to rank i % nranks; everyone reads first, so every
       * rank holds a cached copy when it writes. */
      volatile unsigned char sink = 0;
      for (size_t i = 0; i < pages * PAGE; i += PAGE) sink ^= g[i];
      (void)sink;
      for (size_t i = (size_t)rank; i < pages * PAGE; i += (size_t)nranks)
        g[i] = (unsigned char)(Mix(i * 7 + (size_t)round) & 0xff);
      CHECK(pw_barrier() == PW_OK, "barrier");
      for (size_t i = 0; i < pages * PAGE; i++) {
        unsigned char want = (unsigned char)(Mix(i * 7 + (size_t)round) & 0xff);
        CHECK(g[i] == want, "layout %d round %d: byte %zu is %u, want %u (written by rank %zu)",
              layout, round, i, g[i], want, i % (size_t)nranks);
      }
      CHECK(pw_barrier() == PW_OK, "barrier");
    }
    pw_free(g);
  }
}

/* ---- producer/consumer queue ---- */
enum { kSlots = 64, kPerProducer = 300 };
struct queue {
  pw_lock_t lock;
  uint64_t head, tail; /* head: next to take; tail: next to fill */
  uint64_t items[kSlots];
};

static void Queue(void) {
  struct queue *q = pw_alloc_on(sizeof(struct queue), nranks > 2 ? 2 : 0);
  CHECK(q, "pw_alloc_on");
  if (rank == 0) CHECK(pw_lock_init(&q->lock) == PW_OK, "lock_init");
  pw_barrier();
  const int consumer = 0;
  const int producers = nranks - 1;
  if (rank != consumer) {
    for (uint64_t i = 0; i < kPerProducer;) {
      CHECK(pw_lock_acquire(&q->lock) == PW_OK, "acquire");
      if (q->tail - q->head < kSlots) {
        q->items[q->tail % kSlots] = ((uint64_t)rank << 32) | i;
        q->tail++;
        i++;
      }
      CHECK(pw_lock_release(&q->lock) == PW_OK, "release");
    }
  } else {
    uint64_t next[64] = {0}, taken = 0;
    while (taken < (uint64_t)producers * kPerProducer) {
      CHECK(pw_lock_acquire(&q->lock) == PW_OK, "acquire");
      while (q->head < q->tail) {
        uint64_t v = q->items[q->head % kSlots];
        int from = (int)(v >> 32);
        CHECK(from > 0 && from < nranks, "item from rank %d", from);
        CHECK((v & 0xffffffff) == next[from], "item %llu from rank %d out of order (want %llu)",
              (unsigned long long)(v & 0xffffffff), from, (unsigned long long)next[from]);
        next[from]++;
        q->head++;
        taken++;
      }
      CHECK(pw_lock_release(&q->lock) == PW_OK, "release");
    }
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(q->head == q->tail && q->tail == (uint64_t)producers * kPerProducer,
        "queue ends at head %llu tail %llu", (unsigned long long)q->head, (unsigned long long)q->tail);
  pw_barrier();
  pw_free(q);
}

/* ---- atomics ---- */
enum { kAtomicThreads = 4, kAdds = 300 };
static uint64_t *counters;

static void *AtomicWorker(void *arg) {
  (void)arg;
  for (int i = 0; i < kAdds; i++) {
    uint64_t old;
    CHECK(pw_atomic_fetch_add(&counters[0], 1, &old) == PW_OK, "fetch_add");
    uint64_t seen;
    CHECK(pw_atomic_load(&counters[1], &seen) == PW_OK, "load");
    for (;;) {
      uint64_t got;
      CHECK(pw_atomic_cas(&counters[1], seen, seen + 3, &got) == PW_OK, "cas");
      if (got == seen) break;
      seen = got;
    }
  }
  return NULL;
}

static void Atomics(void) {
  /* Layout 0: both words homed on rank 0 (cyclic). Layout 1: first touch,
   * so the ranks race to own the page through its directory, and the
   * owner's own atomics go through its NIC with a key made on the spot. */
  for (int layout = 0; layout < 2; layout++) {
    counters = layout == 0 ? pw_alloc(2 * PAGE, PW_PLACE_CYCLIC)
                           : pw_alloc(2 * PAGE, PW_PLACE_FIRST_TOUCH);
    CHECK(counters, "pw_alloc");
    pw_barrier();
    pthread_t th[kAtomicThreads];
    for (long t = 0; t < kAtomicThreads; t++) pthread_create(&th[t], NULL, AtomicWorker, NULL);
    for (long t = 0; t < kAtomicThreads; t++) pthread_join(th[t], NULL);
    CHECK(pw_barrier() == PW_OK, "barrier");
    uint64_t a, b;
    CHECK(pw_atomic_load(&counters[0], &a) == PW_OK && pw_atomic_load(&counters[1], &b) == PW_OK, "load");
    const uint64_t n = (uint64_t)nranks * kAtomicThreads * kAdds;
    CHECK(a == n, "layout %d: fetch-add counter is %llu, want %llu", layout, (unsigned long long)a, (unsigned long long)n);
    CHECK(b == 3 * n, "layout %d: CAS counter is %llu, want %llu", layout, (unsigned long long)b, (unsigned long long)(3 * n));
    /* Bad input. */
    uint64_t old;
    CHECK(pw_atomic_fetch_add((uint64_t *)((char *)counters + 4), 1, &old) == PW_ERR_INVALID_ARGUMENT,
          "a misaligned atomic was accepted");
    CHECK(pw_atomic_fetch_add(&old, 1, &old) == PW_ERR_INVALID_ARGUMENT, "an atomic outside global memory was accepted");
    pw_barrier();
    pw_free(counters);
  }
}

/* ---- write-back races with concurrent faults ---- */
enum { kRacePages = 32, kEpochs = 12 };
static unsigned char *shared;
static volatile int readers_stop;

static void *RaceReader(void *arg) {
  (void)arg;
  unsigned x = 0;
  while (!readers_stop) {
    for (int p = 0; p < kRacePages; p++) x += shared[p * PAGE + (x % PAGE)];
  }
  return (void *)(uintptr_t)x;
}

static void Races(void) {
  shared = pw_alloc(kRacePages * PAGE, PW_PLACE_CYCLIC);
  CHECK(shared, "pw_alloc");
  pw_barrier();
  for (int e = 1; e <= kEpochs; e++) {
    readers_stop = 0;
    pthread_t th[2];
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, RaceReader, NULL);
    /* Rank r owns bytes [r*W, (r+1)*W) of every page for this epoch; the
     * ownership rotates so every rank writes pages homed everywhere. */
    const size_t w = PAGE / (size_t)nranks;
    const int slice = (rank + e) % nranks;
    for (int p = 0; p < kRacePages; p++)
      for (size_t i = (size_t)slice * w; i < (size_t)(slice + 1) * w; i++)
        shared[p * PAGE + i] = (unsigned char)(Mix(((uint64_t)e << 40) ^ ((uint64_t)p << 20) ^ i) & 0xff);
    CHECK(pw_release() == PW_OK, "release");
    readers_stop = 1;
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECK(pw_barrier() == PW_OK, "barrier");
    for (int p = 0; p < kRacePages; p++)
      for (size_t i = 0; i < w * (size_t)nranks; i++) {
        unsigned char want = (unsigned char)(Mix(((uint64_t)e << 40) ^ ((uint64_t)p << 20) ^ i) & 0xff);
        CHECK(shared[p * PAGE + i] == want, "epoch %d page %d byte %zu lost", e, p, i);
      }
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  pw_free(shared);
}

/* ---- pw_acquire (drop every cached copy) without locks or barriers ---- */
enum { kAcqPages = 8, kAcqRounds = 6 };
static unsigned char *acq_data;
static int acq_stop;
static int acq_round;

/* Byte i of every page belongs to rank i % nranks; its value in round e. */
static unsigned char AcqByte(int e, int p, size_t i) {
  return (unsigned char)(Mix(((uint64_t)e << 40) ^ ((uint64_t)p << 20) ^ i) & 0xff);
}

static void AcqWriteOwn(void) {
  for (int p = 0; p < kAcqPages; p++)
    for (size_t i = (size_t)rank; i < PAGE; i += (size_t)nranks)
      acq_data[(size_t)p * PAGE + i] = AcqByte(acq_round, p, i);
}

/* acquire_racing: keeps writing this rank's bytes while the main thread
 * acquires, so the acquire's own freeze finds twins to flush and writers
 * that meet frozen pages wait for the drop. It says when it has begun, and
 * the main thread waits for that before it acquires: on a loaded machine a
 * new thread may not run at all before the round ends, and then the
 * round's bytes would never be written (the check after the barrier
 * would report them lost, a failure of the test, not of the runtime). */
static int acq_begun;
static void *AcqScribbler(void *arg) {
  (void)arg;
  AcqWriteOwn();
  __atomic_store_n(&acq_begun, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&acq_stop, __ATOMIC_ACQUIRE)) AcqWriteOwn();
  return NULL;
}

/* Each round one rank (the writer) writes its bytes of every page, which
 * the others hold cached copies of, releases and publishes the round
 * through an atomic; the others write their own bytes (before the acquire,
 * or, racing, during it), wait for the round, pw_acquire and must see the
 * writer's new bytes. After a barrier every byte of every rank is there. */
static void Acquire(int racing) {
  acq_data = pw_alloc(kAcqPages * PAGE, PW_PLACE_CYCLIC);
  /* [0]: rounds published by their writer; [1]: readers ready, in all. */
  uint64_t *sync = pw_alloc(PAGE, PW_PLACE_CYCLIC);
  CHECK(acq_data && sync, "pw_alloc");
  pw_barrier();
  for (int e = 1; e <= kAcqRounds; e++) {
    acq_round = e;
    const int writer = e % nranks;
    /* Everyone caches every page (previous round's bytes) first. */
    volatile unsigned char sink = 0;
    for (int p = 0; p < kAcqPages; p++) sink ^= acq_data[(size_t)p * PAGE];
    (void)sink;
    uint64_t v;
    if (rank == writer) {
      const uint64_t want = (uint64_t)e * (uint64_t)(nranks - 1);
      do CHECK(pw_atomic_load(&sync[1], &v) == PW_OK, "load"); while (v < want);
      AcqWriteOwn();
      CHECK(pw_release() == PW_OK, "release");
      CHECK(pw_atomic_fetch_add(&sync[0], 1, &v) == PW_OK, "fetch_add");
    } else {
      pthread_t th;
      if (racing) {
        acq_stop = 0;
        acq_begun = 0;
        pthread_create(&th, NULL, AcqScribbler, NULL);
        while (!__atomic_load_n(&acq_begun, __ATOMIC_ACQUIRE)) sched_yield();
      } else {
        AcqWriteOwn();
      }
      CHECK(pw_atomic_fetch_add(&sync[1], 1, &v) == PW_OK, "fetch_add");
      do CHECK(pw_atomic_load(&sync[0], &v) == PW_OK, "load"); while (v < (uint64_t)e);
      CHECK(pw_acquire() == PW_OK, "acquire");
      for (int p = 0; p < kAcqPages; p++)
        for (size_t i = (size_t)writer; i < PAGE; i += (size_t)nranks)
          CHECK(acq_data[(size_t)p * PAGE + i] == AcqByte(e, p, i),
                "round %d: after pw_acquire, page %d byte %zu (rank %d's) is stale", e, p, i, writer);
      if (racing) {
        __atomic_store_n(&acq_stop, 1, __ATOMIC_RELEASE);
        pthread_join(th, NULL);
      }
    }
    CHECK(pw_barrier() == PW_OK, "barrier");
    for (int p = 0; p < kAcqPages; p++)
      for (size_t i = 0; i < PAGE; i++)
        CHECK(acq_data[(size_t)p * PAGE + i] == AcqByte(e, p, i),
              "round %d: page %d byte %zu (rank %zu's) lost: %u, want %u (round %d's was %u)", e, p, i,
              i % (size_t)nranks, acq_data[(size_t)p * PAGE + i], AcqByte(e, p, i), e - 1,
              AcqByte(e - 1, p, i));
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  pw_free(sync);
  pw_free(acq_data);
}

/* ---- read-ahead ---- */
enum { kRaPages = 64, kRaRounds = 4 };
static void ReadAhead(void) {
  uint64_t *data = pw_alloc_on(kRaPages * PAGE, 0);
  CHECK(data, "pw_alloc_on");
  const char *env = getenv("PAGEWIRE_READAHEAD");
  const int enabled = env == NULL || atoi(env) > 0;
  uint64_t ahead = 0;
  for (int e = 1; e <= kRaRounds; e++) {
    if (rank == 0)
      for (int p = 0; p < kRaPages; p++) data[(size_t)p * PAGE / 8] = (uint64_t)(e * 1000 + p);
    pw_stats_t before, after;
    CHECK(pw_get_stats(&before) == PW_OK, "stats");
    CHECK(pw_barrier() == PW_OK, "barrier");
    for (int p = 0; p < kRaPages; p++)
      CHECK(data[(size_t)p * PAGE / 8] == (uint64_t)(e * 1000 + p),
            "round %d page %d: read %llu, want %d", e, p,
            (unsigned long long)data[(size_t)p * PAGE / 8], e * 1000 + p);
    CHECK(pw_get_stats(&after) == PW_OK, "stats");
    if (rank != 0) {
      /* From round 3 the pages come with the barrier (pushed), unless
       * PAGEWIRE_PUSH=0; either way each arrives exactly once. */
      const uint64_t fetched = after.remote_fetches - before.remote_fetches;
      const uint64_t pushed = after.pushed - before.pushed;
      CHECK(fetched + pushed == kRaPages,
            "round %d: %llu fetches and %llu pushes for %d pages (each once)", e,
            (unsigned long long)fetched, (unsigned long long)pushed, kRaPages);
      /* Round 1 registers this rank with the home page by page: nothing
       * is read ahead of a first fetch. */
      if (e > 1) ahead += after.readaheads - before.readaheads;
    }
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  if (rank != 0) {
    if (enabled) CHECK(ahead > 0, "nothing was read ahead (PAGEWIRE_READAHEAD on)");
    else CHECK(ahead == 0, "%llu pages read ahead with PAGEWIRE_READAHEAD=0", (unsigned long long)ahead);
  }
  pw_free(data);
}

/* ---- pushed pages ---- */
enum { kPushPages = 8, kPushRounds = 40, kPushShared = 3 };
static uint64_t PushWord(int e, int p) { return (uint64_t)e * 1000 + (uint64_t)p; }
/* Rank 1 also writes word 1 of page kPushShared in these epochs. */
static int PushShared(int e) { return e % 5 == 0; }
static void Push(void) {
  uint64_t *data = pw_alloc_on(kPushPages * PAGE, 0);
  CHECK(data, "pw_alloc_on");
  const char *env = getenv("PAGEWIRE_PUSH");
  const int enabled = env == NULL || atoi(env) > 0;
  CHECK(pw_barrier() == PW_OK, "barrier");
  pw_stats_t before, after;
  CHECK(pw_get_stats(&before) == PW_OK, "stats");
  uint64_t shared = 0; /* word 1 of the shared page, as last written */
  for (int e = 1; e <= kPushRounds; e++) {
    if (rank == 0)
      for (int p = 0; p < kPushPages; p++) data[(size_t)p * PAGE / 8] = PushWord(e, p);
    if (PushShared(e)) {
      shared = (uint64_t)e;
      if (rank == 1) data[(size_t)kPushShared * PAGE / 8 + 1] = shared;
    }
    CHECK(pw_barrier() == PW_OK, "barrier");
    for (int p = 0; p < kPushPages; p++)
      CHECK(data[(size_t)p * PAGE / 8] == PushWord(e, p),
            "epoch %d page %d: read %llu, want %llu", e, p,
            (unsigned long long)data[(size_t)p * PAGE / 8],
            (unsigned long long)PushWord(e, p));
    CHECK(data[(size_t)kPushShared * PAGE / 8 + 1] == shared,
          "epoch %d: rank 1's word of page %d reads %llu, want %llu (a push "
          "from its home was taken though rank 1 wrote the page too?)",
          e, kPushShared, (unsigned long long)data[(size_t)kPushShared * PAGE / 8 + 1],
          (unsigned long long)shared);
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  CHECK(pw_get_stats(&after) == PW_OK, "stats");
  const uint64_t fetched = after.remote_fetches - before.remote_fetches;
  const uint64_t pushed = after.pushed - before.pushed;
  if (rank != 0) {
    if (enabled) {
      /* Every page read in every epoch: pushed, except a refetch to
       * subscribe at first, at each lease's end and after each refused
       * push of the shared page. */
      CHECK(pushed >= (uint64_t)kPushPages * kPushRounds / 2 &&
                fetched < (uint64_t)kPushPages * kPushRounds / 2,
            "%llu pages pushed and %llu fetched over %d epochs of %d pages: "
            "pushing does not work", (unsigned long long)pushed,
            (unsigned long long)fetched, kPushRounds, kPushPages);
    } else {
      CHECK(pushed == 0, "%llu pages pushed with PAGEWIRE_PUSH=0", (unsigned long long)pushed);
    }
  }
  printf("dsm_coherence: rank %d: %llu pages pushed, %llu fetched\n", rank,
         (unsigned long long)pushed, (unsigned long long)fetched);
  pw_free(data);
}

/* ---- pushed pages and locks ---- */
enum { kPlEpochs = 300 };
static uint64_t *pl_data, *pl_count;
static pw_lock_t *pl_lock;
static volatile int pl_stop;
static uint64_t pl_checks;
static void *PushLocksWorker(void *arg) {
  (void)arg;
  uint64_t n = 0;
  while (!__atomic_load_n(&pl_stop, __ATOMIC_ACQUIRE)) {
    CHECK(pw_lock_acquire(pl_lock) == PW_OK, "lock_acquire");
    if (rank == 0) {
      n++;
      pl_data[8] = n;  /* word 8 of the pushed page */
      CHECK(pw_atomic_store(pl_count, n) == PW_OK, "atomic_store");
    } else {
      uint64_t want;
      CHECK(pw_atomic_load(pl_count, &want) == PW_OK, "atomic_load");
      /* Twice, around a pause in which a barrier may push the page. */
      for (int k = 0; k < 2; k++) {
        const uint64_t seen = __atomic_load_n(&pl_data[8], __ATOMIC_RELAXED);
        CHECK(seen == want,
              "under the lock, word 8 of the pushed page reads %llu but rank "
              "0 wrote %llu under it (an older pushed copy replaced the one "
              "the lock's grant fetched?)",
              (unsigned long long)seen, (unsigned long long)want);
        if (k == 0) {
          struct timespec ts = {0, 50000};
          nanosleep(&ts, NULL);
        }
      }
      pl_checks++;
      /* Its own word of the page too: written under the lock, it must
       * read back after the release (a pushed copy that lacks it must not
       * replace the page). */
      pl_data[16 + rank] = pl_checks;
    }
    CHECK(pw_lock_release(pl_lock) == PW_OK, "lock_release");
    if (rank != 0) {
      const uint64_t own = __atomic_load_n(&pl_data[16 + rank], __ATOMIC_RELAXED);
      CHECK(own == pl_checks,
            "its own word of the pushed page reads %llu after it wrote %llu "
            "(a pushed copy without this rank's write replaced the page?)",
            (unsigned long long)own, (unsigned long long)pl_checks);
    }
  }
  return NULL;
}
static void PushLocks(void) {
  pl_data = pw_alloc_on(PAGE, 0);
  pl_count = pw_alloc_on(PAGE, nranks > 1 ? 1 : 0);
  pl_lock = pw_alloc_on(PAGE, nranks > 2 ? 2 : 0);
  CHECK(pl_data && pl_count && pl_lock, "pw_alloc_on");
  if (rank == 0) CHECK(pw_lock_init(pl_lock) == PW_OK, "lock_init");
  CHECK(pw_barrier() == PW_OK, "barrier");
  pthread_t th;
  pthread_create(&th, NULL, PushLocksWorker, NULL);
  for (int e = 1; e <= kPlEpochs; e++) {
    if (rank == 0) __atomic_store_n(&pl_data[0], (uint64_t)e, __ATOMIC_RELAXED);
    CHECK(pw_barrier() == PW_OK, "barrier");
    CHECK(__atomic_load_n(&pl_data[0], __ATOMIC_RELAXED) == (uint64_t)e,
          "epoch %d: word 0 reads %llu", e,
          (unsigned long long)__atomic_load_n(&pl_data[0], __ATOMIC_RELAXED));
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  __atomic_store_n(&pl_stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  CHECK(pw_barrier() == PW_OK, "barrier");
  pw_stats_t st;
  CHECK(pw_get_stats(&st) == PW_OK, "stats");
  printf("dsm_coherence: rank %d: %llu checks under the lock, %llu pages pushed\n",
         rank, (unsigned long long)pl_checks, (unsigned long long)st.pushed);
  /* The point of the test is pushes racing the lock: both must happen.
   * (Pages pushed: about one an epoch on TCP, one in five on soft-RoCE,
   * where the lock runs more often between barriers; a lock's grant that
   * dropped the page since the last barrier refuses the next push.) */
  if (rank != 0) {
    const char *push = getenv("PAGEWIRE_PUSH");
    CHECK(pl_checks > 0, "no check under the lock ran");
    CHECK(push == NULL || strcmp(push, "0") != 0 ? st.pushed >= kPlEpochs / 10 : st.pushed == 0,
          "%llu pages pushed over %d epochs (PAGEWIRE_PUSH=%s), fewer than one in ten: the "
          "test did not test pushes racing the lock", (unsigned long long)st.pushed, kPlEpochs, push ? push : "unset");
  }
}

/* ---- hot home pages ---- */
/* Rank 0 writes word 0 of a page it homes in the listed epochs; after each
 * barrier every rank must read the last value written. Epochs 2-6 make the
 * page hot; 7-29 leave it unwritten past its probe (16 barriers later);
 * 30 must still be seen (a write-protect fault again); 47-48 hot again. */
/* ---- write notices go to the cachers only ---- */
enum { kNoticePages = 16, kNoticeEpochs = 40 };
static uint64_t NoticeWord(int e, int r, int p) {
  return (uint64_t)e * 100000 + (uint64_t)r * 100 + (uint64_t)p;
}
static void Notices(void) {
  CHECK(nranks >= 3, "notices needs 3 or more ranks");
  const size_t words = PAGE / 8;
  uint64_t *g = pw_alloc((size_t)kNoticePages * nranks * PAGE, PW_PLACE_BLOCK);
  CHECK(g, "pw_alloc");
  uint64_t *own = g + (size_t)rank * kNoticePages * words;
  for (int p = 0; p < kNoticePages; p++) own[(size_t)p * words] = NoticeWord(0, rank, p);
  CHECK(pw_barrier() == PW_OK, "barrier");
  if (rank == 0) {  /* every page now has rank 0 as a cacher */
    for (int r = 0; r < nranks; r++)
      for (int p = 0; p < kNoticePages; p++)
        CHECK(g[((size_t)r * kNoticePages + p) * words] == NoticeWord(0, r, p),
              "rank %d page %d before the epochs", r, p);
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  pw_stats_t before, after;
  CHECK(pw_get_stats(&before) == PW_OK, "stats");
  const int right = (rank + 1) % nranks, right2 = (rank + 2) % nranks;
  for (int e = 1; e <= kNoticeEpochs; e++) {
    for (int p = 0; p < kNoticePages; p++) own[(size_t)p * words] = NoticeWord(e, rank, p);
    CHECK(pw_barrier() == PW_OK, "barrier");
    const uint64_t *r1 = g + (size_t)right * kNoticePages * words;
    CHECK(r1[0] == NoticeWord(e, right, 0), "epoch %d: rank %d's page 0 reads %llu, want %llu",
          e, right, (unsigned long long)r1[0], (unsigned long long)NoticeWord(e, right, 0));
    if (e > kNoticeEpochs / 2) {
      const uint64_t *r2 = g + ((size_t)right2 * kNoticePages + 1) * words;
      CHECK(r2[0] == NoticeWord(e, right2, 1), "epoch %d: rank %d's page 1 reads %llu, want %llu "
            "(read since epoch %d)", e, right2, (unsigned long long)r2[0],
            (unsigned long long)NoticeWord(e, right2, 1), kNoticeEpochs / 2 + 1);
    }
    if (rank == 0 && e % 10 == 0) {
      for (int r = 1; r < nranks; r++)
        for (int p = 0; p < kNoticePages; p++)
          CHECK(g[((size_t)r * kNoticePages + p) * words] == NoticeWord(e, r, p),
                "epoch %d: rank %d's page %d is stale on rank 0", e, r, p);
    }
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  CHECK(pw_get_stats(&after) == PW_OK, "stats");
  /* Pages written in every epoch are hot: named at both barriers of an
   * epoch, since nothing sees their writes. Each time, to rank 0 (which
   * caches all of them), the left neighbour (one) and, from half-way, the
   * rank two to the left (one more); rank 0's own pages to just those two. */
  const uint64_t notices = after.notices - before.notices;
  const uint64_t most = 2 * (uint64_t)kNoticeEpochs * (kNoticePages + 2);
  CHECK(notices <= most,
        "%llu write notices over %d epochs of %d written pages: more than %llu, "
        "so pages were named to ranks that do not cache them (%d would be "
        "every page to every rank)", (unsigned long long)notices, kNoticeEpochs,
        kNoticePages, (unsigned long long)most,
        2 * kNoticeEpochs * kNoticePages * (nranks - 1));
  printf("dsm_coherence: rank %d: %llu write notices over %d epochs\n", rank,
         (unsigned long long)notices, kNoticeEpochs);
  pw_free(g);
}

/* ---- a lock's log of writes stays bounded ---- */
enum { kLogSections = 9000, kLogEarly = 50 };
static void LockLog(void) {
  CHECK(nranks == 4, "lock_log needs 4 ranks");
  const size_t words = PAGE / 8;
  /* The lock and pages A and B live on rank 2, which never takes the lock:
   * A and B change only by the writers' diffs. */
  uint64_t *g = pw_alloc_on(3 * PAGE, 2);
  CHECK(g, "pw_alloc_on");
  pw_lock_t *lock = (pw_lock_t *)g;
  uint64_t *a = g + words, *b = g + 2 * words;
  uint64_t *done = pw_alloc_on(PAGE, 2);
  CHECK(done, "pw_alloc_on");
  if (rank == 2) CHECK(pw_lock_init(lock) == PW_OK, "lock_init");
  CHECK(pw_barrier() == PW_OK, "barrier");
  if (rank == 3) {
    CHECK(pw_lock_acquire(lock) == PW_OK, "acquire");
    CHECK(a[0] == 0 && b[0] == 0, "A and B start at 0");  /* now cached */
    CHECK(pw_lock_release(lock) == PW_OK, "release");
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  /* No barrier from here on: only the lock's grants tell who wrote what.
   * Rank 0 writes A in a few sections and stops; then rank 1 writes B in
   * many, so A's entries become the oldest and fall out of the log. */
  uint64_t n = 0, old;
  if (rank == 0 || rank == 1) {
    if (rank == 1) {
      while (n < 1) {
        CHECK(pw_atomic_load(done, &n) == PW_OK, "atomic_load");
        sched_yield();
      }
    }
    uint64_t *page = rank == 0 ? a : b;
    const int sections = rank == 0 ? kLogEarly : kLogSections;
    for (int i = 0; i < sections; i++) {
      CHECK(pw_lock_acquire(lock) == PW_OK, "acquire");
      page[0]++;
      CHECK(pw_lock_release(lock) == PW_OK, "release");
    }
    CHECK(pw_atomic_fetch_add(done, 1, &old) == PW_OK, "fetch_add");
  } else if (rank == 3) {
    while (n < 2) {
      CHECK(pw_atomic_load(done, &n) == PW_OK, "atomic_load");
      sched_yield();
    }
    CHECK(pw_lock_acquire(lock) == PW_OK, "acquire");
    CHECK(a[0] == kLogEarly, "page A reads %llu after the lock, want %d (its "
          "writes fell out of the lock's log and rank 3 was not told)",
          (unsigned long long)a[0], kLogEarly);
    CHECK(b[0] == kLogSections, "page B reads %llu, want %d",
          (unsigned long long)b[0], kLogSections);
    CHECK(pw_lock_release(lock) == PW_OK, "release");
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  pw_free(done);
  pw_free(g);
}

static int HotWritten(int e) { return e <= 6 || e == 30 || e == 47 || e == 48; }
static void Hot(void) {
  uint64_t *page = pw_alloc_on(PAGE, 0);
  CHECK(page, "pw_alloc_on");
  pw_barrier();
  uint64_t last = 0;
  for (int e = 1; e <= 60; e++) {
    if (HotWritten(e)) last = (uint64_t)e;
    if (rank == 0 && HotWritten(e)) page[0] = (uint64_t)e;
    CHECK(pw_barrier() == PW_OK, "barrier");
    CHECK(page[0] == last, "epoch %d: read %llu, want %llu", e,
          (unsigned long long)page[0], (unsigned long long)last);
    CHECK(pw_barrier() == PW_OK, "barrier");
  }
  pw_free(page);
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_coherence: pw_init: %s\n", pw_last_error());
    return 1;
  }
  rank = pw_rank();
  nranks = pw_nranks();
  const char *test = argc > 1 ? argv[1] : "";
  if (!strcmp(test, "histogram")) Histogram();
  else if (!strcmp(test, "false_sharing")) FalseSharing();
  else if (!strcmp(test, "queue")) Queue();
  else if (!strcmp(test, "atomics")) Atomics();
  else if (!strcmp(test, "races")) Races();
  else if (!strcmp(test, "acquire")) Acquire(0);
  else if (!strcmp(test, "acquire_racing")) Acquire(1);
  else if (!strcmp(test, "hot")) Hot();
  else if (!strcmp(test, "notices")) Notices();
  else if (!strcmp(test, "lock_log")) LockLog();
  else if (!strcmp(test, "readahead")) ReadAhead();
  else if (!strcmp(test, "push")) Push();
  else if (!strcmp(test, "push_locks")) PushLocks();
  else {
    fprintf(stderr, "usage: dsm_coherence histogram|false_sharing|queue|atomics|races|acquire|acquire_racing|hot|readahead|push|push_locks|notices|lock_log\n");
    return 2;
  }
  pw_stats_t s;
  pw_get_stats(&s);
  printf("dsm_coherence: %s rank %d ok (%llu faults, %llu remote fetches, %llu twins, %llu diff bytes, %llu invalidated)\n",
         test, rank, (unsigned long long)s.faults, (unsigned long long)s.remote_fetches,
         (unsigned long long)s.twins, (unsigned long long)s.diff_bytes, (unsigned long long)s.invalidated);
  return pw_finalize() == PW_OK ? 0 : 1;
}
