/*
 * dsm_collectives.c - collective calls agree or fail together: when one
 * rank's part fails, or the ranks pass different arguments or call
 * different collectives at the same point (pw_barrier included), every
 * rank gets the same
 * status and the same message (naming each rank and what it did), nobody
 * hangs, and the job goes on.
 *   pagewire-run -n 3 dsm_collectives
 * Each case prints "dsm_collectives: CASE: rank R: STATUS: MESSAGE"; the
 * test script checks that every rank printed the same STATUS and MESSAGE.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int status = 0;
static int rank;

static void Report(const char *what, pw_status_t s) {
  printf("dsm_collectives: %s: rank %d: %s: %s\n", what, rank,
         pw_status_str(s), s == PW_OK ? "" : pw_last_error());
}

static void ExpectNull(const char *what, void *p) {
  if (p != NULL) {
    printf("dsm_collectives: %s: rank %d: succeeded: WRONG\n", what, rank);
    status = 1;
    return;
  }
  Report(what, PW_ERR_STATE);
}

static void ExpectFailure(const char *what, pw_status_t s) {
  if (s == PW_OK) {
    printf("dsm_collectives: %s: rank %d: succeeded: WRONG\n", what, rank);
    status = 1;
    return;
  }
  Report(what, s);
}

static void Barrier(const char *what) {
  if (pw_barrier() != PW_OK) {
    printf("dsm_collectives: %s: rank %d: pw_barrier: %s\n", what, rank,
           pw_last_error());
    status = 1;
  }
}

/* The job goes on: a collective allocation works, its memory is shared. */
static void ExpectJobGoesOn(const char *what) {
  uint64_t *a = pw_alloc(4096 * 3, PW_PLACE_CYCLIC);
  if (a == NULL) {
    printf("dsm_collectives: %s: rank %d: the next pw_alloc failed: %s\n",
           what, rank, pw_last_error());
    status = 1;
    return;
  }
  a[rank * 512] = 100 + (uint64_t)rank;
  Barrier(what);
  for (int r = 0; r < pw_nranks(); r++) {
    if (a[r * 512] != 100 + (uint64_t)r) {
      printf("dsm_collectives: %s: rank %d: read %llu from rank %d\n", what,
             rank, (unsigned long long)a[r * 512], r);
      status = 1;
    }
  }
  if (pw_free(a) != PW_OK) {
    printf("dsm_collectives: %s: rank %d: pw_free: %s\n", what, rank,
           pw_last_error());
    status = 1;
  }
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_collectives: pw_init: %s\n", pw_last_error());
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  rank = pw_rank();

  /* A directory: the home cannot open it, the others cannot size it. */
  ExpectNull("attach_dir", pw_attach_file("/tmp", 0));
  ExpectJobGoesOn("attach_dir");

  /* One rank's bad argument. */
  ExpectNull("zero_bytes", pw_alloc(rank == 1 ? 0 : 4096, PW_PLACE_BLOCK));
  ExpectJobGoesOn("zero_bytes");

  /* Different sizes. */
  ExpectNull("sizes", pw_alloc(rank == 2 ? 8192 : 4096, PW_PLACE_BLOCK));
  ExpectJobGoesOn("sizes");

  /* Different allocations freed: nothing is freed, both stay usable. */
  char *x = pw_alloc(4096, PW_PLACE_BLOCK);
  char *y = pw_alloc(4096, PW_PLACE_BLOCK);
  if (x == NULL || y == NULL) {
    printf("dsm_collectives: rank %d: pw_alloc: %s\n", rank, pw_last_error());
    return 1;
  }
  ExpectFailure("free_mismatch", pw_free(rank == 0 ? x : y));
  if (rank == 0) x[0] = 7;
  if (pw_barrier() != PW_OK || x[0] != 7) {
    printf("dsm_collectives: free_mismatch: rank %d: x is gone\n", rank);
    status = 1;
  }

  /* Different collectives at the same point. */
  if (rank == 0) {
    ExpectNull("kinds", pw_alloc(4096, PW_PLACE_BLOCK));
  } else {
    ExpectFailure("kinds", pw_free(y));
  }
  ExpectJobGoesOn("kinds");

  /* pw_barrier (data plane) against a control-plane collective: rank 0
   * allocates while the others wait in pw_barrier. Everyone wrote first;
   * the undone barrier's writes are told at the next one. */
  uint64_t *w = pw_alloc(4096 * 3, PW_PLACE_CYCLIC);
  if (w == NULL) {
    printf("dsm_collectives: rank %d: pw_alloc: %s\n", rank, pw_last_error());
    return 1;
  }
  Barrier("barrier_vs_alloc");
  /* Every rank caches every page, so a write not told would leave a stale
   * copy behind. */
  for (int r = 0; r < pw_nranks(); r++) {
    if (w[r * 512 + 1] != 0) {
      printf("dsm_collectives: barrier_vs_alloc: rank %d: a new allocation "
             "read %llu from rank %d, not 0\n",
             rank, (unsigned long long)w[r * 512 + 1], r);
      status = 1;
    }
  }
  Barrier("barrier_vs_alloc (all cached)");  /* nobody writes before all read */
  w[rank * 512 + 1] = 300 + (uint64_t)rank;
  if (rank == 0) {
    ExpectNull("barrier_vs_alloc", pw_alloc(4096, PW_PLACE_BLOCK));
  } else {
    ExpectFailure("barrier_vs_alloc", pw_barrier());
  }
  Barrier("barrier_vs_alloc (the next barrier)");
  for (int r = 0; r < pw_nranks(); r++) {
    if (w[r * 512 + 1] != 300 + (uint64_t)r) {
      printf("dsm_collectives: barrier_vs_alloc: rank %d: read %llu from "
             "rank %d after the next barrier\n",
             rank, (unsigned long long)w[r * 512 + 1], r);
      status = 1;
    }
  }
  ExpectJobGoesOn("barrier_vs_alloc");

  /* The other way round: two ranks free while one waits in pw_barrier,
   * having arrived there first. */
  if (rank == 2) {
    ExpectFailure("alloc_vs_barrier", pw_barrier());
  } else {
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    ExpectFailure("alloc_vs_barrier", pw_free(w));
  }
  ExpectJobGoesOn("alloc_vs_barrier");
  if (pw_free(w) != PW_OK) {
    printf("dsm_collectives: rank %d: pw_free(w): %s\n", rank, pw_last_error());
    status = 1;
  }

  if (pw_free(x) != PW_OK || pw_free(y) != PW_OK) {
    printf("dsm_collectives: rank %d: the final frees failed: %s\n", rank,
           pw_last_error());
    status = 1;
  }
  if (pw_finalize() != PW_OK) {
    printf("dsm_collectives: rank %d: pw_finalize: %s\n", rank,
           pw_last_error());
    status = 1;
  }
  if (status == 0) printf("dsm_collectives: rank %d ok\n", rank);
  return status;
}
