// tcp_probe.cc - the server half of the netns test's TCP check (the client
// is bash's /dev/tcp).
//
//   tcp_probe serve ADDRESS
//
// Listens on ADDRESS:0, prints the chosen port and a newline (so the test
// knows it is listening), accepts one connection, reads one line and answers
// "pong <line>". Exits 0 after answering, 1 on any error, with a message.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

int Fail(const char* what) {
  std::fprintf(stderr, "tcp_probe: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "serve") {
    std::fprintf(stderr, "usage: tcp_probe serve ADDRESS\n");
    return 2;
  }
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return Fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (::inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
    std::fprintf(stderr, "tcp_probe: '%s' is not an IPv4 address\n", argv[2]);
    return 2;
  }
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Fail("bind");
  }
  if (::listen(s, 1) != 0) return Fail("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Fail("getsockname");
  }
  std::printf("%d\n", ntohs(addr.sin_port));
  std::fflush(stdout);
  int c = ::accept(s, nullptr, nullptr);
  if (c < 0) return Fail("accept");
  std::string line;
  char ch;
  for (;;) {
    ssize_t n = ::read(c, &ch, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("read");
    if (n == 0 || ch == '\n') break;
    line.push_back(ch);
  }
  std::string reply = "pong " + line + "\n";
  if (::write(c, reply.data(), reply.size()) !=
      static_cast<ssize_t>(reply.size())) {
    return Fail("write");
  }
  ::close(c);
  ::close(s);
  return 0;
}
