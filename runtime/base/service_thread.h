// service_thread.h - what every thread of the runtime that serves faults or
// the network does first: its name, and a short scheduler slice.
//
// A service thread sleeps most of the time and, woken by a fault, a packet
// or a completion, has a few microseconds of work that other threads and
// other ranks wait for. On a machine with more runnable threads than CPUs
// (several ranks per node, or compute threads on every core), Linux's EEVDF
// scheduler lets the running thread finish its slice (0.75-3 ms) before a
// woken one with the same slice runs; a thread that asks for a short slice
// (sched_setattr's sched_runtime, Linux 6.12 and later) gets an earlier
// deadline and runs at once. No privilege is needed. Older kernels refuse
// the request; the thread then runs with the default slice.
#ifndef PAGEWIRE_RUNTIME_BASE_SERVICE_THREAD_H_
#define PAGEWIRE_RUNTIME_BASE_SERVICE_THREAD_H_

#include <cstdint>

namespace pagewire {

// Names the calling thread (at most 15 characters) and asks for the
// service slice (PAGEWIRE_SERVICE_SLICE_US, default 100 us; 0 leaves the
// default). Returns whether the kernel granted the slice.
bool BecomeServiceThread(const char* name);

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_SERVICE_THREAD_H_
