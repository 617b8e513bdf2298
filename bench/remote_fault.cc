// remote_fault.cc - what a remote 4 KiB read fault costs over the TCP
// transport, against its floor, in one run of a 2-rank job:
//
//   pagewire-run -n 2 bazel-bin/bench/remote_fault [--pages N] [--rounds R]
//                                                 [--threads T]
//
// Rank 1 homes an allocation (pw_alloc_on(bytes, 1)) and writes a pattern
// into it; rank 0 reads one byte of each page, timing each first read. A
// barrier drops rank 0's cached copies, so every round faults every page
// again; the remote-fetch counter proves it (it must grow by the page count
// each round) and every page read is checked against the pattern.
//
// Interleaved with those rounds, inside rank 0's process, the floor:
//   (a) a bare userfaultfd resolve (bench/bare_uffd_loop.h), and
//   (b) a bare 4 KiB request/reply over a TCP loopback socket: a blocking
//       client thread sends a 40-byte request (a RequestHeader's size), a
//       server thread answers a 16-byte header (a ResponseHeader's size)
//       and the page, and the client reads it all (TCP_NODELAY both ends).
// floor = p50(a) + p50(b): the kernel's share of a fault plus one network
// round trip carrying a page, with no runtime in between.
//
// Then throughput: 1 and T faulting threads on rank 0 reading disjoint
// remote pages, a barrier between runs. The last line, "summary: k=v ...",
// is what bench/remote_fault.sh reads.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pagewire/pagewire.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bare_uffd_loop.h"

namespace pagewire {
namespace {

// Clear of the global range (32 TiB up, 1 TiB long) and of fault_latency's.
constexpr uintptr_t kFloorBase = uintptr_t{0x3c00} << 32;
// The TCP transport's frame sizes (runtime/transport/tcp/tcp_transport.h, tcp_internal):
// the floor sends exactly what a READ puts on the wire.
constexpr size_t kRequestBytes = 40;   // sizeof(RequestHeader)
constexpr size_t kResponseBytes = 16;  // sizeof(ResponseHeader)
constexpr int kHome = 1;               // the rank that homes every page

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& why) {
  fprintf(stderr, "remote_fault: rank %d: %s\n", pw_rank(), why.c_str());
  fflush(stderr);
  exit(1);
}

// The pattern rank 1 writes: a word that names its page and position.
uint64_t Word(uint64_t page, uint64_t word) {
  uint64_t x = (page << 16) ^ word ^ 0x7061676577697265ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 32);
}

// A barrier, then an acquire that drops every cached copy of another rank's
// page: read-only pages survive barriers (nobody wrote them), so the next
// round would otherwise find them cached.
void Barrier(const char* where) {
  if (pw_barrier() != PW_OK) {
    Die(std::string("pw_barrier (") + where + "): " + pw_last_error());
  }
  if (pw_acquire() != PW_OK) {
    Die(std::string("pw_acquire (") + where + "): " + pw_last_error());
  }
}

pw_stats_t Stats() {
  pw_stats_t s;
  if (pw_get_stats(&s) != PW_OK) Die(std::string("pw_get_stats: ") + pw_last_error());
  return s;
}

// Every word of every page is rank 1's pattern (the pages are resident now:
// this faults nothing).
void VerifyAll(const uint64_t* base, uint64_t pages, const char* what) {
  for (uint64_t p = 0; p < pages; ++p) {
    const uint64_t* w = base + p * (kPageSize / 8);
    for (uint64_t k = 0; k < kPageSize / 8; ++k) {
      if (w[k] != Word(p, k)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "%s: page %llu word %llu is %llx, want %llx", what,
                 static_cast<unsigned long long>(p),
                 static_cast<unsigned long long>(k),
                 static_cast<unsigned long long>(w[k]),
                 static_cast<unsigned long long>(Word(p, k)));
        Die(msg);
      }
    }
  }
}

