/*
 * stencil_mpi.c - examples/heat.c written by hand with MPI, the baseline of
 * the stencil scaling benchmark (bench/stencil_scaling.sh):
 *
 *   mpirun -np N stencil_mpi [N_GRID (512)] [iterations (100)]
 *
 * The same 2D Jacobi update, grid, boundary (top edge 1.0, others 0.0) and
 * iteration count as heat.c, with the same row-block decomposition: rank r
 * owns rows [r*N/P, (r+1)*N/P) of both grids, plus one halo row above and
 * below, exchanged with MPI_Sendrecv before every iteration. The timed loop
 * is bracketed by MPI_Barrier as heat.c's is by pw_barrier. At the end rank
 * 0 gathers the grid and checks it bit for bit against a sequential
 * computation, as heat.c does, and prints the same kind of line:
 *   stencil_mpi: NxN grid, I iterations on P ranks: X ms/iteration, heat sum S, ...
 */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fixed boundary: the top edge is hot, the others cold (as in heat.c). */
static void Boundary(double *g, long n) {
  for (long j = 0; j < n; j++) g[j] = 1.0;
}

/* heat.c's Step, verbatim: rows [row0, row1) of the global grid, where u
 * and v point at global row 0 (for the local arrays, a shifted base). */
static void Step(const double *u, double *v, long n, long row0, long row1) {
  for (long i = row0 < 1 ? 1 : row0; i < row1 && i < n - 1; i++) {
    for (long j = 1; j < n - 1; j++) {
      v[i * n + j] = 0.25 * (u[(i - 1) * n + j] + u[(i + 1) * n + j] +
                             u[i * n + j - 1] + u[i * n + j + 1]);
    }
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, nranks;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  const long n = argc > 1 ? atol(argv[1]) : 512;
  const int iters = argc > 2 ? atoi(argv[2]) : 100;
  if (n < 8 || iters < 1 || n % nranks != 0) {
    if (rank == 0)
      fprintf(stderr, "stencil_mpi: N=%ld must split into %d row blocks, "
                      "iterations >= 1\n", n, nranks);
    MPI_Finalize();
    return 2;
  }
  const long rows = n / nranks;
  const long row0 = rank * rows, row1 = row0 + rows;
  /* Local storage: rows row0-1 .. row1 (halo rows at both ends). */
  double *ubuf = calloc((size_t)(rows + 2) * n, sizeof(double));
  double *vbuf = calloc((size_t)(rows + 2) * n, sizeof(double));
  if (!ubuf || !vbuf) {
    fprintf(stderr, "stencil_mpi: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  /* Base pointers such that u[i * n + j] is global cell (i, j). */
  double *u = ubuf - (row0 - 1) * n, *v = vbuf - (row0 - 1) * n;
  if (rank == 0) {
    Boundary(&u[0], n);
    Boundary(&v[0], n);
  }
  const int up = rank > 0 ? rank - 1 : MPI_PROC_NULL;
  const int down = rank < nranks - 1 ? rank + 1 : MPI_PROC_NULL;
  MPI_Barrier(MPI_COMM_WORLD);

  const double t0 = MPI_Wtime();
  for (int it = 0; it < iters; it++) {
    /* My first row up, the row below my band in from below; my last row
     * down, the row above my band in from above. */
    MPI_Sendrecv(&u[row0 * n], (int)n, MPI_DOUBLE, up, 0,
                 &u[row1 * n], (int)n, MPI_DOUBLE, down, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    MPI_Sendrecv(&u[(row1 - 1) * n], (int)n, MPI_DOUBLE, down, 1,
                 &u[(row0 - 1) * n], (int)n, MPI_DOUBLE, up, 1, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    Step(u, v, n, row0, row1);
    double *t = u;
    u = v;
    v = t;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const double elapsed = MPI_Wtime() - t0;

  /* Gather the bands (the live grid is u) on rank 0. */
  double *all = rank == 0 ? malloc((size_t)n * n * sizeof(double)) : NULL;
  MPI_Gather(&u[row0 * n], (int)(rows * n), MPI_DOUBLE, all, (int)(rows * n),
             MPI_DOUBLE, 0, MPI_COMM_WORLD);
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
      if (all[k] != a[k]) bad++;
      sum += all[k];
    }
    ok = bad == 0;
    printf("stencil_mpi: %ldx%ld grid, %d iterations on %d ranks: %.3f "
           "ms/iteration, heat sum %.6f, %s (%ld cells differ from the "
           "sequential run)\n",
           n, n, iters, nranks, elapsed * 1e3 / iters, sum,
           ok ? "matches the sequential computation" : "WRONG", bad);
    fflush(stdout);
    free(a);
    free(b);
    free(all);
  }
  free(ubuf);
  free(vbuf);
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return ok ? 0 : 3;
}
