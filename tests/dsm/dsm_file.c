/*
 * dsm_file.c - a file homed on one rank, read on demand by its file manager
 * (a slow, nested backing) and faulted by every rank.
 *   pagewire-run -n 3 dsm_file PATH HOME
 * Every rank reads the whole mapping and compares it with the file read
 * directly. Prints "dsm_file: rank R ok ..." or exits non-zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "dsm_file: pw_init: %s\n", pw_last_error());
    return 1;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: dsm_file PATH HOME_RANK\n");
    return 2;
  }
  const char *path = argv[1];
  int home = atoi(argv[2]);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror("dsm_file: fopen");
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *want = malloc(size);
  if (want == NULL || fread(want, 1, size, f) != (size_t)size) {
    fprintf(stderr, "dsm_file: cannot read %s\n", path);
    return 1;
  }
  fclose(f);

  const char *g = pw_attach_file(path, home);
  if (g == NULL) {
    fprintf(stderr, "dsm_file: pw_attach_file: %s\n", pw_last_error());
    return 1;
  }
  /* Each rank starts at a different place, so pages are first touched by
   * different ranks. */
  int rank = pw_rank(), nranks = pw_nranks();
  long pages = (size + 4095) / 4096;
  for (long i = 0; i < pages; i++) {
    long p = (i + rank * pages / nranks) % pages;
    long len = size - p * 4096 < 4096 ? size - p * 4096 : 4096;
    if (memcmp(g + p * 4096, want + p * 4096, len) != 0) {
      fprintf(stderr, "dsm_file: rank %d: page %ld differs from the file\n", rank, p);
      return 1;
    }
    for (long k = len; k < 4096; k++) {
      if (g[p * 4096 + k] != 0) {
        fprintf(stderr, "dsm_file: rank %d: bytes past the end of the file are not zero\n", rank);
        return 1;
      }
    }
  }
  pw_stats_t s;
  pw_get_stats(&s);
  printf("dsm_file: rank %d ok: %ld bytes; %llu faults, %llu remote fetches, %llu served\n",
         rank, size, (unsigned long long)s.faults,
         (unsigned long long)s.remote_fetches, (unsigned long long)s.served);
  if (rank != home && s.remote_fetches < (unsigned long long)pages) {
    fprintf(stderr, "dsm_file: rank %d fetched %llu pages, fewer than the %ld mapped\n",
            rank, (unsigned long long)s.remote_fetches, pages);
    return 1;
  }
  /* Once every rank has read everything: the home has served them. */
  pw_barrier();
  pw_get_stats(&s);
  if (rank == home && s.served == 0 && nranks > 1) {
    fprintf(stderr, "dsm_file: the home served no fetch\n");
    return 1;
  }
  free(want);
  if (pw_free((void *)g) != PW_OK) return 1;
  return pw_finalize() == PW_OK ? 0 : 1;
}
