// bare_verbs_fault - the least a program can do to resolve a userfaultfd
// fault with one RDMA READ: a second floor for issue 5's remote fault,
// measured next to ib_read_lat and the bare uffd resolve.
//
// One process, no runtime. A handler thread ("bare-verbs") sleeps in poll on
// the userfaultfd, reads a batch of fault events, posts one signalled READ
// per event (4 KiB from a registered source buffer into a registered landing
// page), busy-polls the CQ as ib_read_lat does, and installs each page with
// UFFDIO_COPY. The READ goes out on one RC queue pair connected to a second
// QP on the same device (rxe0 in the soft-RoCE VM: the same loopback path
// as `ib_read_lat -d rxe0` and as Pagewire's two ranks on rxe0).
//
// The main thread touches every page of the registered range once per round
// and times each touch; the first byte of each page is checked against the
// source's pattern. It prints
//   bare_verbs_fault: p50_us=... p99_us=... faults=... device=... gid_index=...
//
// Usage: bare_verbs_fault [--device NAME] [--gid-index N] [--pages N]
//                         [--rounds R] [--spin]
// --device defaults to $PAGEWIRE_VERBS_DEVICE, else the first device;
// --gid-index to 1 (RoCEv2, IPv4-mapped, on rxe). --spin: the handler polls
// the userfaultfd without sleeping (poll with timeout 0), the counterpart
// of PAGEWIRE_IDLE_POLLS (bench/RESULTS.md; not part of the CI step).
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "runtime/transport/verbs/verbs_resources.h"

namespace {

using namespace pagewire::verbs_internal;  // NOLINT: the RAII owners

constexpr uint64_t kPage = 4096;
constexpr int kBatch = 64;  // events per read, landing pages

[[noreturn]] void Die(const std::string& why) {
  fprintf(stderr, "bare_verbs_fault: %s\n", why.c_str());
  exit(1);
}

void Check(const absl::Status& s) {
  if (!s.ok()) Die(s.ToString());
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

char Pattern(uint64_t page) { return static_cast<char>(0x41 + page % 53); }

struct Options {
  std::string device;
  int gid_index = 1;
  uint64_t pages = 512;
  int rounds = 3;
  bool spin = false;  // handler polls (timeout 0) instead of sleeping
};

Options Parse(int argc, char** argv) {
  Options o;
  if (const char* d = getenv("PAGEWIRE_VERBS_DEVICE")) o.device = d;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) {
      o.device = argv[++i];
    } else if (a == "--gid-index" && i + 1 < argc) {
      o.gid_index = atoi(argv[++i]);
    } else if (a == "--pages" && i + 1 < argc) {
      o.pages = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--rounds" && i + 1 < argc) {
      o.rounds = atoi(argv[++i]);
    } else if (a == "--spin") {
      o.spin = true;
    } else {
      fprintf(stderr,
              "bare_verbs_fault: unknown argument '%s'\n"
              "usage: bare_verbs_fault [--device NAME] [--gid-index N] "
              "[--pages N (>= 100)] [--rounds R (>= 1)] [--spin]\n",
              a.c_str());
      exit(2);
    }
  }
  if (o.pages < 100 || o.rounds < 1 || o.gid_index < 0 || o.gid_index > 255) {
    fprintf(stderr,
            "bare_verbs_fault: need --pages >= 100, --rounds >= 1 and "
            "0 <= --gid-index <= 255\n");
    exit(2);
  }
  return o;
}

// Device, PD, CQ, the two MRs and two connected RC QPs: rc_pingpong's
// order; members are destroyed in reverse.
struct Verbs {
  Context context;
  ProtectionDomain pd;
  std::vector<char> source_mem, landing_mem;
  MemoryRegistration source, landing;
  CompletionQueue cq;
  QueuePair client, server;
  std::string device_name;
};

