// fault_latency.cc - what the fault service costs over the bare minimum.
//
// In one process and one run, alternating round by round:
//   service: read faults on a RAM dataspace attached to a region map, resolved
//            by the FaultService (batch read, coalescing table, region-map
//            translation, manager request, completion queue, UFFDIO_COPY);
//   floor:   a bare userfaultfd loop doing the minimum: poll, read a batch of
//            events, UFFDIO_COPY each from a source buffer.
// Prints per-fault latency p50/p99 for one faulting thread, and faults per
// second with 1, 4 and 16 faulting threads, with ratios service/floor.
//
//   bazel run //bench:fault_latency -- [--pages N] [--rounds R]
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/fault/fault_service.h"
#include "runtime/memory/ram_dataspace.h"
#include "runtime/memory/region_map.h"

namespace pagewire {
namespace {

constexpr uintptr_t kServiceBase = uintptr_t{0x3800} << 32;
constexpr uintptr_t kFloorBase = uintptr_t{0x3c00} << 32;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& why) {
  fprintf(stderr, "fault_latency: %s\n", why.c_str());
  exit(1);
}

// The floor: the least a userfaultfd handler can do per fault.
class BareLoop {
 public:
  BareLoop(uint64_t bytes) : bytes_(bytes) {
    uffd_ = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd_ < 0) Die(std::string("userfaultfd: ") + strerror(errno));
    uffdio_api api{UFFD_API, 0, 0};
    if (ioctl(uffd_, UFFDIO_API, &api) != 0) Die("UFFDIO_API");
    void* p = mmap(reinterpret_cast<void*>(kFloorBase), bytes,
                   PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                       MAP_FIXED_NOREPLACE,
                   -1, 0);
    if (p == MAP_FAILED) Die("mmap floor range");
    uffdio_register reg{};
    reg.range = {kFloorBase, bytes};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) Die("UFFDIO_REGISTER");
    // Distinct source pages, like a dataspace's storage, already resident.
    source_ = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    memset(source_, 0x5a, bytes);
    stop_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { Run(); });
  }
  ~BareLoop() {
    uint64_t one = 1;
    if (write(stop_, &one, 8) != 8) Die("stop");
    thread_.join();
    munmap(reinterpret_cast<void*>(kFloorBase), bytes_);
    munmap(source_, bytes_);
    close(uffd_);
    close(stop_);
  }
  char* base() const { return reinterpret_cast<char*>(kFloorBase); }
  void Reset() { madvise(base(), bytes_, MADV_DONTNEED); }

 private:
  void Run() {
    pthread_setname_np(pthread_self(), "bare-uffd");
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_, POLLIN, 0}};
    uffd_msg msgs[64];
    for (;;) {
      if (poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      ssize_t n;
      while ((n = read(uffd_, msgs, sizeof(msgs))) > 0) {
        for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
          uint64_t page = msgs[i].arg.pagefault.address & ~(kPageSize - 1);
          uffdio_copy copy{};
          copy.dst = page;
          copy.src = reinterpret_cast<uintptr_t>(source_ + (page - kFloorBase));
          copy.len = kPageSize;
          ioctl(uffd_, UFFDIO_COPY, &copy);  // EEXIST: already woken
        }
      }
    }
  }
  const uint64_t bytes_;
  int uffd_ = -1, stop_ = -1;
  char* source_ = nullptr;
  std::thread thread_;
};

// The fault service over a RAM dataspace.
class ServicePath {
 public:
  ServicePath(uint64_t bytes) : bytes_(bytes), root_(bytes, "bench root") {
    FaultServiceConfig config;
    config.base = kServiceBase;
    config.size = bytes;
    auto s = FaultService::Start(config, root_);
    if (!s.ok()) Die(s.status().ToString());
    service_ = *std::move(s);
    root_.AddListener(service_.get());
    auto ram = RamDataspace::Create(bytes);
    if (!ram.ok()) Die(ram.status().ToString());
    ram_ = *ram;
    memset(ram_->data(), 0x5a, bytes);
    Attach();
  }
  ~ServicePath() {
    service_->Stop();
    root_.RemoveListener(service_.get());
    (void)root_.Detach(0);
  }
  char* base() const { return reinterpret_cast<char*>(kServiceBase); }
  // Detach and attach again: the service drops every installed page.
  void Reset() {
    if (!root_.Detach(0).ok()) Die("detach");
    Attach();
  }
  FaultStats stats() const { return service_->stats(); }

