/*
 * heat.c - 2D heat diffusion (Jacobi) on a global grid, one block of rows
 * per rank. The main example of Pagewire:
 *
 *   pagewire-run -n 4 heat [N] [iterations]
 *
 * Two N x N grids of doubles live in global memory with block placement, so
 * rank r homes a contiguous band of rows. Each iteration every rank
 * computes its own band of the new grid from the old one: the rows next to
 * its band (halos) are homed on the neighbouring ranks and arrive by
 * remote page faults, then pushed by their homes with each barrier, with
 * no explicit communication in this program. A barrier ends each
 * iteration. At the end rank 0 reads the whole grid (faulting in every
 * other rank's band) and checks it bit for bit against a sequential
 * computation. Every rank prints its time computing and in barriers, and
 * its fault statistics.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double Now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Fixed boundary: the top edge is hot, the others cold. */
static void Boundary(double *g, long n) {
  for (long j = 0; j < n; j++) g[j] = 1.0;
}

static void Step(const double *u, double *v, long n, long row0, long row1) {
  for (long i = row0 < 1 ? 1 : row0; i < row1 && i < n - 1; i++) {
    for (long j = 1; j < n - 1; j++) {
      v[i * n + j] = 0.25 * (u[(i - 1) * n + j] + u[(i + 1) * n + j] +
                             u[i * n + j - 1] + u[i * n + j + 1]);
    }
  }
}

int main(int argc, char **argv) {
  pw_status_t s = pw_init(&argc, &argv);
  if (s != PW_OK) {
    fprintf(stderr, "heat: pw_init failed: %s\n", pw_last_error());
    return 1;
  }
  const int rank = pw_rank(), nranks = pw_nranks();
  const long n = argc > 1 ? atol(argv[1]) : 512;
  const int iters = argc > 2 ? atoi(argv[2]) : 100;
  const long row_bytes = n * (long)sizeof(double);
  if (iters < 1) {
    fprintf(stderr, "heat: %d iterations: give 1 or more\n", iters);
    pw_finalize();
    return 2;
  }
  if (n < 8 || (n * row_bytes) % 4096 != 0 ||
      (n * row_bytes / 4096) % nranks != 0 || n % nranks != 0) {
    /* The smallest grid from N up whose rows split into equal, page-aligned
     * bands, one per rank. */
    long fit = n < 8 ? 8 : n;
    while (fit % nranks != 0 || (fit / nranks) * fit * 8 % 4096 != 0) fit++;
    fprintf(stderr,
            "heat: N=%ld does not split into %d page-aligned bands of whole "
            "rows; pick N so that N is a multiple of %d and each band (N/%d "
            "rows of N doubles) a multiple of 4096 bytes: N=%ld is the next "
            "that does\n",
            n, nranks, nranks, nranks, fit);
    pw_finalize();
    return 2;
  }
  const size_t bytes = (size_t)n * (size_t)row_bytes;
  double *u = pw_alloc(bytes, PW_PLACE_BLOCK);
  double *v = pw_alloc(bytes, PW_PLACE_BLOCK);
  if (u == NULL || v == NULL) {
    fprintf(stderr, "heat: pw_alloc failed: %s\n", pw_last_error());
    return 1;
  }
  /* Block placement: rank r homes pages [r*share, (r+1)*share). */
  const long rows_per_rank = n / nranks;
  const long row0 = rank * rows_per_rank, row1 = row0 + rows_per_rank;

  /* Every rank initialises its own band of both grids. */
  for (long i = row0; i < row1; i++) {
    memset(&u[i * n], 0, row_bytes);
    memset(&v[i * n], 0, row_bytes);
  }
  if (rank == 0) {
    Boundary(u, n);
    Boundary(v, n);
  }
  pw_barrier();

  double t0 = Now(), in_barrier = 0;
  for (int it = 0; it < iters; it++) {
    Step(u, v, n, row0, row1);
    const double b0 = Now();
    if (pw_barrier() != PW_OK) {
      fprintf(stderr, "heat: barrier failed: %s\n", pw_last_error());
      return 1;
    }
    in_barrier += Now() - b0;
    double *t = u;
    u = v;
    v = t;
  }
  double elapsed = Now() - t0;

  int ok = 1;
  if (rank == 0) {
    double *a = calloc(n * n, sizeof(double)), *b = calloc(n * n, sizeof(double));
    Boundary(a, n);
    Boundary(b, n);
    for (int it = 0; it < iters; it++) {
      Step(a, b, n, 0, n);
      double *t = a;
      a = b;
      b = t;
    }
    long bad = 0;
    double sum = 0;
    for (long k = 0; k < n * n; k++) {
      if (u[k] != a[k]) bad++;
      sum += u[k];
    }
    ok = bad == 0;
    printf("heat: %ldx%ld grid, %d iterations on %d ranks: %.3f ms/iteration, "
           "heat sum %.6f, %s (%ld cells differ from the sequential run)\n",
           n, n, iters, nranks, elapsed * 1e3 / iters, sum,
           ok ? "matches the sequential computation" : "WRONG", bad);
    free(a);
    free(b);
  }
  pw_stats_t st;
  pw_get_stats(&st);
  printf("heat: rank %d: %.3f ms/iteration computing (halo faults included), "
         "%.3f in barriers; %llu faults, %llu remote fetches, %llu served, "
         "%llu pushed, %.1f write notices sent per barrier, fault latency "
         "mean %.1f us, p99 %.1f us\n",
         rank, (elapsed - in_barrier) * 1e3 / iters, in_barrier * 1e3 / iters,
         (unsigned long long)st.faults,
         (unsigned long long)st.remote_fetches, (unsigned long long)st.served,
         (unsigned long long)st.pushed, (double)st.notices / iters,
         st.mean_latency_us, st.p99_latency_us);
  pw_barrier();
  pw_free(u);
  pw_free(v);
  if (pw_finalize() != PW_OK) return 1;
  return ok ? 0 : 3;
}
