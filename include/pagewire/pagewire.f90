! pagewire.f90 - Fortran bindings of the Pagewire C API (ISO_C_BINDING).
!
! Compile this module with your program:
!   gfortran -c $(pkg-config --variable=includedir pagewire)/pagewire/pagewire.f90
!   gfortran prog.f90 pagewire.o $(pkg-config --libs pagewire)
! Global memory comes back as type(c_ptr); c_f_pointer turns it into a
! Fortran array that is the same memory on every rank.
module pagewire
  use, intrinsic :: iso_c_binding
  implicit none

  integer(c_int), parameter :: PW_OK = 0
  integer(c_int), parameter :: PW_PLACE_BLOCK = 0
  integer(c_int), parameter :: PW_PLACE_CYCLIC = 1
  integer(c_int), parameter :: PW_PLACE_FIRST_TOUCH = 2

  interface
    ! argc/argv may be c_null_ptr.
    integer(c_int) function pw_init(argc, argv) bind(c, name="pw_init")
      import :: c_int, c_ptr
      type(c_ptr), value :: argc, argv
    end function
    integer(c_int) function pw_finalize() bind(c, name="pw_finalize")
      import :: c_int
    end function
    integer(c_int) function pw_rank() bind(c, name="pw_rank")
      import :: c_int
    end function
    integer(c_int) function pw_nranks() bind(c, name="pw_nranks")
      import :: c_int
    end function
    type(c_ptr) function pw_alloc(bytes, placement) bind(c, name="pw_alloc")
      import :: c_ptr, c_size_t, c_int
      integer(c_size_t), value :: bytes
      integer(c_int), value :: placement
    end function
    type(c_ptr) function pw_alloc_on(bytes, home_rank) bind(c, name="pw_alloc_on")
      import :: c_ptr, c_size_t, c_int
      integer(c_size_t), value :: bytes
      integer(c_int), value :: home_rank
    end function
    ! Sequentially consistent memory (see pagewire.h).
    type(c_ptr) function pw_alloc_sc(bytes, placement) bind(c, name="pw_alloc_sc")
      import :: c_ptr, c_size_t, c_int
      integer(c_size_t), value :: bytes
      integer(c_int), value :: placement
    end function
    integer(c_int) function pw_free(ptr) bind(c, name="pw_free")
      import :: c_int, c_ptr
      type(c_ptr), value :: ptr
    end function
    integer(c_int) function pw_barrier() bind(c, name="pw_barrier")
      import :: c_int
    end function
    type(c_ptr) function pw_last_error_c() bind(c, name="pw_last_error")
      import :: c_ptr
    end function
  end interface

contains

  ! The detail of the last failure, as a Fortran string.
  function pw_last_error() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: p
    integer :: n
    interface
      integer(c_size_t) function strlen(s) bind(c, name="strlen")
        import :: c_size_t, c_ptr
        type(c_ptr), value :: s
      end function
    end interface
    p = pw_last_error_c()
    n = int(strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate(character(len=n) :: message)
    message = transfer(chars(1:n), message)
  end function

end module pagewire
