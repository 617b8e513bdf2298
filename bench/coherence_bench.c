/*
 * coherence_bench.c - what the coherence protocol costs (issue 4), in one
 * run of an N-rank job (N >= 2):
 *
 *   pagewire-run -n N bazel-bin/bench/coherence_bench [--barriers B]
 *       [--pages K] [--rounds R] [--lock-iters L]
 *
 *   barrier    B timed pw_barrier() calls after 100 untimed ones; rank 0's
 *              time per call, p50/p99/mean.
 *   diff       rank 1 dirties K pages homed on rank 0 (pw_alloc_on(.., 0)):
 *              every byte ("full") or every 64th byte ("sparse"), then times
 *              pw_release() alone. MB/s of modified bytes (1 MB = 10^6
 *              bytes; the diff_bytes counter must grow by as many, else a
 *              WARNING line says so) and pages/s, median of
 *              R rounds after one untimed warm-up round. After each round
 *              rank 0 (the home) checks every byte of the K pages against
 *              the image it expects.
 *   lock       uncontended: rank 0 alone acquires/releases a lock homed on
 *              rank 1, then one homed on itself, L times each, incrementing
 *              a counter under the lock; p50/p99 of acquire and of release.
 *              Contended: every rank acquires one lock homed on rank 0 L
 *              times, incrementing a shared counter under it; total
 *              acquires/s and the mean acquire latency. Every counter is
 *              checked to be exact.
 *
 * The last line of rank 0, "summary: k=v ...", is for scripts.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096

static int rank, nranks;

#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      fprintf(stderr, "coherence_bench: rank %d: ", rank);        \
      fprintf(stderr, __VA_ARGS__);                               \
      fprintf(stderr, " (pw_last_error: %s)\n", pw_last_error()); \
      fflush(stderr);                                             \
      exit(1);                                                    \
    }                                                             \
  } while (0)

static uint64_t NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int CmpU64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}
static int CmpD(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts v in place; quantile q in microseconds. */
static double QuantileUs(uint64_t *v, size_t n, double q) {
  qsort(v, n, sizeof(*v), CmpU64);
  return v[(size_t)(q * (double)(n - 1))] / 1e3;
}
static double MeanUs(const uint64_t *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)v[i];
  return s / (double)n / 1e3;
}
static double Median(double *v, size_t n) {
  qsort(v, n, sizeof(*v), CmpD);
  return v[n / 2];
}

static pw_stats_t Stats(void) {
  pw_stats_t s;
  CHECK(pw_get_stats(&s) == PW_OK, "pw_get_stats");
  return s;
}

static void Barrier(const char *where) {
  CHECK(pw_barrier() == PW_OK, "pw_barrier (%s)", where);
}

/* ---- barrier latency ---- */
static double bar_p50, bar_p99, bar_mean;

static void BarrierBench(int count) {
  for (int i = 0; i < 100; i++) Barrier("barrier warm-up");
  uint64_t *t = malloc(sizeof(uint64_t) * (size_t)count);
  CHECK(t, "malloc");
  for (int i = 0; i < count; i++) {
    const uint64_t t0 = NowNs();
    Barrier("barrier bench");
    t[i] = NowNs() - t0;
  }
  bar_mean = MeanUs(t, (size_t)count);
  bar_p50 = QuantileUs(t, (size_t)count, 0.50);
  bar_p99 = QuantileUs(t, (size_t)count, 0.99);
  if (rank == 0) {
    printf("barrier: %d ranks, %d barriers: p50 %.1f us, p99 %.1f us, mean "
           "%.1f us (rank 0's time per pw_barrier call)\n",
           nranks, count, bar_p50, bar_p99, bar_mean);
    fflush(stdout);
  }
  free(t);
}

/* ---- diff write-back ---- */
/* The byte rank 1 writes at offset i of the area in round r. Consecutive
 * rounds differ in every byte, so every written byte is a modified byte. */
static unsigned char Pattern(size_t i, int r) {
  return (unsigned char)((i * 7u) ^ (i >> 12) ^ (unsigned)(r * 37 + 1));
}

static double diff_mbs[2], diff_pps[2], diff_us[2];