void Setup(const Options& o, Verbs& v) {
  int n = 0;
  errno = 0;
  DeviceList list(ibv_get_device_list(&n));
  if (!list || n == 0) {
    Die(std::string("no RDMA device (ibv_get_device_list: ") +
        (errno != 0 ? strerror(errno) : "none found") +
        "); run this inside the soft-RoCE VM (cluster/softroce/vm-run.sh)");
  }
  ibv_device* dev = nullptr;
  for (int i = 0; i < n; ++i) {
    if (o.device.empty() || o.device == ibv_get_device_name(list.get()[i])) {
      dev = list.get()[i];
      break;
    }
  }
  if (dev == nullptr) Die("no RDMA device named '" + o.device + "'");
  v.device_name = ibv_get_device_name(dev);
  v.context.reset(ibv_open_device(dev));
  if (!v.context) Die("ibv_open_device(" + v.device_name + "): " + strerror(errno));
  ibv_port_attr port{};
  if (ibv_query_port(v.context.get(), 1, &port) != 0) Die("ibv_query_port");
  if (port.state != IBV_PORT_ACTIVE) Die(v.device_name + " port 1 is not active");
  ibv_gid gid{};
  if (ibv_query_gid(v.context.get(), 1, o.gid_index, &gid) != 0) {
    Die("ibv_query_gid(index " + std::to_string(o.gid_index) + ") failed");
  }
  v.pd.reset(ibv_alloc_pd(v.context.get()));
  if (!v.pd) Die("ibv_alloc_pd failed");
  v.source_mem.resize(o.pages * kPage);
  for (uint64_t p = 0; p < o.pages; ++p) {
    memset(&v.source_mem[p * kPage], Pattern(p), kPage);
  }
  v.landing_mem.resize(kBatch * kPage);
  v.source.reset(ibv_reg_mr(v.pd.get(), v.source_mem.data(),
                            v.source_mem.size(),
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ));
  v.landing.reset(ibv_reg_mr(v.pd.get(), v.landing_mem.data(),
                             v.landing_mem.size(), IBV_ACCESS_LOCAL_WRITE));
  if (!v.source || !v.landing) Die(std::string("ibv_reg_mr: ") + strerror(errno));
  v.cq.reset(ibv_create_cq(v.context.get(), 2 * kBatch, nullptr, nullptr, 0));
  if (!v.cq) Die("ibv_create_cq failed");
  for (QueuePair* qp : {&v.client, &v.server}) {
    ibv_qp_init_attr init{};
    init.send_cq = v.cq.get();
    init.recv_cq = v.cq.get();
    init.qp_type = IBV_QPT_RC;
    init.cap.max_send_wr = kBatch;
    init.cap.max_recv_wr = 1;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    *qp = QueuePair(ibv_create_qp(v.pd.get(), &init));
    if (qp->get() == nullptr) Die(std::string("ibv_create_qp: ") + strerror(errno));
  }
  QpPath path;
  path.sgid_index = static_cast<uint8_t>(o.gid_index);
  path.mtu = port.active_mtu;
  path.max_rd_atomic = 16;
  Check(v.client.ToInit(path));
  Check(v.server.ToInit(path));
  Check(v.client.ToReadyToReceive(path, {v.server.qp_num(), 2, gid}));
  Check(v.server.ToReadyToReceive(path, {v.client.qp_num(), 1, gid}));
  Check(v.client.ToReadyToSend(path, 1));
  Check(v.server.ToReadyToSend(path, 2));
}

