// list_devices.cc - lists the RDMA devices libibverbs sees: for each, port
// 1's state and active MTU and the GID at PAGEWIRE_RXE_GID_INDEX (default 1,
// the RoCEv2 IPv4-mapped GID on rxe). The trivial host-built binary that
// proves softroce_test() runs Bazel outputs unchanged inside the soft-RoCE
// VM. Exits 0 only if at least one device is found and every port 1 is
// ACTIVE; on the host (no RDMA stack) it says why and exits 1.
#include <infiniband/verbs.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

const char* PortStateName(ibv_port_state s) {
  switch (s) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
  }
  return "UNKNOWN";
}

int MtuBytes(ibv_mtu mtu) {
  switch (mtu) {
    case IBV_MTU_256: return 256;
    case IBV_MTU_512: return 512;
    case IBV_MTU_1024: return 1024;
    case IBV_MTU_2048: return 2048;
    case IBV_MTU_4096: return 4096;
  }
  return 0;
}

// Reports one device; returns true if port 1 is ACTIVE.
bool ReportDevice(ibv_device* device, int gid_index) {
  const char* name = ibv_get_device_name(device);
  ibv_context* context = ibv_open_device(device);
  if (context == nullptr) {
    std::printf("%s: ibv_open_device failed: %s\n", name, std::strerror(errno));
    return false;
  }
  bool active = false;
  ibv_port_attr port{};
  if (int err = ibv_query_port(context, 1, &port); err != 0) {
    std::printf("%s: ibv_query_port(1) failed: %s\n", name, std::strerror(err));
  } else {
    active = port.state == IBV_PORT_ACTIVE;
    ibv_gid gid{};
    char gid_text[40] = "?";
    if (ibv_query_gid(context, 1, gid_index, &gid) == 0) {
      for (int i = 0; i < 16; i += 2) {
        std::snprintf(gid_text + i / 2 * 5, 6, "%02x%02x%s", gid.raw[i],
                      gid.raw[i + 1], i < 14 ? ":" : "");
      }
    }
    std::printf("%s: port 1 %s active_mtu %d gid[%d] %s\n", name,
                PortStateName(port.state), MtuBytes(port.active_mtu),
                gid_index, gid_text);
  }
  ibv_close_device(context);
  return active;
}

}  // namespace

int main() {
  int gid_index = 1;
  if (const char* g = std::getenv("PAGEWIRE_RXE_GID_INDEX")) {
    gid_index = std::atoi(g);
  }
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) {
    std::printf("list_devices: ibv_get_device_list failed: %s (no RDMA stack?)\n",
                std::strerror(errno));
    return 1;
  }
  bool all_active = count > 0;
  for (int i = 0; i < count; ++i) {
    all_active = ReportDevice(devices[i], gid_index) && all_active;
  }
  ibv_free_device_list(devices);
  std::printf("list_devices: %d device(s)%s\n", count,
              count == 0 ? ", none found" : (all_active ? ", all ACTIVE" : ", NOT all active"));
  return all_active ? 0 : 1;
}