static void DiffBench(size_t pages, int rounds) {
  const size_t bytes = pages * PAGE;
  unsigned char *g = pw_alloc_on(bytes, 0);
  CHECK(g, "pw_alloc_on(%zu, 0)", bytes);
  unsigned char *expect = NULL;
  if (rank == 0) {
    expect = calloc(bytes, 1); /* global memory reads as zero until written */
    CHECK(expect, "calloc");
  }
  Barrier("diff start");
  int r = 0; /* round number, over both modes */
  for (int mode = 0; mode < 2; mode++) {
    const size_t stride = mode == 0 ? 1 : 64;
    double *mbs = calloc((size_t)rounds, sizeof(double));
    double *pps = calloc((size_t)rounds, sizeof(double));
    double *us = calloc((size_t)rounds, sizeof(double));
    uint64_t diff_total = 0;
    for (int k = -1; k < rounds; k++) { /* k = -1: untimed warm-up */
      ++r;
      if (rank == 1) {
        for (size_t i = 0; i < bytes; i += stride) g[i] = Pattern(i, r);
        const pw_stats_t before = Stats();
        const uint64_t t0 = NowNs();
        CHECK(pw_release() == PW_OK, "pw_release");
        const uint64_t dt = NowNs() - t0;
        const pw_stats_t after = Stats();
        const uint64_t diff = after.diff_bytes - before.diff_bytes;
        const uint64_t want = bytes / stride; /* every written byte changed */
        if (k >= 0 && diff != want) {
          printf("diff %s round %d: WARNING: diff_bytes grew by %llu at the "
                 "release, %llu bytes were modified\n",
                 mode ? "sparse" : "full", k, (unsigned long long)diff,
                 (unsigned long long)want);
        }
        if (k >= 0) {
          mbs[k] = (double)want / ((double)dt / 1e9) / 1e6;
          pps[k] = (double)pages / ((double)dt / 1e9);
          us[k] = (double)dt / 1e3;
          diff_total += diff;
        }
      }
      Barrier("diff round");
      if (rank == 0) {
        for (size_t i = 0; i < bytes; i += stride) expect[i] = Pattern(i, r);
        for (size_t i = 0; i < bytes; i++) {
          CHECK(g[i] == expect[i],
                "%s round %d: byte %zu (page %zu) at the home is %u, want %u",
                mode ? "sparse" : "full", k, i, i / PAGE, g[i], expect[i]);
        }
      }
      Barrier("diff check");
    }
    if (rank == 1) {
      diff_mbs[mode] = Median(mbs, (size_t)rounds);
      diff_pps[mode] = Median(pps, (size_t)rounds);
      diff_us[mode] = Median(us, (size_t)rounds);
      printf("diff %s: %zu pages (%zu modified bytes each), pw_release median "
             "%.0f us: %.1f MB/s of modified bytes, %.0f pages/s (median of "
             "%d rounds; diff_bytes counter grew by %llu)\n",
             mode ? "sparse (every 64th byte)" : "full pages", pages,
             PAGE / stride, diff_us[mode], diff_mbs[mode], diff_pps[mode],
             rounds, (unsigned long long)diff_total);
      fflush(stdout);
    }
    free(mbs);
    free(pps);
    free(us);
  }
  if (rank == 0) {
    printf("diff: rank 0 (the home) checked all %zu bytes after each of the "
           "%d rounds: every byte as written by rank 1\n",
           bytes, 2 * (rounds + 1));
    fflush(stdout);
  }
  /* Pass rank 1's figures to rank 0 through global memory homed on rank 0:
   * rank 1 writes, the barrier releases it. */
  double *box = pw_alloc_on(PAGE, 0);
  CHECK(box, "pw_alloc_on");
  if (rank == 1) {
    box[0] = diff_mbs[0]; box[1] = diff_pps[0]; box[2] = diff_us[0];
    box[3] = diff_mbs[1]; box[4] = diff_pps[1]; box[5] = diff_us[1];
  }
  Barrier("diff results");
  if (rank == 0) {
    diff_mbs[0] = box[0]; diff_pps[0] = box[1]; diff_us[0] = box[2];
    diff_mbs[1] = box[3]; diff_pps[1] = box[4]; diff_us[1] = box[5];
  }
  Barrier("diff results read");
  CHECK(pw_free(box) == PW_OK, "pw_free");
  CHECK(pw_free(g) == PW_OK, "pw_free");
  free(expect);
}

/* ---- locks ---- */
struct locked {
  pw_lock_t lock;
  uint64_t counter;
};

static double lk_acq50[2], lk_acq99[2], lk_rel50[2], lk_rel99[2];
static double lk_rate, lk_mean;

