/*
 * dsm_rank_threads.c - many threads per rank, each releasing and acquiring
 * on its own, must lose no write. Run under pagewire-run:
 *   pagewire-run -n 4 dsm_rank_threads SYNC [THREADS] [INCREMENTS]
 *
 * Every thread of every rank (global thread id g of G) increments counters
 * on pages that only it writes (pages g + k*G of one block-placed array, a
 * word per increment), reads random words of the whole array after each
 * increment, and every kSyncEvery increments synchronises on its own, as
 * SYNC says:
 *   relacq     pw_release() then pw_acquire()
 *   acquire    pw_acquire() only
 *   release    pw_release() only
 *   barrier    pw_release() then pw_acquire(), while thread 0 of every rank
 *              also calls pw_barrier() kBarriers times in the middle of its
 *              work (the other threads keep going)
 *   sc         pw_release() then pw_acquire(), on a pw_alloc_sc array
 *   locked     relacq, and every kLockEvery increments an increment of a
 *              word of a page every thread shares, under that page's lock
 * Every read of a thread's own counter must give exactly what it wrote last
 * (a write never disappears, not even for a while); every counter read of
 * another thread's must be at most what that thread will ever write. After a
 * final pw_barrier() every rank checks every counter exactly.
 *
 * PAGEWIRE_PUSH and PAGEWIRE_READAHEAD are read by the runtime as usual.
 * Prints "dsm_rank_threads: SYNC rank R ok" or names the first difference
 * and exits non-zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096
#define WORDS (PAGE / sizeof(uint64_t))

static int rank, nranks;

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "dsm_rank_threads: rank %d: ", rank);     \
      fprintf(stderr, __VA_ARGS__);                             \
      fprintf(stderr, " (%s)\n", pw_last_error());              \
      exit(1);                                                  \
    }                                                           \
  } while (0)

enum {
  kSyncEvery = 64,   /* iterations between a thread's own syncs */
  kBarriers = 8,     /* pw_barrier calls by thread 0 (SYNC barrier) */
  kLockEvery = 16,   /* iterations between locked increments (SYNC locked) */
  kSharedPages = 8,  /* pages every thread increments under locks */
};

enum Sync { kRelAcq, kAcquire, kRelease, kBarrier, kSc, kLocked };
static enum Sync sync_mode;
static int threads = 16;
static long iterations = 200;  /* per thread */
static long pages_per_thread = 25;
static int total_threads;      /* G */
static uint64_t *array;        /* G * pages_per_thread pages */
static uint64_t *shared;       /* kSharedPages pages, SYNC locked */
static pw_lock_t *locks;       /* one per shared page */

static uint64_t Mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

/* Thread g's counter on its k-th page: the same word in every iteration,
 * so a copy that lacks any earlier increment shows at the next one. */
static uint64_t *Counter(int g, long k) {
  return array + ((size_t)g + (size_t)k * (size_t)total_threads) * WORDS;
}

static void Sync(void) {
  if (sync_mode != kAcquire) CHECK(pw_release() == PW_OK, "pw_release");
  if (sync_mode != kRelease) CHECK(pw_acquire() == PW_OK, "pw_acquire");
}