// The counters must show that a run fetched every page from rank 1 once.
void CheckFetched(const pw_stats_t& before, const pw_stats_t& after,
                  uint64_t pages, const char* what) {
  const uint64_t fetched = after.remote_fetches - before.remote_fetches;
  const uint64_t failed = after.failed - before.failed;
  if (fetched != pages || failed != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg),
             "%s: %llu remote fetches (want %llu, one per page) and %llu "
             "failed faults: the pages were not fetched afresh",
             what, static_cast<unsigned long long>(fetched),
             static_cast<unsigned long long>(pages),
             static_cast<unsigned long long>(failed));
    Die(msg);
  }
}

// One thread reads one byte of each page, timing every first access; the
// byte read is checked against the pattern.
void TimeFaults(const char* base, uint64_t pages, std::vector<uint64_t>& out,
                bool check_pattern) {
  for (uint64_t i = 0; i < pages; ++i) {
    const volatile char* p = base + i * kPageSize;
    const uint64_t t0 = NowNs();
    const char c = *p;
    out.push_back(NowNs() - t0);
    if (check_pattern && c != static_cast<char>(Word(i, 0) & 0xff)) {
      Die("page " + std::to_string(i) + ": first byte read differs from the "
          "pattern");
    }
  }
}

// `threads` threads read disjoint pages (thread t: pages t, t+T, ...);
// returns faults per second.
double Throughput(const char* base, uint64_t pages, int threads) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      for (uint64_t i = t; i < pages; i += threads) {
        (void)*reinterpret_cast<const volatile char*>(base + i * kPageSize);
      }
    });
  }
  while (ready.load() < threads) {
  }
  const uint64_t t0 = NowNs();
  go = true;
  for (auto& t : ts) t.join();
  return pages * 1e9 / static_cast<double>(NowNs() - t0);
}

