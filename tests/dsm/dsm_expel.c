/*
 * dsm_expel.c - a rank that membership declared dead while it lives is out
 * for good: every call it makes fails naming why, and its pw_finalize
 * returns that failure; the others carry on.
 *   pagewire-run -n 3 dsm_expel PATH/TO/pagewire-ctl
 * Rank 0 asks the coordinator for the job's status, then declares rank 2
 * dead with pagewire-ctl (the operator's command; the ranks' environment
 * holds the coordinator, cluster id and secret it needs). Rank 2 waits
 * until a call fails with PW_ERR_NOT_MEMBER, then checks that barriers,
 * allocations, locks and pw_finalize fail the same way. Ranks 0 and 1
 * count one dead rank; their DSM barriers fail naming rank 2 (a release
 * for everyone cannot include a dead rank), their locks work, and their
 * pw_finalize succeeds.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void Pause(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int status = 0;
#define CHECK(cond, ...)                                      \
  do {                                                        \
    if (!(cond)) {                                            \
      printf("dsm_expel: rank %d: FAIL: ", pw_rank());        \
      printf(__VA_ARGS__);                                    \
      printf("\n");                                           \
      status = 1;                                             \
    }                                                         \
  } while (0)

static void Run(const char *command) {
  printf("dsm_expel: rank 0 runs %s\n", command);
  fflush(stdout);
  CHECK(system(command) == 0, "%s failed", command);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: dsm_expel PATH/TO/pagewire-ctl\n");
    return 2;
  }
  const char *ctl = argv[1];
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_expel: pw_init: %s\n", pw_last_error());
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const int rank = pw_rank();
  pw_lock_t *lock = pw_alloc(4096, PW_PLACE_CYCLIC);
  CHECK(lock != NULL, "pw_alloc: %s", pw_last_error());
  if (rank == 0) CHECK(pw_lock_init(lock) == PW_OK, "lock_init");
  CHECK(pw_barrier() == PW_OK, "barrier: %s", pw_last_error());
  if (rank == 0) {
    char command[4096];
    snprintf(command, sizeof command, "%s status", ctl);
    Run(command);
    snprintf(command, sizeof command,
             "%s declare-dead 2 --reason 'test: node-2 is being replaced'", ctl);
    Run(command);
    snprintf(command, sizeof command, "%s status", ctl);
    Run(command);
  }
  if (rank == 2) {
    /* Out once this rank hears of the verdict (its view, or a refused
     * heartbeat); bounded so a broken verdict fails instead of hanging. */
    pw_status_t s = PW_OK;
    for (int i = 0; i < 300 && (s = pw_release()) == PW_OK; i++) Pause(100);
    CHECK(s == PW_ERR_NOT_MEMBER, "pw_release after the verdict: %s",
          pw_status_str(s));
    CHECK(strstr(pw_last_error(), "node-2 is being replaced") != NULL,
          "the error does not say why: %s", pw_last_error());
    printf("dsm_expel: rank 2: out: %s\n", pw_last_error());
    CHECK(pw_barrier() == PW_ERR_NOT_MEMBER, "pw_barrier: %s", pw_last_error());
    CHECK(pw_alloc(4096, PW_PLACE_BLOCK) == NULL, "pw_alloc succeeded");
    CHECK(pw_lock_acquire(lock) == PW_ERR_NOT_MEMBER, "pw_lock_acquire: %s",
          pw_last_error());
    pw_stats_t st;
    CHECK(pw_get_stats(&st) == PW_OK, "pw_get_stats");
    const pw_status_t f = pw_finalize();
    CHECK(f == PW_ERR_NOT_MEMBER, "pw_finalize returned %s", pw_status_str(f));
    printf("dsm_expel: rank 2: pw_finalize: %s: %s\n", pw_status_str(f),
           pw_last_error());
  } else {
    pw_stats_t st;
    for (int i = 0; i < 300; i++) {
      if (pw_get_stats(&st) == PW_OK && st.dead_ranks == 1) break;
      Pause(100);
    }
    CHECK(pw_barrier() == PW_ERR_UNAVAILABLE, "barrier after the verdict: %s",
          pw_last_error());
    CHECK(strstr(pw_last_error(), "rank 2") != NULL,
          "the barrier's failure does not name rank 2: %s", pw_last_error());
    CHECK(pw_lock_acquire(lock) == PW_OK, "lock: %s", pw_last_error());
    CHECK(pw_lock_release(lock) == PW_OK, "unlock: %s", pw_last_error());
    CHECK(pw_get_stats(&st) == PW_OK && st.dead_ranks == 1,
          "%llu dead ranks, want 1", (unsigned long long)st.dead_ranks);
    const pw_status_t f = pw_finalize();
    CHECK(f == PW_OK, "pw_finalize: %s: %s", pw_status_str(f), pw_last_error());
  }
  if (status == 0) printf("dsm_expel: rank %d ok\n", rank);
  return status;
}