static void *Worker(void *arg) {
  const int t = (int)(long)arg;
  const int g = rank * threads + t;
  const size_t words = (size_t)total_threads * (size_t)pages_per_thread * WORDS;
  const uint64_t bound = (uint64_t)iterations;
  uint64_t seed = Mix((uint64_t)g + 1);
  const long barrier_every = iterations / (kBarriers + 1);
  int barriers = 0;
  for (long i = 0; i < iterations; i++) {
    /* What this thread wrote last into each of its counters (nobody else
     * writes them). */
    const uint64_t mine = (uint64_t)i;
    for (long k = 0; k < pages_per_thread; k++) {
      volatile uint64_t *c = Counter(g, k);
      const uint64_t before = *c;
      CHECK(before == mine,
            "thread %d: its counter on page %zu reads %llu in iteration %ld, "
            "but it wrote %llu: a write of its own was lost",
            g, (size_t)(((uint64_t *)c - array) / WORDS),
            (unsigned long long)before, i, (unsigned long long)mine);
      *c = before + 1;
      /* A random word of the whole array: fetches other ranks' pages. */
      seed = Mix(seed);
      const size_t at = (size_t)(seed % words);
      const uint64_t seen = ((volatile uint64_t *)array)[at];
      CHECK(seen <= bound, "word %zu reads %llu, more than any counter reaches (%llu)",
            at, (unsigned long long)seen, (unsigned long long)bound);
    }
    if (sync_mode == kLocked && i % kLockEvery == kLockEvery - 1) {
      const size_t p = (size_t)(Mix(seed) % kSharedPages);
      CHECK(pw_lock_acquire(&locks[p]) == PW_OK, "lock_acquire %zu", p);
      volatile uint64_t *s = shared + p * WORDS + (size_t)g % (WORDS - 1);
      *s = *s + 1;
      shared[p * WORDS + WORDS - 1] += 1; /* the word every thread writes */
      CHECK(pw_lock_release(&locks[p]) == PW_OK, "lock_release %zu", p);
    }
    if (i % kSyncEvery == kSyncEvery - 1) Sync();
    if (sync_mode == kBarrier && t == 0 && barriers < kBarriers &&
        i == barrier_every * (barriers + 1)) {
      CHECK(pw_barrier() == PW_OK, "barrier %d", barriers);
      ++barriers;
    }
  }
  /* Its own counters once more, after its last sync. */
  for (long k = 0; k < pages_per_thread; k++) {
    const uint64_t v = *Counter(g, k);
    CHECK(v == (uint64_t)iterations, "thread %d: its counter on its page %ld reads %llu at the end, want %ld",
          g, k, (unsigned long long)v, iterations);
  }
  CHECK(sync_mode != kBarrier || t != 0 || barriers == kBarriers, "thread 0 made %d barriers", barriers);
  return NULL;
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_rank_threads: pw_init: %s\n", pw_last_error());
    return 1;
  }
  rank = pw_rank();
  nranks = pw_nranks();
  const char *name = argc > 1 ? argv[1] : "";
  if (!strcmp(name, "relacq")) sync_mode = kRelAcq;
  else if (!strcmp(name, "acquire")) sync_mode = kAcquire;
  else if (!strcmp(name, "release")) sync_mode = kRelease;
  else if (!strcmp(name, "barrier")) sync_mode = kBarrier;
  else if (!strcmp(name, "sc")) sync_mode = kSc;
  else if (!strcmp(name, "locked")) sync_mode = kLocked;
  else {
    fprintf(stderr, "usage: dsm_rank_threads relacq|acquire|release|barrier|sc|locked [threads] [iterations] [pages]\n");
    return 2;
  }
  if (argc > 2) threads = atoi(argv[2]);
  if (argc > 3) iterations = atol(argv[3]);
  if (argc > 4) pages_per_thread = atol(argv[4]);
  if (threads < 1 || threads > 256 || iterations < 1 || pages_per_thread < 1) {
    fprintf(stderr, "dsm_rank_threads: threads must be 1..256, iterations and pages >= 1\n");
    return 2;
  }
  total_threads = nranks * threads;
  const size_t bytes = (size_t)total_threads * (size_t)pages_per_thread * PAGE;
  array = sync_mode == kSc ? pw_alloc_sc(bytes, PW_PLACE_BLOCK) : pw_alloc(bytes, PW_PLACE_BLOCK);
  CHECK(array, "pw_alloc of %zu bytes", bytes);
  if (sync_mode == kLocked) {
    shared = pw_alloc(kSharedPages * PAGE, PW_PLACE_CYCLIC);
    locks = pw_alloc(kSharedPages * sizeof(pw_lock_t), PW_PLACE_CYCLIC);
    CHECK(shared && locks, "pw_alloc");
    if (rank == 0) {
      for (int p = 0; p < kSharedPages; p++) CHECK(pw_lock_init(&locks[p]) == PW_OK, "lock_init");
    }
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  pthread_t th[256];
  for (long t = 0; t < threads; t++) {
    CHECK(pthread_create(&th[t], NULL, Worker, (void *)t) == 0, "pthread_create");
  }
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  CHECK(pw_barrier() == PW_OK, "final barrier");

  /* Every counter of every thread, exactly. */
  uint64_t sum = 0, lost = 0;
  for (int g = 0; g < total_threads; g++) {
    for (long k = 0; k < pages_per_thread; k++) {
      const uint64_t v = *Counter(g, k);
      const uint64_t want = (uint64_t)iterations;
      sum += v;
      if (v < want) lost += want - v;
      CHECK(v <= want, "thread %d's counter on its page %ld reads %llu, more than the %llu made",
            g, k, (unsigned long long)v, (unsigned long long)want);
    }
  }
  const uint64_t made = (uint64_t)iterations * (uint64_t)pages_per_thread * (uint64_t)total_threads;
  CHECK(lost == 0, "%llu of %llu increments are lost (the counters add up to %llu)",
        (unsigned long long)lost, (unsigned long long)made, (unsigned long long)sum);
  if (sync_mode == kLocked) {
    uint64_t locked = 0;
    for (int p = 0; p < kSharedPages; p++) {
      uint64_t per_thread = 0;
      for (size_t w = 0; w < WORDS - 1; w++) per_thread += shared[(size_t)p * WORDS + w];
      CHECK(per_thread == shared[(size_t)p * WORDS + WORDS - 1],
            "shared page %d: its threads' words add up to %llu, its common word says %llu", p,
            (unsigned long long)per_thread, (unsigned long long)shared[(size_t)p * WORDS + WORDS - 1]);
      locked += per_thread;
    }
    const uint64_t want = (uint64_t)(iterations / kLockEvery) * (uint64_t)total_threads;
    CHECK(locked == want, "%llu locked increments reached the shared pages, want %llu",
          (unsigned long long)locked, (unsigned long long)want);
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  pw_stats_t s;
  pw_get_stats(&s);
  printf("dsm_rank_threads: %s rank %d ok (%d threads, %llu increments; %llu faults, "
         "%llu remote fetches, %llu twins, %llu invalidated, %llu pushed)\n",
         name, rank, threads, (unsigned long long)sum, (unsigned long long)s.faults,
         (unsigned long long)s.remote_fetches, (unsigned long long)s.twins,
         (unsigned long long)s.invalidated, (unsigned long long)s.pushed);
  return pw_finalize() == PW_OK ? 0 : 1;
}
