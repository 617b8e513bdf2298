/*
 * dsm_death.c - a rank dies; the faults that need it fail loudly, the rest
 * of the job is not disturbed.
 *   PAGEWIRE_LEASE_MS=60000 pagewire-run -n 3 --grace-ms 20000 dsm_death
 * Rank 1 homes an allocation and kills itself (SIGKILL) after a barrier.
 * Its death is known by evidence (the kernel closes its connections), not
 * by a lease: the survivors' barrier must fail within a second, far inside
 * the minute-long lease.
 * Rank 0 then reads a page homed on rank 1: it must get SIGBUS (the runtime
 * logs why). Rank 2 meanwhile reads pages homed on rank 0, which must keep
 * working. Sequentially consistent memory too: rank 1 dies holding a page
 * of rank 0's for writing, so its latest contents die with it: rank 0's
 * read of it must get SIGBUS once membership declares the death, while
 * rank 2 still reads an SC page rank 0 wrote. The survivors' barrier after
 * the death (before those reads) must fail naming rank 1. They ignore
 * the launcher's SIGTERM long enough to report, then exit 0.
 *
 *   pagewire-run -n 2 --grace-ms 20000 dsm_death early
 * Rank 1 exits (status 3) before pw_init, so no connection of its ever
 * opens or closes: only the process manager's word (pagewire-run saw the
 * exit) tells membership it is dead. Rank 0's pw_init must fail naming
 * rank 1 and that word, instead of waiting for it forever. (Two ranks: a
 * third that starts late would find rank 0's coordinator already gone.)
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static sigjmp_buf jump;
static void OnBus(int sig) {
  (void)sig;
  siglongjmp(jump, 1);
}

static void Pause(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* `dsm_death early`: see the file comment. */
static int EarlyDeath(int *argc, char ***argv) {
  const char *r = getenv("PAGEWIRE_RANK");
  if (r != NULL && strcmp(r, "1") == 0) {
    Pause(500); /* the others are waiting for it in pw_init by then */
    return 3;
  }
  signal(SIGTERM, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (pw_init(argc, argv) == PW_OK) {
    printf("dsm_death: rank %s: pw_init succeeded without rank 1: WRONG\n", r);
    return 1;
  }
  printf("dsm_death: rank %s: pw_init failed: %s\n", r, pw_last_error());
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "early") == 0) return EarlyDeath(&argc, &argv);
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_death: pw_init: %s\n", pw_last_error());
    return 1;
  }
  signal(SIGTERM, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before any death */
  int rank = pw_rank();
  const size_t pages = 64;
  unsigned char *on1 = pw_alloc_on(pages * 4096, 1);
  unsigned char *on0 = pw_alloc_on(pages * 4096, 0);
  if (on1 == NULL || on0 == NULL) {
    fprintf(stderr, "dsm_death: pw_alloc_on: %s\n", pw_last_error());
    return 1;
  }
  /* Cyclic over 3 ranks: SC pages 0 and 3 are homed on rank 0. */
  volatile unsigned char *sc = pw_alloc_sc(6 * 4096, PW_PLACE_CYCLIC);
  if (sc == NULL) {
    fprintf(stderr, "dsm_death: pw_alloc_sc: %s\n", pw_last_error());
    return 1;
  }
  if (rank == 1) memset(on1, 0x11, pages * 4096);
  if (rank == 0) memset(on0, 0x22, pages * 4096);
  if (rank == 1) sc[0] = 0x33;        /* rank 1 holds SC page 0 for writing */
  if (rank == 0) sc[3 * 4096] = 0x44; /* rank 0 holds SC page 3 */
  pw_barrier();
  if (rank == 1) {
    printf("dsm_death: rank 1 dies now\n");
    fflush(stdout);
    raise(SIGKILL);
  }
  /* The barrier ends only with evidence that rank 1 is gone (its
   * connections closed, or membership's word), and fails naming it; the
   * faults below meet a dead rank, never one about to die. */
  int status = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pw_status_t b = pw_barrier();
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const long ms = (t1.tv_sec - t0.tv_sec) * 1000L +
                  (t1.tv_nsec - t0.tv_nsec) / 1000000L;
  printf("dsm_death: rank %d: barrier after the death: %s: %s\n", rank,
         pw_status_str(b), pw_last_error());
  if (b == PW_OK) status = 1;
  if (ms >= 1000) {
    printf("dsm_death: rank %d: the death took %ld ms to be known: WRONG "
           "(evidence is a closed connection, within a second)\n", rank, ms);
    status = 1;
  } else {
    printf("dsm_death: rank %d: the death was known after %ld ms\n", rank, ms);
  }
  if (rank == 0) {
    /* sigaction, not signal(): strict C11 gives signal() System V
     * semantics, which would reset the handler after the first SIGBUS. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = OnBus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    if (sigsetjmp(jump, 1) == 0) {
      volatile unsigned char v = on1[5 * 4096];
      printf("dsm_death: rank 0 read %d from dead rank 1's page: WRONG\n", v);
      status = 1;
    } else {
      printf("dsm_death: rank 0 got SIGBUS reading a page homed on dead rank 1\n");
    }
    /* Every other page of the dead home fails the same way: the log says
     * so in a few lines, not one per fault. */
    int buses = 0;
    for (size_t p = 0; p < pages; p++) {
      if (p == 5) continue;
      if (sigsetjmp(jump, 1) == 0) {
        volatile unsigned char v = on1[p * 4096];
        (void)v;
      } else {
        buses++;
      }
    }
    printf("dsm_death: rank 0 got SIGBUS on %d more pages of dead rank 1\n",
           buses);
    if (buses != (int)pages - 1) status = 1;
    if (sigsetjmp(jump, 1) == 0) {
      volatile unsigned char v = sc[7];
      printf("dsm_death: rank 0 read %d from an SC page dead rank 1 held: WRONG\n", v);
      status = 1;
    } else {
      printf("dsm_death: rank 0 got SIGBUS reading an SC page dead rank 1 held\n");
    }
  }
  if (rank == 2) {
    for (size_t p = 0; p < pages; p++) {
      if (on0[p * 4096 + 7] != 0x22) {
        printf("dsm_death: rank 2 read a wrong byte from rank 0\n");
        status = 1;
      }
    }
    if (sc[3 * 4096] != 0x44) {
      printf("dsm_death: rank 2 read a wrong byte of an SC page rank 0 wrote\n");
      status = 1;
    }
    printf("dsm_death: rank 2 still reads rank 0's pages\n");
  }
  fflush(stdout);
  /* Let every rank log the death before the launcher ends the job. */
  Pause(1500);
  _exit(status);
}