 private:
  void Attach() {
    if (!root_.Attach(ram_, {.at = 0}).ok()) Die("attach");
  }
  const uint64_t bytes_;
  RegionMap root_;
  std::unique_ptr<FaultService> service_;
  std::shared_ptr<RamDataspace> ram_;
};

// One thread reads one byte of each page, timing every fault.
void TimeFaults(char* base, uint64_t pages, std::vector<uint64_t>& out) {
  for (uint64_t i = 0; i < pages; ++i) {
    volatile char* p = base + i * kPageSize;
    uint64_t t0 = NowNs();
    (void)*p;
    out.push_back(NowNs() - t0);
  }
}

// `threads` threads read disjoint pages; returns faults per second.
double Throughput(char* base, uint64_t pages, int threads) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      ++ready;
      while (!go.load()) {
      }
      for (uint64_t i = t; i < pages; i += threads) {
        (void)*reinterpret_cast<volatile char*>(base + i * kPageSize);
      }
    });
  }
  while (ready.load() < threads) {
  }
  uint64_t t0 = NowNs();
  go = true;
  for (auto& t : ts) t.join();
  return pages * 1e9 / static_cast<double>(NowNs() - t0);
}

uint64_t Quantile(std::vector<uint64_t>& v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1))];
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace pagewire

int main(int argc, char** argv) {
  using namespace pagewire;
  uint64_t pages = 20000;
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pages" && i + 1 < argc) {
      pages = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = atoi(argv[++i]);
    } else {
      fprintf(stderr,
              "fault_latency: unknown argument '%s'\n"
              "usage: fault_latency [--pages N (default 20000)] [--rounds R "
              "(default 5)]\n",
              a.c_str());
      return 2;
    }
  }
  if (pages < 100 || rounds < 1) {
    fprintf(stderr, "fault_latency: need --pages >= 100 and --rounds >= 1\n");
    return 2;
  }
  const uint64_t bytes = pages * kPageSize;
  ServicePath service(bytes);
  BareLoop floor(bytes);

  std::vector<uint64_t> lat_service, lat_floor;
  lat_service.reserve(pages * rounds);
  lat_floor.reserve(pages * rounds);
  // Alternate, so drift of the machine hits both alike.
  for (int r = 0; r < rounds; ++r) {
    service.Reset();
    TimeFaults(service.base(), pages, lat_service);
    floor.Reset();
    TimeFaults(floor.base(), pages, lat_floor);
  }
  uint64_t s50 = Quantile(lat_service, 0.5), s99 = Quantile(lat_service, 0.99);
  uint64_t f50 = Quantile(lat_floor, 0.5), f99 = Quantile(lat_floor, 0.99);
  printf("fault_latency: %llu pages x %d rounds, one faulting thread, %u cpus\n",
         static_cast<unsigned long long>(pages), rounds,
         std::thread::hardware_concurrency());
  printf("%-28s %10s %10s\n", "read fault latency (us)", "p50", "p99");
  printf("%-28s %10.2f %10.2f\n", "fault service (RAM ds)", s50 / 1e3, s99 / 1e3);
  printf("%-28s %10.2f %10.2f\n", "floor (bare uffd loop)", f50 / 1e3, f99 / 1e3);
  printf("%-28s %10.3f %10.3f   (target p50 <= 1.15)\n", "ratio service/floor",
         static_cast<double>(s50) / f50, static_cast<double>(s99) / f99);

  printf("%-28s %12s %12s %8s\n", "faults/s", "service", "floor", "ratio");
  for (int threads : {1, 4, 16}) {
    std::vector<double> rs, rf, ratio;
    for (int r = 0; r < rounds; ++r) {
      service.Reset();
      double s = Throughput(service.base(), pages, threads);
      floor.Reset();
      double f = Throughput(floor.base(), pages, threads);
      rs.push_back(s);
      rf.push_back(f);
      ratio.push_back(s / f);
    }
    printf("%-28s %12.0f %12.0f %8.3f   (target >= 0.9)\n",
           (std::to_string(threads) + " thread(s), median").c_str(), Median(rs),
           Median(rf), Median(ratio));
  }
  FaultStats st = service.stats();
  printf("service stats: %llu faults, %llu requests, %llu coalesced, %llu "
         "failed\n",
         static_cast<unsigned long long>(st.faults),
         static_cast<unsigned long long>(st.requests),
         static_cast<unsigned long long>(st.coalesced),
         static_cast<unsigned long long>(st.failed));
  return 0;
}