// Floor (b): a bare page request/reply over TCP loopback.
class TcpPingPong {
 public:
  explicit TcpPingPong(uint64_t pages)
      : pages_(pages), source_(pages * kPageSize), landing_(kPageSize) {
    for (uint64_t p = 0; p < pages; ++p) {
      uint64_t* w = reinterpret_cast<uint64_t*>(source_.data() + p * kPageSize);
      for (uint64_t k = 0; k < kPageSize / 8; ++k) w[k] = Word(p, k);
    }
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) Die(std::string("socket: ") + strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      Die(std::string("tcp floor: listen: ") + strerror(errno));
    }
    client_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client_ < 0 ||
        ::connect(client_, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      Die(std::string("tcp floor: connect: ") + strerror(errno));
    }
    server_ = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (server_ < 0) Die(std::string("tcp floor: accept: ") + strerror(errno));
    ::close(listener);
    int one = 1;
    ::setsockopt(client_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(server_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    thread_ = std::thread([this] { Serve(); });
  }
  ~TcpPingPong() {
    ::shutdown(client_, SHUT_WR);  // the server reads EOF and returns
    thread_.join();
    ::close(client_);
    ::close(server_);
  }

  // One request/reply per page, timed; the page that arrives is checked.
  void Time(std::vector<uint64_t>& out) {
    for (uint64_t p = 0; p < pages_; ++p) {
      char request[kRequestBytes] = {};
      std::memcpy(request, &p, sizeof(p));
      char header[kResponseBytes];
      const uint64_t t0 = NowNs();
      if (::send(client_, request, sizeof(request), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(sizeof(request))) {
        Die(std::string("tcp floor: send: ") + strerror(errno));
      }
      iovec iov[2] = {{header, sizeof(header)}, {landing_.data(), kPageSize}};
      ReadFully(client_, iov, 2);
      out.push_back(NowNs() - t0);
      if (std::memcmp(landing_.data(), source_.data() + p * kPageSize,
                      kPageSize) != 0) {
        Die("tcp floor: page " + std::to_string(p) + " arrived corrupted");
      }
    }
  }

 private:
  // Reads until every iovec is full; false at EOF before any byte.
  static bool ReadFully(int fd, iovec* iov, int n) {
    size_t total = 0;
    while (n > 0) {
      ssize_t got = ::readv(fd, iov, n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) Die(std::string("tcp floor: read: ") + strerror(errno));
      if (got == 0) {
        if (total == 0) return false;
        Die("tcp floor: connection closed mid-frame");
      }
      total += got;
      size_t left = static_cast<size_t>(got);
      while (n > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --n;
      }
      if (n > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
    return true;
  }

  void Serve() {
    pthread_setname_np(pthread_self(), "floor-tcp");
    for (;;) {
      char request[kRequestBytes];
      iovec in = {request, sizeof(request)};
      if (!ReadFully(server_, &in, 1)) return;
      uint64_t p;
      std::memcpy(&p, request, sizeof(p));
      char header[kResponseBytes] = {};
      const uint32_t length = kPageSize;
      std::memcpy(header + 4, &length, sizeof(length));
      iovec out[2] = {{header, sizeof(header)},
                      {source_.data() + (p % pages_) * kPageSize, kPageSize}};
      size_t left = sizeof(header) + kPageSize;
      // 4 KiB fits a loopback socket buffer: one sendmsg normally does it.
      iovec* iov = out;
      int n = 2;
      while (left > 0) {
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        ssize_t sent = ::sendmsg(server_, &msg, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0) Die(std::string("tcp floor: sendmsg: ") + strerror(errno));
        left -= sent;
        size_t s = static_cast<size_t>(sent);
        while (n > 0 && s >= iov->iov_len) {
          s -= iov->iov_len;
          ++iov;
          --n;
        }
        if (n > 0) {
          iov->iov_base = static_cast<char*>(iov->iov_base) + s;
          iov->iov_len -= s;
        }
      }
    }
  }

  const uint64_t pages_;
  std::vector<char> source_;
  std::vector<char> landing_;
  int client_ = -1;
  int server_ = -1;
  std::thread thread_;
};

// What this process's threads used, summed by thread name: sleeps
// (voluntary context switches, each ended by a wake-up) and time on a CPU
// (/proc/self/task/*/schedstat, in ns).
struct ThreadUse {
  uint64_t sleeps = 0;
  uint64_t cpu_ns = 0;
};
using UseByName = std::map<std::string, ThreadUse>;

UseByName ThreadUses() {
  UseByName out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    char name[64] = {};
    FILE* f = fopen((dir + "/comm").c_str(), "r");
    if (f == nullptr) continue;
    if (fgets(name, sizeof(name), f) == nullptr) name[0] = 0;
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    ThreadUse& use = out[name];
    char line[256];
    if ((f = fopen((dir + "/status").c_str(), "r")) != nullptr) {
      while (fgets(line, sizeof(line), f) != nullptr) {
        unsigned long long n;
        if (sscanf(line, "voluntary_ctxt_switches: %llu", &n) == 1) {
          use.sleeps += n;
        }
      }
      fclose(f);
    }
    if ((f = fopen((dir + "/schedstat").c_str(), "r")) != nullptr) {
      unsigned long long ns;
      if (fscanf(f, "%llu", &ns) == 1) use.cpu_ns += ns;
      fclose(f);
    }
  }
  closedir(d);
  return out;
}

// Adds after - before to `sum`, per thread name.
void AddUses(const UseByName& before, const UseByName& after, UseByName& sum) {
  for (const auto& [name, a] : after) {
    auto it = before.find(name);
    const ThreadUse b = it == before.end() ? ThreadUse{} : it->second;
    sum[name].sleeps += a.sleeps - b.sleeps;
    sum[name].cpu_ns += a.cpu_ns - b.cpu_ns;
  }
}

void PrintUses(const UseByName& sum, uint64_t faults, const char* what,
               std::initializer_list<const char*> names = {
                   "remote_fault", "pw-fault", "pw-tcp"}) {
  std::string line;
  for (const char* name : names) {
    auto it = sum.find(name);
    const ThreadUse u = it == sum.end() ? ThreadUse{} : it->second;
    char buf[96];
    snprintf(buf, sizeof(buf), "  %s %.2f sleeps %.1f us cpu", name,
             static_cast<double>(u.sleeps) / faults, u.cpu_ns / 1e3 / faults);
    line += buf;
  }
  printf("per fault, %s:%s\n", what, line.c_str());
}

uint64_t Quantile(std::vector<uint64_t> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1))];
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  uint64_t pages = 20000;
  int rounds = 5;
  int threads = 16;
  bool latency_only = false;  // for profiling the single fault
};

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pages" && i + 1 < argc) {
      o.pages = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--rounds" && i + 1 < argc) {
      o.rounds = atoi(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      o.threads = atoi(argv[++i]);
    } else if (a == "--latency-only") {
      o.latency_only = true;
    } else {
      fprintf(stderr,
              "remote_fault: unknown argument '%s'\n"
              "usage: pagewire-run -n 2 remote_fault [--pages N (default "
              "20000)] [--rounds R (default 5)] [--threads T (default 16)]\n"
              "                    [--latency-only (no throughput rounds)]\n",
              a.c_str());
      exit(2);
    }
  }
  if (o.pages < 100 || o.rounds < 1 || o.threads < 2 || o.threads > 256) {
    fprintf(stderr,
            "remote_fault: need --pages >= 100, --rounds >= 1 and "
            "2 <= --threads <= 256\n");
    exit(2);
  }
  return o;
}

