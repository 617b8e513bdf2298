// service_thread.cc - see service_thread.h.
#include "runtime/base/service_thread.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "runtime/base/log.h"

namespace pagewire {
namespace {

// The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1); glibc 2.36 has no
// wrapper for sched_setattr.
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
};

constexpr uint64_t kDefaultSliceUs = 100;

uint64_t SliceUs() {
  const char* v = std::getenv("PAGEWIRE_SERVICE_SLICE_US");
  uint64_t us;
  if (v == nullptr || !absl::SimpleAtoi(v, &us)) return kDefaultSliceUs;
  return us;
}

}  // namespace

bool BecomeServiceThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
  const uint64_t us = SliceUs();
  if (us == 0) return false;
  SchedAttr attr{};
  attr.size = sizeof(attr);
  attr.sched_policy = SCHED_OTHER;
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, 0);  // per thread on Linux
  attr.sched_nice = errno == 0 ? nice : 0;
  attr.sched_runtime = us * 1000;
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
    // Before Linux 6.12 a fair thread cannot choose its slice (EINVAL).
    Debug("%s: no %d us scheduler slice: %s; running with the default",
          name, us, strerror(errno));
    return false;
  }
  return true;
}

}  // namespace pagewire
