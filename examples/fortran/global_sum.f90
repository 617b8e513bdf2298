! global_sum.f90 - Fortran over Pagewire: one global array of doubles, block
! placement; each rank fills its own block, then every rank sums the whole
! array (reading the other ranks' blocks through remote page faults) and
! checks the sum against the formula.
!
!   pagewire-run -n 4 global_sum
program global_sum
  use, intrinsic :: iso_c_binding
  use pagewire
  implicit none
  integer(c_int) :: rc, rank, nranks
  integer(c_size_t), parameter :: n = 1048576_c_size_t  ! 8 MiB of doubles
  real(c_double), pointer :: a(:)
  type(c_ptr) :: p
  integer(c_size_t) :: i, lo, hi, per_rank
  real(c_double) :: total, expected

  rc = pw_init(c_null_ptr, c_null_ptr)
  if (rc /= PW_OK) then
    print '(a, a)', 'global_sum: pw_init failed: ', pw_last_error()
    stop 1
  end if
  rank = pw_rank()
  nranks = pw_nranks()

  p = pw_alloc(n * 8_c_size_t, PW_PLACE_BLOCK)
  if (.not. c_associated(p)) then
    print '(a, a)', 'global_sum: pw_alloc failed: ', pw_last_error()
    stop 1
  end if
  call c_f_pointer(p, a, [n])

  ! Block placement: rank r homes the r-th contiguous share of the pages.
  per_rank = n / int(nranks, c_size_t)
  lo = int(rank, c_size_t) * per_rank + 1
  hi = lo + per_rank - 1
  do i = lo, hi
    a(i) = real(i, c_double)
  end do
  rc = pw_barrier()

  total = 0
  do i = 1, n
    total = total + a(i)
  end do
  expected = real(n, c_double) * real(n + 1, c_double) / 2
  if (total /= expected) then
    print '(a, i0, a, es22.15, a, es22.15)', 'global_sum: rank ', rank, &
        ' WRONG sum ', total, ' expected ', expected
    stop 3
  end if
  print '(a, i0, a, i0, a, es22.15, a)', 'global_sum: rank ', rank, ' of ', &
      nranks, ': sum ', total, ' matches n(n+1)/2'
  rc = pw_barrier()
  rc = pw_free(p)
  rc = pw_finalize()
end program global_sum