/* Rank 0 alone: `iters` acquire/release pairs on a lock homed on `home`. */
static void UncontendedLock(int home, int iters, int which) {
  struct locked *l = pw_alloc_on(PAGE, home);
  CHECK(l, "pw_alloc_on");
  if (rank == 0) CHECK(pw_lock_init(&l->lock) == PW_OK, "pw_lock_init");
  Barrier("lock init");
  if (rank == 0) {
    uint64_t *acq = malloc(sizeof(uint64_t) * (size_t)iters);
    uint64_t *rel = malloc(sizeof(uint64_t) * (size_t)iters);
    CHECK(acq && rel, "malloc");
    for (int i = -50; i < iters; i++) { /* 50 untimed warm-up pairs */
      const uint64_t t0 = NowNs();
      CHECK(pw_lock_acquire(&l->lock) == PW_OK, "pw_lock_acquire");
      const uint64_t t1 = NowNs();
      l->counter++;
      CHECK(pw_lock_release(&l->lock) == PW_OK, "pw_lock_release");
      const uint64_t t2 = NowNs();
      if (i >= 0) {
        acq[i] = t1 - t0;
        rel[i] = t2 - t1;
      }
    }
    const double am = MeanUs(acq, (size_t)iters), rm = MeanUs(rel, (size_t)iters);
    lk_acq50[which] = QuantileUs(acq, (size_t)iters, 0.5);
    lk_acq99[which] = QuantileUs(acq, (size_t)iters, 0.99);
    lk_rel50[which] = QuantileUs(rel, (size_t)iters, 0.5);
    lk_rel99[which] = QuantileUs(rel, (size_t)iters, 0.99);
    printf("lock uncontended, homed on rank %d (%s): %d pairs: acquire p50 "
           "%.1f us p99 %.1f us mean %.1f us; release p50 %.1f us p99 %.1f "
           "us mean %.1f us\n",
           home, home == 0 ? "local" : "remote", iters, lk_acq50[which],
           lk_acq99[which], am, lk_rel50[which], lk_rel99[which], rm);
    fflush(stdout);
    free(acq);
    free(rel);
  }
  Barrier("lock done");
  /* Every rank reads the counter under the lock: it must be exact. */
  CHECK(pw_lock_acquire(&l->lock) == PW_OK, "pw_lock_acquire (check)");
  const uint64_t c = l->counter;
  CHECK(pw_lock_release(&l->lock) == PW_OK, "pw_lock_release (check)");
  CHECK(c == (uint64_t)iters + 50, "uncontended counter is %llu, want %llu",
        (unsigned long long)c, (unsigned long long)iters + 50);
  Barrier("lock check");
  if (rank == 0) CHECK(pw_lock_destroy(&l->lock) == PW_OK, "pw_lock_destroy");
  Barrier("lock destroy");
  CHECK(pw_free(l) == PW_OK, "pw_free");
}

/* Every rank: `iters` acquire/release pairs on one lock homed on rank 0. */
static void ContendedLock(int iters) {
  struct locked *l = pw_alloc_on(PAGE, 0);
  /* Per-rank results, one page per rank, each homed on its writer. */
  double *res = pw_alloc((size_t)nranks * PAGE, PW_PLACE_BLOCK);
  CHECK(l && res, "pw_alloc");
  if (rank == 0) CHECK(pw_lock_init(&l->lock) == PW_OK, "pw_lock_init");
  Barrier("contended init");
  uint64_t lat = 0;
  const uint64_t t0 = NowNs();
  for (int i = 0; i < iters; i++) {
    const uint64_t a = NowNs();
    CHECK(pw_lock_acquire(&l->lock) == PW_OK, "pw_lock_acquire");
    lat += NowNs() - a;
    l->counter++;
    CHECK(pw_lock_release(&l->lock) == PW_OK, "pw_lock_release");
  }
  const uint64_t t1 = NowNs();
  double *mine = res + (size_t)rank * (PAGE / sizeof(double));
  mine[0] = (double)t0;
  mine[1] = (double)t1;
  mine[2] = (double)lat / iters / 1e3;
  Barrier("contended done");
  CHECK(pw_lock_acquire(&l->lock) == PW_OK, "pw_lock_acquire (check)");
  const uint64_t c = l->counter;
  CHECK(pw_lock_release(&l->lock) == PW_OK, "pw_lock_release (check)");
  CHECK(c == (uint64_t)nranks * (uint64_t)iters,
        "contended counter is %llu, want %llu (lost updates under the lock)",
        (unsigned long long)c, (unsigned long long)nranks * (uint64_t)iters);
  if (rank == 0) {
    /* CLOCK_MONOTONIC is one clock for every rank of this machine. */
    double first = 1e300, last = 0, mean = 0;
    for (int r = 0; r < nranks; r++) {
      const double *o = res + (size_t)r * (PAGE / sizeof(double));
      if (o[0] < first) first = o[0];
      if (o[1] > last) last = o[1];
      mean += o[2] / nranks;
      printf("lock contended: rank %d: %d acquires in %.1f ms, mean acquire "
             "%.1f us\n", r, iters, (o[1] - o[0]) / 1e6, o[2]);
    }
    lk_rate = (double)nranks * iters / ((last - first) / 1e9);
    lk_mean = mean;
    printf("lock contended: %d ranks x %d acquires of one lock homed on rank "
           "0: %.0f acquires/s in total, mean acquire latency %.1f us; "
           "counter %llu exact\n",
           nranks, iters, lk_rate, lk_mean, (unsigned long long)c);
    fflush(stdout);
  }
  Barrier("contended check");
  CHECK(pw_free(res) == PW_OK, "pw_free");
  CHECK(pw_free(l) == PW_OK, "pw_free");
}

