/*
 * mpi_get_latency.c - the MPI baseline for bench/remote_fault: one 4 KiB
 * MPI_Get from rank 1 completed by MPI_Win_flush(1), timed, passive target.
 *
 *   mpirun --allow-run-as-root --oversubscribe -np 2 --mca pml ob1 \
 *          --mca btl tcp,self --mca osc pt2pt mpi_get_latency [pages] [rounds]
 *
 * Rank 1 exposes `pages` pages (MPI_Win_allocate) holding the same pattern
 * as remote_fault; rank 0 locks the window once (MPI_Win_lock_all) and gets
 * each page in turn, `rounds` times, checking every page that arrives.
 * Prints p50/p99 and a "summary: k=v" line that bench/remote_fault.sh reads.
 * Built outside Bazel by bench/remote_fault.sh with mpicc.
 */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096

/* remote_fault.cc's Word(): a word naming its page and position. */
static uint64_t Word(uint64_t page, uint64_t word) {
  uint64_t x = (page << 16) ^ word ^ 0x7061676577697265ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 32);
}

static uint64_t NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int Cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, nranks;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  long pages = argc > 1 ? atol(argv[1]) : 20000;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (nranks != 2 || pages < 100 || rounds < 1) {
    if (rank == 0) {
      fprintf(stderr, "mpi_get_latency: needs -np 2, pages >= 100, rounds >= 1 "
                      "(usage: mpi_get_latency [pages] [rounds])\n");
    }
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Aint bytes = rank == 1 ? (MPI_Aint)pages * PAGE : 0;
  uint64_t *base = NULL;
  MPI_Win win;
  MPI_Win_allocate(bytes, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
  if (rank == 1) {
    for (long p = 0; p < pages; p++) {
      for (long k = 0; k < PAGE / 8; k++) base[p * (PAGE / 8) + k] = Word(p, k);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);

  int bad = 0;
  if (rank == 0) {
    uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)pages * rounds);
    uint64_t *dst = malloc(PAGE);
    size_t n = 0;
    MPI_Win_lock_all(0, win);
    /* Warm-up: the first operations set up the connection. */
    for (long p = 0; p < 100; p++) {
      MPI_Get(dst, PAGE, MPI_BYTE, 1, (MPI_Aint)p * PAGE, PAGE, MPI_BYTE, win);
      MPI_Win_flush(1, win);
    }
    for (int r = 0; r < rounds && !bad; r++) {
      for (long p = 0; p < pages; p++) {
        uint64_t t0 = NowNs();
        MPI_Get(dst, PAGE, MPI_BYTE, 1, (MPI_Aint)p * PAGE, PAGE, MPI_BYTE, win);
        MPI_Win_flush(1, win);
        lat[n++] = NowNs() - t0;
        for (long k = 0; k < PAGE / 8; k++) {
          if (dst[k] != Word(p, k)) {
            fprintf(stderr, "mpi_get_latency: page %ld word %ld is %llx, want "
                            "%llx\n", p, k, (unsigned long long)dst[k],
                    (unsigned long long)Word(p, k));
            bad = 1;
            break;
          }
        }
        if (bad) break;
      }
    }
    MPI_Win_unlock_all(win);
    if (!bad) {
      qsort(lat, n, sizeof(uint64_t), Cmp);
      double p50 = lat[(size_t)(0.5 * (n - 1))] / 1e3;
      double p99 = lat[(size_t)(0.99 * (n - 1))] / 1e3;
      printf("mpi_get_latency: %ld pages x %d rounds, 4 KiB MPI_Get + "
             "MPI_Win_flush, every page checked\n", pages, rounds);
      printf("%-40s %10s %10s\n", "MPI_Get 4 KiB + flush (us)", "p50", "p99");
      printf("%-40s %10.2f %10.2f\n", "MPI_Get + MPI_Win_flush(1)", p50, p99);
      printf("summary: mpi_p50_us=%.2f mpi_p99_us=%.2f\n", p50, p99);
      fflush(stdout);
    }
    free(lat);
    free(dst);
  }
  /* Rank 1 waits here, driving MPI progress for rank 0's gets. */
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Win_free(&win);
  MPI_Finalize();
  return bad;
}
