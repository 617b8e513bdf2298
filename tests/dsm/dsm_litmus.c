/*
 * dsm_litmus.c - sequential consistency (pw_alloc_sc) litmus tests across
 * ranks: outcomes that sequential consistency forbids must never show.
 *   pagewire-run -n 4 dsm_litmus mp|sb|dekker|counter|errors
 *
 * Ranks pair up (0-1, 2-3, ...; an odd last rank only joins the
 * collectives); each pair races on its own words of one cyclic allocation,
 * so the pages' homes are the pair's ranks and the others.
 *
 *   mp       message passing: A writes data then a flag; B, once it sees
 *            the flag, must see the data (forbidden: flag set, data old)
 *   sb       store buffering: A: x=1; r1=y   B: y=1; r2=x, started together
 *            each round (forbidden: r1 == 0 && r2 == 0)
 *   dekker   Dekker's mutual exclusion on plain flags and a turn word; the
 *            critical section increments a plain counter and checks that
 *            nobody else is inside (forbidden: two inside, a lost count)
 *   counter  every thread of every rank increments one word with the CPU's
 *            own atomic fetch-add: the total is exact
 *   errors   bad input: first-touch placement and pw_atomic_* on this
 *            memory are refused with a message naming the fix
 *
 * Loads and stores of the shared words are C11 seq_cst atomics, so the
 * compiler and the CPU keep program order; Pagewire's part is to keep it
 * across ranks. Each round of mp, sb and dekker starts with the pair
 * meeting on SC words, so the two sides really race. Rounds:
 * LITMUS_ROUNDS (default 200).
 * Prints "dsm_litmus: <test> rank R ok ..." or the first forbidden outcome
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
#define CHECK(cond, ...)                                     \
  do {                                                       \
    if (!(cond)) {                                           \
      fprintf(stderr, "dsm_litmus: rank %d: ", rank);        \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, " (%s)\n", pw_last_error());           \
      exit(1);                                               \
    }                                                        \
  } while (0)

static int rank, nranks, rounds = 200;

static uint64_t Load(volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void Store(volatile uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* The pair's region: `words` words per pair, pages apart per pair. */
static volatile uint64_t *PairRegion(volatile uint64_t *base, size_t words) {
  size_t per_pair = (words * 8 + PAGE - 1) / PAGE * PAGE / 8;
  return base + (size_t)(rank / 2) * per_pair;
}
static size_t AllocWords(size_t words) {
  size_t per_pair = (words * 8 + PAGE - 1) / PAGE * PAGE / 8;
  return per_pair * (size_t)((nranks + 1) / 2);
}
static int InPair(void) { return rank / 2 * 2 + 1 < nranks; }

/* A two-party barrier on SC words: arrive[side] counts rounds. */
static void PairSync(volatile uint64_t *arrive, int side, uint64_t round) {
  Store(&arrive[side], round);
  while (Load(&arrive[1 - side]) < round) {
  }
}

