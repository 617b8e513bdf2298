/*
 * hello_pagewire.c - the smallest user program, built by install_test.sh
 * against an installed Pagewire with plain cc and pkg-config. It starts the
 * runtime, allocates global memory, touches every page from the CPU and from
 * the kernel (write(2) out of it), checks the bytes, and checks that bad
 * input gets an error naming the problem. Prints "hello_pagewire: ok" and
 * exits 0 on success; exits non-zero otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <pagewire/pagewire.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAIL(...)                                  \
  do {                                             \
    fprintf(stderr, "hello_pagewire: " __VA_ARGS__); \
    fprintf(stderr, "\n");                         \
    return 1;                                      \
  } while (0)

int main(int argc, char **argv) {
  pw_status_t s = pw_init(&argc, &argv);
  if (s != PW_OK) FAIL("pw_init: %s: %s", pw_status_str(s), pw_last_error());

  const size_t pages = 1024, page = 4096, bytes = pages * page;
  unsigned char *g = pw_alloc(bytes, PW_PLACE_BLOCK);
  if (g == NULL) FAIL("pw_alloc: %s", pw_last_error());
  if ((char *)g < (char *)pw_global_base() ||
      (char *)g + bytes > (char *)pw_global_base() + pw_global_size())
    FAIL("pw_alloc returned %p outside the global range", (void *)g);

  for (size_t i = 0; i < pages; i++) {
    if (g[i * page] != 0) FAIL("fresh global memory is not zero at page %zu", i);
    g[i * page + (i % page)] = (unsigned char)(i * 31 + 7);
  }
  for (size_t i = 0; i < pages; i++) {
    if (g[i * page + (i % page)] != (unsigned char)(i * 31 + 7))
      FAIL("page %zu lost its byte", i);
  }

  /* The kernel reads global memory too: write(2) a fresh allocation out. */
  unsigned char *h = pw_alloc(4 * page, PW_PLACE_BLOCK);
  if (h == NULL) FAIL("second pw_alloc: %s", pw_last_error());
  int fds[2];
  if (pipe(fds) != 0) FAIL("pipe");
  if (write(fds[1], h, page) != (ssize_t)page) FAIL("write(2) from global memory failed");
  unsigned char buf[4096];
  if (read(fds[0], buf, page) != (ssize_t)page) FAIL("read back failed");
  for (size_t i = 0; i < page; i++)
    if (buf[i] != 0) FAIL("write(2) of fresh global memory gave non-zero byte %zu", i);

  /* Bad input: a clear error, no crash. */
  if (pw_alloc(0, PW_PLACE_BLOCK) != NULL) FAIL("pw_alloc(0) succeeded");
  if (strstr(pw_last_error(), "0 bytes") == NULL)
    FAIL("pw_alloc(0) error does not name the problem: %s", pw_last_error());
  if (pw_free(g + 1) != PW_ERR_NOT_FOUND) FAIL("pw_free of an interior pointer succeeded");
  if (pw_free(g) != PW_OK || pw_free(h) != PW_OK) FAIL("pw_free: %s", pw_last_error());
  if (pw_free(g) == PW_OK) FAIL("double pw_free succeeded");

  if (pw_finalize() != PW_OK) FAIL("pw_finalize: %s", pw_last_error());
  if (pw_finalize() != PW_ERR_NOT_INITIALIZED) FAIL("second pw_finalize succeeded");
  printf("hello_pagewire: rank %d of %d touched %zu pages\n", 0, 1, pages);
  printf("hello_pagewire: ok\n");
  return 0;
}