// Rank 0's side of the run: measures, checks and prints.
void Measure(const Options& o, char* remote) {
  const uint64_t bytes = o.pages * kPageSize;
  auto bare = bench::BareUffdLoop::Create(kFloorBase, bytes, 0x5a);
  if (!bare.ok()) Die(bare.status().ToString());
  TcpPingPong tcp(o.pages);

  std::vector<uint64_t> lat_pw, lat_uffd, lat_tcp;
  UseByName sleeps;  // during the remote faults
  UseByName sleeps_uffd, sleeps_tcp;  // the floors
  lat_pw.reserve(o.pages * o.rounds);
  lat_uffd.reserve(o.pages * o.rounds);
  lat_tcp.reserve(o.pages * o.rounds);
  // Warm-up: a rank's first fetch of a page registers it with the home (a
  // message round trip before the READ); every later fetch is one READ.
  {
    std::vector<uint64_t> ignored;
    ignored.reserve(o.pages);
    TimeFaults(remote, o.pages, ignored, /*check_pattern=*/true);
    Barrier("after the warm-up");
  }
  // Latency rounds: the three measurements in a rotating order, so drift of
  // the machine hits them alike.
  for (int r = 0; r < o.rounds; ++r) {
    for (int k = 0; k < 3; ++k) {
      switch ((r + k) % 3) {
        case 0: {
          const pw_stats_t before = Stats();
          const auto sleeps_before = ThreadUses();
          TimeFaults(remote, o.pages, lat_pw, /*check_pattern=*/true);
          AddUses(sleeps_before, ThreadUses(), sleeps);
          CheckFetched(before, Stats(), o.pages, "latency round");
          VerifyAll(reinterpret_cast<const uint64_t*>(remote), o.pages,
                    "latency round");
          break;
        }
        case 1: {
          (*bare)->Reset();
          const auto sleeps_before = ThreadUses();
          TimeFaults((*bare)->base(), o.pages, lat_uffd, false);
          AddUses(sleeps_before, ThreadUses(), sleeps_uffd);
          break;
        }
        case 2: {
          const auto sleeps_before = ThreadUses();
          tcp.Time(lat_tcp);
          AddUses(sleeps_before, ThreadUses(), sleeps_tcp);
          break;
        }
      }
    }
    Barrier("after a latency round");  // drops the cached remote pages
  }
  const pw_stats_t after_latency = Stats();

  // Throughput rounds: 1 thread, then T threads, a barrier after each.
  std::vector<double> rate1, rateT, ratio;
  for (int r = 0; r < (o.latency_only ? 0 : o.rounds); ++r) {
    double rates[2];
    const int threads[2] = {1, o.threads};
    for (int k = 0; k < 2; ++k) {
      const pw_stats_t before = Stats();
      rates[k] = Throughput(remote, o.pages, threads[k]);
      CheckFetched(before, Stats(), o.pages, "throughput round");
      VerifyAll(reinterpret_cast<const uint64_t*>(remote), o.pages,
                "throughput round");
      Barrier("after a throughput round");
    }
    rate1.push_back(rates[0]);
    rateT.push_back(rates[1]);
    ratio.push_back(rates[1] / rates[0]);
  }

  const uint64_t pw50 = Quantile(lat_pw, 0.5), pw99 = Quantile(lat_pw, 0.99);
  const uint64_t u50 = Quantile(lat_uffd, 0.5), u99 = Quantile(lat_uffd, 0.99);
  const uint64_t t50 = Quantile(lat_tcp, 0.5), t99 = Quantile(lat_tcp, 0.99);
  const uint64_t floor50 = u50 + t50, floor99 = u99 + t99;
  const double r1 = o.latency_only ? 0 : Median(rate1);
  const double rT = o.latency_only ? 0 : Median(rateT);
  const double rr = o.latency_only ? 0 : Median(ratio);

  // The runtime logs which data plane it chose ("data plane verbs(...)" or
  // "... using TCP"); PAGEWIRE_TRANSPORT can force one.
  const char* transport = std::getenv("PAGEWIRE_TRANSPORT");
  printf("remote_fault: 2 ranks, PAGEWIRE_TRANSPORT=%s, %llu pages x %d "
         "rounds, %u cpus\n",
         transport ? transport : "auto", static_cast<unsigned long long>(o.pages),
         o.rounds, std::thread::hardware_concurrency());
  printf("%-40s %10s %10s\n", "4 KiB read fault latency (us)", "p50", "p99");
  printf("%-40s %10.2f %10.2f\n", "pagewire remote fault (rank 0 <- 1)",
         pw50 / 1e3, pw99 / 1e3);
  printf("%-40s %10.2f %10.2f\n", "(a) bare uffd resolve", u50 / 1e3,
         u99 / 1e3);
  printf("%-40s %10.2f %10.2f\n", "(b) bare TCP 4 KiB request/reply",
         t50 / 1e3, t99 / 1e3);
  printf("%-40s %10.2f %10.2f\n", "floor = (a) + (b)", floor50 / 1e3,
         floor99 / 1e3);
  printf("%-40s %10.3f %10.3f   (target p50 <= 1.15)\n",
         "ratio pagewire/floor", static_cast<double>(pw50) / floor50,
         static_cast<double>(pw99) / floor99);
  // Only the mean: the histogram's quantiles can report the top quarter of
  // a power-of-two bucket as below its bottom (LatencyHistogram::UpperEdge).
  printf("%-40s %10.2f   (mean; fault read to page installed)\n",
         "fault service's own view (pw_get_stats)",
         after_latency.mean_latency_us);
  if (!o.latency_only) {
    printf("%-40s %12s\n", "remote faults/s (median)", "rate");
    printf("%-40s %12.0f\n", "1 thread", r1);
    printf("%-40s %12.0f\n",
           (std::to_string(o.threads) + " threads").c_str(), rT);
    printf("%-40s %12.3f   (target >= 4)\n",
           ("ratio " + std::to_string(o.threads) + "/1 (median of rounds)")
               .c_str(),
           rr);
  }
  PrintUses(sleeps, o.pages * o.rounds, "rank 0, remote faults");
  PrintUses(sleeps_uffd, o.pages * o.rounds, "floor (a)",
              {"remote_fault", "bare-uffd"});
  PrintUses(sleeps_tcp, o.pages * o.rounds, "floor (b)",
              {"remote_fault", "floor-tcp"});
  const pw_stats_t end = Stats();
  printf("checks: every round fetched each of the %llu pages from rank 1 "
         "once (remote fetches %llu in total) and every word matched; "
         "coalesced %llu, failed %llu\n",
         static_cast<unsigned long long>(o.pages),
         static_cast<unsigned long long>(end.remote_fetches),
         static_cast<unsigned long long>(end.coalesced),
         static_cast<unsigned long long>(end.failed));
  printf("summary: pw_p50_us=%.2f pw_p99_us=%.2f uffd_p50_us=%.2f "
         "uffd_p99_us=%.2f tcp_p50_us=%.2f tcp_p99_us=%.2f floor_p50_us=%.2f "
         "floor_p99_us=%.2f rate1=%.0f rateT=%.0f threads=%d rate_ratio=%.3f\n",
         pw50 / 1e3, pw99 / 1e3, u50 / 1e3, u99 / 1e3, t50 / 1e3, t99 / 1e3,
         floor50 / 1e3, floor99 / 1e3, r1, rT, o.threads, rr);
  fflush(stdout);
}

}  // namespace
}  // namespace pagewire

