/*
 * dsm_check.c - every rank faults pages of every home, with contents
 * verified, from many threads at once. Run under pagewire-run:
 *   pagewire-run -n 4 dsm_check [threads] [pages_per_rank]
 * Each rank writes its own pages of a block-, a cyclic-, an on-rank- and a
 * first-touch allocation with a pattern naming the page, then (after a
 * barrier) every thread of every rank reads every page and checks it.
 * Prints "dsm_check: rank R ok" or exits non-zero naming the first bad page.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096

static int nranks, rank, nthreads;
static size_t npages;

static uint64_t Word(int alloc, size_t page, size_t word) {
  uint64_t x = ((uint64_t)alloc << 56) ^ ((uint64_t)page << 16) ^ word;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 32);
}

struct alloc {
  const char *name;
  uint64_t *base;
};
static struct alloc allocs[4];
static volatile int bad = 0;

static void *Reader(void *arg) {
  long t = (long)arg;
  for (int a = 0; a < 4; a++) {
    /* Different threads start at different pages, so faults overlap. */
    for (size_t i = 0; i < npages; i++) {
      size_t p = (i + (size_t)t * 7 + (size_t)rank * 13) % npages;
      const uint64_t *w = allocs[a].base + p * (PAGE / 8);
      for (size_t k = 0; k < PAGE / 8; k += 61) {
        if (w[k] != Word(a, p, k)) {
          fprintf(stderr, "dsm_check: rank %d thread %ld: %s page %zu word %zu is %llx, want %llx\n",
                  rank, t, allocs[a].name, p, k, (unsigned long long)w[k],
                  (unsigned long long)Word(a, p, k));
          bad = 1;
          return NULL;
        }
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_check: pw_init: %s\n", pw_last_error());
    return 1;
  }
  rank = pw_rank();
  nranks = pw_nranks();
  nthreads = argc > 1 ? atoi(argv[1]) : 8;
  size_t per_rank = argc > 2 ? (size_t)atol(argv[2]) : 64;
  npages = per_rank * (size_t)nranks;
  size_t bytes = npages * PAGE;
  allocs[0].name = "block";
  allocs[0].base = pw_alloc(bytes, PW_PLACE_BLOCK);
  allocs[1].name = "cyclic";
  allocs[1].base = pw_alloc(bytes, PW_PLACE_CYCLIC);
  allocs[2].name = "on-last-rank";
  allocs[2].base = pw_alloc_on(bytes, nranks - 1);
  allocs[3].name = "first-touch";
  allocs[3].base = pw_alloc(bytes, PW_PLACE_FIRST_TOUCH);
  for (int a = 0; a < 4; a++) {
    if (allocs[a].base == NULL) {
      fprintf(stderr, "dsm_check: pw_alloc %s: %s\n", allocs[a].name, pw_last_error());
      return 1;
    }
  }
  /* Each rank writes the pages it homes (first touch: rank p % nranks
   * touches page p first, so it becomes its home). */
  size_t share = (npages + nranks - 1) / nranks;
  for (size_t p = 0; p < npages; p++) {
    int home[4] = {(int)(p / share), (int)(p % nranks), nranks - 1,
                   (int)(p % nranks)};
    for (int a = 0; a < 4; a++) {
      if (home[a] != rank) continue;
      uint64_t *w = allocs[a].base + p * (PAGE / 8);
      for (size_t k = 0; k < PAGE / 8; k++) w[k] = Word(a, p, k);
    }
  }
  if (pw_barrier() != PW_OK) {
    fprintf(stderr, "dsm_check: barrier: %s\n", pw_last_error());
    return 1;
  }
  pthread_t th[64];
  if (nthreads > 64) nthreads = 64;
  for (long t = 0; t < nthreads; t++) pthread_create(&th[t], NULL, Reader, (void *)t);
  for (long t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
  if (bad) return 1;
  pw_stats_t s;
  pw_get_stats(&s);
  printf("dsm_check: rank %d ok: %zu pages x 4 allocations x %d threads; %llu faults, %llu remote fetches, %llu coalesced, served %llu, mean %.1f us, p99 %.1f us\n",
         rank, npages, nthreads, (unsigned long long)s.faults,
         (unsigned long long)s.remote_fetches, (unsigned long long)s.coalesced,
         (unsigned long long)s.served, s.mean_latency_us, s.p99_latency_us);
  if (pw_barrier() != PW_OK) return 1;
  for (int a = 0; a < 4; a++) pw_free(allocs[a].base);
  return pw_finalize() == PW_OK ? 0 : 1;
}
