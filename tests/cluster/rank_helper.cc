// rank_helper.cc - a rank for the launcher tests: runs a list of actions,
// each for every rank or, written "R:action", for rank R only
// (PAGEWIRE_RANK). "%r" in a TEXT is replaced by the rank.
//
//   pid               print "pid=<pid>" (so the test can check it is gone)
//   env               print every PAGEWIRE_* variable as NAME=value
//   print=TEXT        print TEXT and a newline
//   lines=K           K stdout lines "rank R line J part-b", each written in
//                     three write(2) calls with sched_yield() between them
//   errlines=K        the same on stderr: "rank R err J part-b"
//   partial=TEXT      TEXT on stdout with no newline
//   exit=C            exit with status C
//   signal=S          kill itself with signal S (default disposition)
//   ignore-term       ignore SIGTERM from now on
//   arrive=FIFO       write one byte to FIFO (a barrier with await)
//   await=FIFO:K      read K bytes from FIFO: wait until K ranks arrived
//   block             wait forever (pause)
//
// Exits 0 after the last action. Bad actions exit 99 with a message.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern char** environ;

namespace {

int g_rank = -1;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "rank_helper: %s\n", what.c_str());
  std::exit(99);
}

void WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0) Fail(std::string("write: ") + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

std::string Expand(std::string text) {
  for (size_t at; (at = text.find("%r")) != std::string::npos;) {
    text.replace(at, 2, std::to_string(g_rank));
  }
  return text;
}

void Lines(int fd, const char* kind, int count) {
  for (int j = 0; j < count; ++j) {
    WriteAll(fd, "rank " + std::to_string(g_rank) + " " + kind + " " +
                     std::to_string(j));
    ::sched_yield();
    WriteAll(fd, " part-b");
    ::sched_yield();
    WriteAll(fd, "\n");
  }
}

int OpenFifo(const std::string& path) {
  // O_RDWR: never blocks on open and never sees EOF between writers.
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) Fail("open " + path + ": " + std::strerror(errno));
  return fd;
}

void Run(const std::string& action) {
  std::string name = action, arg;
  if (size_t eq = action.find('='); eq != std::string::npos) {
    name = action.substr(0, eq);
    arg = action.substr(eq + 1);
  }
  if (name == "pid") {
    WriteAll(1, "pid=" + std::to_string(::getpid()) + "\n");
  } else if (name == "env") {
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "PAGEWIRE_", 9) == 0) {
        WriteAll(1, std::string(*e) + "\n");
      }
    }
  } else if (name == "print") {
    WriteAll(1, Expand(arg) + "\n");
  } else if (name == "lines") {
    Lines(1, "line", std::atoi(arg.c_str()));
  } else if (name == "errlines") {
    Lines(2, "err", std::atoi(arg.c_str()));
  } else if (name == "partial") {
    WriteAll(1, Expand(arg));
  } else if (name == "exit") {
    std::exit(std::atoi(arg.c_str()));
  } else if (name == "signal") {
    int sig = std::atoi(arg.c_str());
    ::signal(sig, SIG_DFL);
    ::kill(::getpid(), sig);
    Fail("survived signal " + arg);
  } else if (name == "ignore-term") {
    ::signal(SIGTERM, SIG_IGN);
  } else if (name == "arrive") {
    int fd = OpenFifo(arg);
    WriteAll(fd, "x");
    // Kept open on purpose: the reader must never see EOF.
  } else if (name == "await") {
    size_t colon = arg.rfind(':');
    if (colon == std::string::npos) Fail("await needs FIFO:K");
    int fd = OpenFifo(arg.substr(0, colon));
    int want = std::atoi(arg.substr(colon + 1).c_str());
    char c;
    for (int got = 0; got < want;) {
      ssize_t n = ::read(fd, &c, 1);
      if (n == 1) ++got;
      if (n < 0 && errno != EINTR) Fail(std::string("read: ") +
                                        std::strerror(errno));
    }
  } else if (name == "block") {
    for (;;) ::pause();
  } else {
    Fail("unknown action '" + action + "'");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* rank = std::getenv("PAGEWIRE_RANK");
  if (rank == nullptr) Fail("PAGEWIRE_RANK is not set");
  g_rank = std::atoi(rank);
  for (int i = 1; i < argc; ++i) {
    std::string action = argv[i];
    size_t colon = action.find(':');
    size_t eq = action.find('=');
    if (colon != std::string::npos && (eq == std::string::npos || colon < eq)) {
      if (std::atoi(action.substr(0, colon).c_str()) != g_rank) continue;
      action = action.substr(colon + 1);
    }
    Run(action);
  }
  return 0;
}