int main(int argc, char** argv) {
  using namespace pagewire;
  const Options o = ParseOptions(argc, argv);
  // Every measured fault is one remote fetch: the rounds walk the pages in
  // order, and read-ahead would turn every other fault into a hit. (Set
  // PAGEWIRE_READAHEAD yourself to see what it does.)
  setenv("PAGEWIRE_READAHEAD", "0", /*overwrite=*/0);
  if (pw_init(&argc, &argv) != PW_OK) {
    fprintf(stderr, "remote_fault: pw_init: %s\n", pw_last_error());
    return 1;
  }
  if (pw_nranks() != 2) {
    fprintf(stderr, "remote_fault: needs exactly 2 ranks (pagewire-run -n 2), "
                    "not %d\n", pw_nranks());
    return 2;
  }
  const uint64_t bytes = o.pages * kPageSize;
  char* remote = static_cast<char*>(pw_alloc_on(bytes, kHome));
  if (remote == nullptr) Die(std::string("pw_alloc_on: ") + pw_last_error());
  if (pw_rank() == kHome) {
    uint64_t* w = reinterpret_cast<uint64_t*>(remote);
    for (uint64_t p = 0; p < o.pages; ++p) {
      for (uint64_t k = 0; k < kPageSize / 8; ++k) {
        w[p * (kPageSize / 8) + k] = Word(p, k);
      }
    }
  }
  Barrier("after writing");
  if (pw_rank() == 0) {
    Measure(o, remote);
  } else {
    // The home only serves; it meets rank 0 at each of its barriers.
    // Its pw-tcp thread serves nothing but rank 0's fetches meanwhile.
    const int barriers = o.rounds * (o.latency_only ? 1 : 3);
    Barrier("serving the warm-up");
    const auto sleeps_before = ThreadUses();
    for (int i = 0; i < o.rounds; ++i) Barrier("serving");
    UseByName sleeps;
    AddUses(sleeps_before, ThreadUses(), sleeps);
    for (int i = o.rounds; i < barriers; ++i) Barrier("serving");
    PrintUses(sleeps, o.pages * o.rounds, "rank 1 (home), remote faults");
  }
  Barrier("before freeing");
  if (pw_free(remote) != PW_OK) Die(std::string("pw_free: ") + pw_last_error());
  return pw_finalize() == PW_OK ? 0 : 1;
}