// The handler: poll, read a batch, one READ per fault, busy-poll the CQ,
// UFFDIO_COPY each page. Returns when `stop` is written.
void Handle(Verbs& v, int uffd, int stop, uintptr_t base, bool spin) {
  pthread_setname_np(pthread_self(), "bare-verbs");
  uffd_msg msgs[kBatch];
  ibv_sge sge[kBatch];
  ibv_send_wr wr[kBatch];
  for (;;) {
    pollfd fds[2] = {{uffd, POLLIN, 0}, {stop, POLLIN, 0}};
    if (poll(fds, 2, spin ? 0 : -1) < 0) {
      if (errno == EINTR) continue;
      Die(std::string("poll: ") + strerror(errno));
    }
    if (fds[1].revents & POLLIN) return;
    const ssize_t r = read(uffd, msgs, sizeof(msgs));
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      Die(std::string("read(userfaultfd): ") + strerror(errno));
    }
    const int count = static_cast<int>(r / sizeof(uffd_msg));
    for (int i = 0; i < count; ++i) {
      const uintptr_t page = msgs[i].arg.pagefault.address & ~(kPage - 1);
      sge[i] = {reinterpret_cast<uintptr_t>(&v.landing_mem[i * kPage]),
                static_cast<uint32_t>(kPage), v.landing->lkey};
      wr[i] = {};
      wr[i].wr_id = static_cast<uint64_t>(i);
      wr[i].sg_list = &sge[i];
      wr[i].num_sge = 1;
      wr[i].opcode = IBV_WR_RDMA_READ;
      wr[i].send_flags = IBV_SEND_SIGNALED;
      wr[i].wr.rdma.remote_addr =
          reinterpret_cast<uintptr_t>(v.source_mem.data()) + (page - base);
      wr[i].wr.rdma.rkey = v.source->rkey;
      wr[i].next = i + 1 < count ? &wr[i + 1] : nullptr;
    }
    ibv_send_wr* bad = nullptr;
    if (int e = ibv_post_send(v.client.get(), wr, &bad); e != 0) {
      Die(std::string("ibv_post_send: ") + strerror(e));
    }
    for (int done = 0; done < count;) {
      ibv_wc wc[kBatch];
      const int got = ibv_poll_cq(v.cq.get(), kBatch, wc);
      if (got < 0) Die("ibv_poll_cq failed");
      for (int k = 0; k < got; ++k) {
        if (wc[k].status != IBV_WC_SUCCESS) {
          Die(std::string("READ completed with ") +
              ibv_wc_status_str(wc[k].status));
        }
      }
      done += got;
    }
    for (int i = 0; i < count; ++i) {
      uffdio_copy copy{};
      copy.dst = msgs[i].arg.pagefault.address & ~(kPage - 1);
      copy.src = reinterpret_cast<uintptr_t>(&v.landing_mem[i * kPage]);
      copy.len = kPage;
      if (ioctl(uffd, UFFDIO_COPY, &copy) != 0 && errno != EEXIST) {
        Die(std::string("UFFDIO_COPY: ") + strerror(errno));
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  Verbs v;
  Setup(o, v);

  const int uffd =
      static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (uffd < 0) {
    Die(std::string("userfaultfd: ") + strerror(errno) +
        " (as non-root, set vm.unprivileged_userfaultfd=1)");
  }
  uffdio_api api{UFFD_API, 0, 0};
  if (ioctl(uffd, UFFDIO_API, &api) != 0) Die("UFFDIO_API failed");
  const uint64_t bytes = o.pages * kPage;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) Die(std::string("mmap: ") + strerror(errno));
  const uintptr_t base = reinterpret_cast<uintptr_t>(mem);
  uffdio_register reg{};
  reg.range = {base, bytes};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    Die(std::string("UFFDIO_REGISTER: ") + strerror(errno));
  }
  const int stop = eventfd(0, EFD_CLOEXEC);
  if (stop < 0) Die("eventfd failed");
  std::thread handler([&] { Handle(v, uffd, stop, base, o.spin); });

  std::vector<uint64_t> lat;
  lat.reserve(o.pages * o.rounds);
  // Round 0 is a warm-up (first touches of the source, landing and page
  // tables); rounds 1..R are timed.
  for (int r = 0; r <= o.rounds; ++r) {
    if (madvise(mem, bytes, MADV_DONTNEED) != 0) Die("madvise failed");
    for (uint64_t p = 0; p < o.pages; ++p) {
      const volatile char* at = static_cast<const char*>(mem) + p * kPage;
      const uint64_t t0 = NowNs();
      const char c = *at;
      const uint64_t t = NowNs() - t0;
      if (r > 0) lat.push_back(t);
      if (c != Pattern(p)) {
        Die("page " + std::to_string(p) + ": first byte differs from the " +
            "source: the READ landed the wrong bytes");
      }
    }
  }
  const uint64_t one = 1;
  if (write(stop, &one, sizeof(one)) != sizeof(one)) Die("eventfd write");
  handler.join();
  std::sort(lat.begin(), lat.end());
  printf("bare_verbs_fault: p50_us=%.1f p99_us=%.1f faults=%zu device=%s "
         "gid_index=%d\n",
         lat[lat.size() / 2] / 1e3, lat[lat.size() * 99 / 100] / 1e3,
         lat.size(), v.device_name.c_str(), o.gid_index);
  munmap(mem, bytes);
  close(uffd);
  close(stop);
  return 0;
}