static void MessagePassing(void) {
  /* data and flag on pages of their own, arrive[2] on a third; each round
   * starts with both ranks together, so the reader races the writer. */
  const size_t words = 3 * PAGE / 8;
  volatile uint64_t *g = pw_alloc_sc(AllocWords(words) * 8, PW_PLACE_CYCLIC);
  CHECK(g, "pw_alloc_sc");
  int waited = 0;
  if (InPair()) {
    volatile uint64_t *data = PairRegion(g, words);
    volatile uint64_t *flag = data + PAGE / 8;
    volatile uint64_t *arrive = flag + PAGE / 8;
    const int side = rank % 2;
    for (int r = 1; r <= rounds; r++) {
      PairSync(arrive, side, (uint64_t)r);
      if (side == 0) {
        Store(data, 1000 + (uint64_t)r);
        Store(flag, (uint64_t)r);
      } else {
        if (Load(flag) < (uint64_t)r) waited++;
        while (Load(flag) < (uint64_t)r) {
        }
        uint64_t d = Load(data);
        CHECK(d == 1000 + (uint64_t)r, "mp round %d: saw the flag but data %llu, want %llu (forbidden)",
              r, (unsigned long long)d, (unsigned long long)(1000 + r));
      }
    }
  }
  if (InPair() && rank % 2 == 1) {
    printf("dsm_litmus: mp pair %d: %d rounds, the reader found no flag yet %d times\n",
           rank / 2, rounds, waited);
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(pw_free((void *)g) == PW_OK, "pw_free");
}

static void StoreBuffering(void) {
  /* x, y on pages of their own; arrive[2] and the results on a third. */
  const size_t words = 3 * PAGE / 8;
  volatile uint64_t *g = pw_alloc_sc(AllocWords(words) * 8, PW_PLACE_CYCLIC);
  CHECK(g, "pw_alloc_sc");
  int r1_old = 0, r2_old = 0;
  if (InPair()) {
    volatile uint64_t *x = PairRegion(g, words);
    volatile uint64_t *y = x + PAGE / 8;
    volatile uint64_t *arrive = y + PAGE / 8;
    volatile uint64_t *seen = arrive + 2; /* seen[side]: what it read */
    const int side = rank % 2;
    for (int r = 1; r <= rounds; r++) {
      /* Round r writes r; reading less than r is "0" for this round. */
      PairSync(arrive, side, (uint64_t)(3 * r));
      uint64_t got;
      if (side == 0) {
        Store(x, (uint64_t)r);
        got = Load(y);
      } else {
        Store(y, (uint64_t)r);
        got = Load(x);
      }
      Store(&seen[side], got);
      PairSync(arrive, side, (uint64_t)(3 * r + 1));
      const uint64_t r1 = Load(&seen[0]), r2 = Load(&seen[1]);
      CHECK(!(r1 < (uint64_t)r && r2 < (uint64_t)r),
            "sb round %d: both ranks read the other's old value (r1=%llu r2=%llu; forbidden)",
            r, (unsigned long long)r1, (unsigned long long)r2);
      r1_old += r1 < (uint64_t)r;
      r2_old += r2 < (uint64_t)r;
      PairSync(arrive, side, (uint64_t)(3 * r + 2));
    }
  }
  if (InPair() && rank % 2 == 0) {
    /* Allowed outcomes seen: the test raced (not one side always first). */
    printf("dsm_litmus: sb pair %d: %d rounds, only r1 old %d times, only r2 old %d times, both old 0\n",
           rank / 2, rounds, r1_old, r2_old);
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(pw_free((void *)g) == PW_OK, "pw_free");
}

static void Dekker(void) {
  /* flag[2] and turn on one page, the counter and "inside" on another,
   * arrive[2] on a third. Each round starts with both ranks together; the
   * one that leaves the meeting first stays in its critical section a
   * little, so the other finds its flag up and must wait its turn. */
  const size_t words = 3 * PAGE / 8;
  volatile uint64_t *g = pw_alloc_sc(AllocWords(words) * 8, PW_PLACE_CYCLIC);
  CHECK(g, "pw_alloc_sc");
  int contended = 0;
  if (InPair()) {
    volatile uint64_t *flag = PairRegion(g, words);
    volatile uint64_t *turn = flag + 2;
    volatile uint64_t *counter = flag + PAGE / 8;
    volatile uint64_t *inside = counter + 1;
    volatile uint64_t *arrive = counter + PAGE / 8;
    const int me = rank % 2, other = 1 - me;
    for (int r = 1; r <= rounds; r++) {
      PairSync(arrive, me, (uint64_t)r);
      Store(&flag[me], 1);
      if (Load(&flag[other])) contended++;
      while (Load(&flag[other])) {
        if (Load(turn) != (uint64_t)me) {
          Store(&flag[me], 0);
          while (Load(turn) != (uint64_t)me) {
          }
          Store(&flag[me], 1);
        }
      }
      /* Critical section: plain accesses. */
      CHECK(*inside == 0, "dekker round %d: rank %d is inside too (forbidden)", r,
            rank / 2 * 2 + other);
      *inside = 1;
      *counter = *counter + 1;
      struct timespec hold = {0, 300 * 1000};
      nanosleep(&hold, NULL);
      *inside = 0;
      Store(turn, (uint64_t)other);
      Store(&flag[me], 0);
    }
    /* Both done: the counter is exact. */
    PairSync(arrive, me, (uint64_t)rounds + 1);
    CHECK(Load(counter) == 2 * (uint64_t)rounds, "dekker: counter %llu, want %llu",
          (unsigned long long)Load(counter), 2 * (unsigned long long)rounds);
    printf("dsm_litmus: dekker rank %d: %d rounds, found the other's flag up %d times\n", rank,
           rounds, contended);
  }
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(pw_free((void *)g) == PW_OK, "pw_free");
}

enum { kCounterThreads = 4 };
static volatile uint64_t *counter_word;
static void *CounterWorker(void *arg) {
  (void)arg;
  for (int i = 0; i < rounds; i++) {
    __atomic_fetch_add(counter_word, 1, __ATOMIC_SEQ_CST);
    sched_yield(); /* let the ownership move between increments */
  }
  return NULL;
}

static void Counter(void) {
  volatile uint64_t *g = pw_alloc_sc(PAGE, PW_PLACE_BLOCK);
  CHECK(g, "pw_alloc_sc");
  counter_word = g; /* and g[8 + r]: rank r is done, on the same page */
  CHECK(pw_barrier() == PW_OK, "barrier");
  pthread_t th[kCounterThreads];
  for (int t = 0; t < kCounterThreads; t++) pthread_create(&th[t], NULL, CounterWorker, NULL);
  for (int t = 0; t < kCounterThreads; t++) pthread_join(th[t], NULL);
  Store(&g[8 + rank], 1);
  /* No barrier needed to see the others' words: spin until all are in. */
  for (int r = 0; r < nranks; r++) {
    while (Load(&g[8 + r]) == 0) {
    }
  }
  const uint64_t want = (uint64_t)nranks * kCounterThreads * (uint64_t)rounds;
  CHECK(Load(g) == want, "counter %llu, want %llu", (unsigned long long)Load(g),
        (unsigned long long)want);
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(pw_free((void *)g) == PW_OK, "pw_free");
}

static void Errors(void) {
  CHECK(pw_alloc_sc(PAGE, PW_PLACE_FIRST_TOUCH) == NULL, "first-touch SC memory was accepted");
  CHECK(strstr(pw_last_error(), "PW_PLACE_BLOCK") != NULL, "no fix named: %s", pw_last_error());
  uint64_t *g = pw_alloc_sc(PAGE, PW_PLACE_BLOCK);
  CHECK(g, "pw_alloc_sc");
  uint64_t old;
  CHECK(pw_atomic_fetch_add(g, 1, &old) == PW_ERR_INVALID_ARGUMENT,
        "pw_atomic_fetch_add on SC memory was accepted");
  CHECK(strstr(pw_last_error(), "__atomic") != NULL, "no fix named: %s", pw_last_error());
  CHECK(pw_barrier() == PW_OK, "barrier");
  CHECK(pw_free(g) == PW_OK, "pw_free");
}

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_litmus: pw_init: %s\n", pw_last_error());
    return 1;
  }
  rank = pw_rank();
  nranks = pw_nranks();
  if (getenv("LITMUS_ROUNDS")) rounds = atoi(getenv("LITMUS_ROUNDS"));
  if (rounds < 1) rounds = 1;
  const char *test = argc > 1 ? argv[1] : "";
  if (!strcmp(test, "mp")) MessagePassing();
  else if (!strcmp(test, "sb")) StoreBuffering();
  else if (!strcmp(test, "dekker")) Dekker();
  else if (!strcmp(test, "counter")) Counter();
  else if (!strcmp(test, "errors")) Errors();
  else {
    fprintf(stderr, "usage: dsm_litmus mp|sb|dekker|counter|errors\n");
    return 2;
  }
  pw_stats_t s;
  pw_get_stats(&s);
  printf("dsm_litmus: %s rank %d ok (%d rounds, %llu faults, %llu remote fetches)\n", test, rank,
         rounds, (unsigned long long)s.faults, (unsigned long long)s.remote_fetches);
  fflush(stdout);
  return pw_finalize() == PW_OK ? 0 : 1;
}