int main(int argc, char **argv) {
  int barriers = 2000, rounds = 5, lock_iters = 2000;
  size_t pages = 2048;
  const char *only = "";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--barriers") && i + 1 < argc) barriers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--pages") && i + 1 < argc) pages = (size_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--lock-iters") && i + 1 < argc) lock_iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      fprintf(stderr,
              "usage: pagewire-run -n N coherence_bench [--barriers B (2000)] "
              "[--pages K (2048)] [--rounds R (5)] [--lock-iters L (2000)] "
              "[--only barrier|diff|lock]\n");
      return 2;
    }
  }
  if (barriers < 10 || pages < 1 || rounds < 1 || lock_iters < 10) {
    fprintf(stderr, "coherence_bench: need --barriers >= 10, --pages >= 1, "
                    "--rounds >= 1, --lock-iters >= 10\n");
    return 2;
  }
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "coherence_bench: pw_init: %s\n", pw_last_error());
    return 1;
  }
  rank = pw_rank();
  nranks = pw_nranks();
  if (nranks < 2) {
    fprintf(stderr, "coherence_bench: needs at least 2 ranks, not %d\n", nranks);
    return 2;
  }
  if (!*only || !strcmp(only, "barrier")) BarrierBench(barriers);
  if (!*only || !strcmp(only, "diff")) DiffBench(pages, rounds);
  if (!*only || !strcmp(only, "lock")) {
    UncontendedLock(1, lock_iters, 0);
    UncontendedLock(0, lock_iters, 1);
    ContendedLock(lock_iters);
  }
  const pw_stats_t s = Stats();
  printf("stats: rank %d: %llu faults, %llu remote fetches, %llu served, %llu "
         "twins, %llu diff bytes, %llu invalidated, %llu failed\n",
         rank, (unsigned long long)s.faults,
         (unsigned long long)s.remote_fetches, (unsigned long long)s.served,
         (unsigned long long)s.twins, (unsigned long long)s.diff_bytes,
         (unsigned long long)s.invalidated, (unsigned long long)s.failed);
  CHECK(s.failed == 0, "%llu faults failed", (unsigned long long)s.failed);
  if (rank == 0) {
    printf("summary: nranks=%d bar_p50_us=%.2f bar_p99_us=%.2f bar_mean_us=%.2f "
           "full_mbs=%.1f full_pps=%.0f full_us=%.0f sparse_mbs=%.2f "
           "sparse_pps=%.0f sparse_us=%.0f "
           "lock_remote_acq_p50_us=%.2f lock_remote_acq_p99_us=%.2f "
           "lock_remote_rel_p50_us=%.2f lock_remote_rel_p99_us=%.2f "
           "lock_local_acq_p50_us=%.2f lock_local_acq_p99_us=%.2f "
           "lock_local_rel_p50_us=%.2f lock_local_rel_p99_us=%.2f "
           "lock_contended_rate=%.0f lock_contended_mean_us=%.2f\n",
           nranks, bar_p50, bar_p99, bar_mean, diff_mbs[0], diff_pps[0],
           diff_us[0], diff_mbs[1], diff_pps[1], diff_us[1], lk_acq50[0],
           lk_acq99[0], lk_rel50[0], lk_rel99[0], lk_acq50[1], lk_acq99[1],
           lk_rel50[1], lk_rel99[1], lk_rate, lk_mean);
    fflush(stdout);
  }
  Barrier("end");
  return pw_finalize() == PW_OK ? 0 : 1;
}
