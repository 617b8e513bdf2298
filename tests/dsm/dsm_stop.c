/*
 * dsm_stop.c - a home that stops (SIGSTOP: a debugger, a swap storm) is
 * suspected, not declared dead, and the faults that need it wait for it.
 *   pagewire-run -n 6 dsm_stop [STOP_MS]
 * The last rank homes an allocation and publishes its pid; rank 0 stops it
 * (SIGSTOP) for STOP_MS (default 10000, past the 3 s lease) and then lets
 * it go on (SIGCONT). Ranks 1..n-2 start reading the home's pages while it
 * is stopped: every read must complete with the exact contents, no fault
 * may fail, and each reader prints how long its reads took. The suspicion
 * is logged by the coordinator and by every rank, and lifted (the test
 * script checks the logs).
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static long NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void Pause(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static uint64_t Expected(size_t page, size_t word) {
  return (uint64_t)page * 0x10001u + word * 7u + 0x5a5a;
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_stop: pw_init: %s\n", pw_last_error());
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const long stop_ms = argc > 1 ? atol(argv[1]) : 10000;
  const int rank = pw_rank(), n = pw_nranks(), home = n - 1;
  if (n < 3 || stop_ms <= 0) {
    fprintf(stderr, "dsm_stop: needs at least 3 ranks and STOP_MS > 0\n");
    return 2;
  }
  const size_t pages = 64, words = 4096 / sizeof(uint64_t);
  uint64_t *data = pw_alloc_on(pages * 4096, home);
  uint64_t *pid_word = pw_alloc_on(4096, home);
  if (data == NULL || pid_word == NULL) {
    fprintf(stderr, "dsm_stop: pw_alloc_on: %s\n", pw_last_error());
    return 1;
  }
  if (rank == home) {
    for (size_t p = 0; p < pages; p++)
      for (size_t w = 0; w < words; w++) data[p * words + w] = Expected(p, w);
    *pid_word = (uint64_t)getpid();
  }
  if (pw_barrier() != PW_OK) {
    fprintf(stderr, "dsm_stop: barrier: %s\n", pw_last_error());
    return 1;
  }
  int status = 0;
  if (rank == 0) {
    const pid_t pid = (pid_t)*pid_word;
    if (kill(pid, SIGSTOP) != 0) {
      perror("dsm_stop: kill SIGSTOP");
      return 1;
    }
    printf("dsm_stop: rank 0 stopped the home, rank %d (pid %d), for %ld ms\n",
           home, (int)pid, stop_ms);
    Pause(stop_ms);
    kill(pid, SIGCONT);
    printf("dsm_stop: rank 0 let the home go on\n");
  } else if (rank != home) {
    Pause(500); /* the home is stopped by now */
    const long t0 = NowMs();
    size_t wrong = 0;
    for (size_t p = 0; p < pages; p++)
      for (size_t w = 0; w < words; w++)
        wrong += data[p * words + w] != Expected(p, w);
    const long took = NowMs() - t0;
    pw_stats_t st;
    pw_get_stats(&st);
    printf("dsm_stop: rank %d read %zu pages in %ld ms: %zu wrong words, "
           "%llu faults failed\n",
           rank, pages, took, wrong, (unsigned long long)st.failed);
    if (wrong != 0 || st.failed != 0) status = 1;
  }
  /* Everyone, the home included once it runs again, meets here. */
  if (pw_barrier() != PW_OK) {
    fprintf(stderr, "dsm_stop: rank %d: barrier after the stop: %s\n", rank,
            pw_last_error());
    status = 1;
  }
  pw_stats_t st;
  pw_get_stats(&st);
  if (st.dead_ranks != 0 || st.suspected_ranks != 0) {
    printf("dsm_stop: rank %d: %llu ranks dead, %llu suspected after the "
           "stop: WRONG\n",
           rank, (unsigned long long)st.dead_ranks,
           (unsigned long long)st.suspected_ranks);
    status = 1;
  }
  const pw_status_t f = pw_finalize();
  if (f != PW_OK) {
    fprintf(stderr, "dsm_stop: rank %d: pw_finalize: %s\n", rank,
            pw_last_error());
    status = 1;
  }
  if (status == 0) printf("dsm_stop: rank %d ok\n", rank);
  return status;
}
