// verbs_device.cc - device, port and GID selection.
#include "runtime/transport/verbs/verbs_device.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace pagewire::verbs_internal {
namespace {

bool IsIpv4Mapped(const ibv_gid& gid) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(gid.raw, kPrefix, sizeof(kPrefix)) == 0;
}

bool IsZero(const ibv_gid& gid) {
  for (uint8_t b : gid.raw) {
    if (b != 0) return false;
  }
  return true;
}

enum class GidType { kUnknown, kIb, kRoceV1, kRoceV2 };

const char* GidTypeName(GidType type) {
  switch (type) {
    case GidType::kIb: return "IB";
    case GidType::kRoceV1: return "RoCEv1";
    case GidType::kRoceV2: return "RoCEv2";
    case GidType::kUnknown: break;
  }
  return "type unknown";
}

// A GID's type, from the kernel's table in sysfs ("RoCE v2", "IB/RoCE v1").
// libibverbs' ibv_query_gid_ex would say it too, but with rdma-core 44 on
// rxe it dereferences a null context field and crashes, so the sysfs file
// (what rdma-core's show_gids reads) is the portable source.
GidType QueryGidType(const char* ibdev_path, int port, int index) {
  std::string path = absl::StrFormat("%s/ports/%d/gid_attrs/types/%d",
                                     ibdev_path, port, index);
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return GidType::kUnknown;
  line = std::string(absl::StripAsciiWhitespace(line));
  if (absl::EqualsIgnoreCase(line, "RoCE v2")) return GidType::kRoceV2;
  if (absl::EqualsIgnoreCase(line, "IB/RoCE v1")) return GidType::kRoceV1;
  if (absl::EqualsIgnoreCase(line, "IB")) return GidType::kIb;
  return GidType::kUnknown;
}

// The devices to try: the one named (by name or index), or all in order.
absl::StatusOr<std::vector<int>> Candidates(
    const std::string& device, const std::vector<std::string>& names) {
  const int num = static_cast<int>(names.size());
  std::vector<int> candidates;
  if (device.empty()) {
    for (int i = 0; i < num; ++i) candidates.push_back(i);
    return candidates;
  }
  int index = -1;
  for (int i = 0; i < num; ++i) {
    if (names[i] == device) index = i;
  }
  int n;
  if (index < 0 && absl::SimpleAtoi(device, &n) && n >= 0 && n < num) {
    index = n;
  }
  if (index < 0) {
    return absl::NotFoundError(absl::StrFormat(
        "verbs: no RDMA device named '%s' (PAGEWIRE_VERBS_DEVICE or "
        "config); devices: %s",
        device, absl::StrJoin(names, ", ")));
  }
  candidates.push_back(index);
  return candidates;
}

// The GID of `port` to use: RoCEv2 IPv4-mapped, else IPv4-mapped of unknown
// type, else any RoCEv2; -1 if none (`table` then lists the GIDs seen).
int ChooseGid(ibv_context* ctx, const char* ibdev_path, int port,
              int table_len, ibv_gid& chosen_gid,
              std::vector<std::string>& table) {
  int chosen = -1, any_v2 = -1, mapped_untyped = -1;
  ibv_gid any_v2_gid{}, mapped_untyped_gid{};
  for (int g = 0; g < table_len; ++g) {
    ibv_gid gid{};
    if (ibv_query_gid(ctx, port, g, &gid) != 0 || IsZero(gid)) continue;
    const GidType type = QueryGidType(ibdev_path, port, g);
    table.push_back(
        absl::StrFormat("%d %s %s", g, GidTypeName(type), GidString(gid)));
    if (type == GidType::kUnknown && IsIpv4Mapped(gid) && mapped_untyped < 0) {
      mapped_untyped = g;
      mapped_untyped_gid = gid;
    }
    if (type != GidType::kRoceV2) continue;
    if (IsIpv4Mapped(gid)) {
      chosen_gid = gid;
      return g;
    }
    if (any_v2 < 0) {
      any_v2 = g;
      any_v2_gid = gid;
    }
  }
  if (mapped_untyped >= 0) {
    chosen = mapped_untyped;
    chosen_gid = mapped_untyped_gid;
  } else if (any_v2 >= 0) {
    chosen = any_v2;
    chosen_gid = any_v2_gid;
  }
  return chosen;
}

// Whether `port` of the opened device fits; fills `out` if so, else adds
// the reason to `why_not`. An error for what was asked and does not exist.
absl::StatusOr<bool> TryPort(ibv_context* ctx, const char* ibdev_path,
                             const std::string& name, int port, int gid_index,
                             ChosenPort& out,
                             std::vector<std::string>& why_not) {
  ibv_port_attr pa{};
  if (int rc = ibv_query_port(ctx, port, &pa); rc != 0) {
    why_not.push_back(absl::StrFormat("%s port %d: ibv_query_port: %s", name,
                                      port, ErrnoStr(rc)));
    return false;
  }
  if (pa.state != IBV_PORT_ACTIVE) {
    why_not.push_back(absl::StrFormat("%s port %d is %s", name, port,
                                      ibv_port_state_str(pa.state)));
    return false;
  }
  if (pa.link_layer != IBV_LINK_LAYER_ETHERNET) {
    // InfiniBand routes by LID, which TransportEndpoint does not carry.
    why_not.push_back(absl::StrFormat(
        "%s port %d is InfiniBand (needs a LID; only RoCE is supported)", name,
        port));
    return false;
  }
  int chosen = gid_index;
  ibv_gid gid{};
  std::vector<std::string> table;
  if (gid_index >= 0) {
    if (gid_index >= pa.gid_tbl_len ||
        ibv_query_gid(ctx, port, gid_index, &gid) != 0 || IsZero(gid)) {
      return absl::NotFoundError(absl::StrFormat(
          "verbs: %s port %d has no GID at index %d (table of %d)", name, port,
          gid_index, pa.gid_tbl_len));
    }
  } else {
    chosen = ChooseGid(ctx, ibdev_path, port, pa.gid_tbl_len, gid, table);
  }
  if (chosen < 0) {
    why_not.push_back(absl::StrFormat(
        "%s port %d has no RoCEv2 GID (table: %s; give an interface an IPv4 "
        "address, or set PAGEWIRE_VERBS_GID_INDEX)",
        name, port, table.empty() ? "empty" : absl::StrJoin(table, "; ")));
    return false;
  }
  out.device_name = name;
  out.port = static_cast<uint8_t>(port);
  out.gid_index = static_cast<uint8_t>(chosen);
  out.gid = gid;
  out.mtu = pa.active_mtu;
  out.max_msg_sz = pa.max_msg_sz;
  return true;
}

}  // namespace

std::string GidString(const ibv_gid& gid) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, gid.raw, buf, sizeof(buf));
  return buf;
}

absl::StatusOr<ChosenPort> ChoosePort(const std::string& device, int port,
                                      int gid_index) {
  int num = 0;
  errno = 0;
  DeviceList list(ibv_get_device_list(&num));
  if (!list) {
    const int e = errno;
    if (e == ENOSYS) {
      return absl::UnavailableError(
          "no RDMA device (ibv_get_device_list: Function not implemented): "
          "the kernel has no RDMA stack");
    }
    return absl::UnavailableError(absl::StrFormat(
        "no RDMA device (ibv_get_device_list: %s)", ErrnoStr(e)));
  }
  if (num == 0) {
    return absl::UnavailableError(
        "no RDMA device: ibv_get_device_list found none (for soft-RoCE: "
        "modprobe rdma_rxe; rdma link add rxe0 type rxe netdev <interface>)");
  }
  std::vector<std::string> names;
  for (int i = 0; i < num; ++i) names.push_back(ibv_get_device_name(list.get()[i]));
  absl::StatusOr<std::vector<int>> candidates = Candidates(device, names);
  if (!candidates.ok()) return candidates.status();

  std::vector<std::string> why_not;
  for (int index : *candidates) {
    Context ctx(ibv_open_device(list.get()[index]));
    if (!ctx) {
      why_not.push_back(absl::StrFormat("%s: ibv_open_device: %s",
                                        names[index], ErrnoStr(errno)));
      continue;
    }
    if (verbs_get_ctx(ctx.get()) == nullptr) {
      // ibv_* bound to the IBVERBS_1.0 compat symbols (a library linked
      // without -libverbs): nothing but crashes lies that way.
      return absl::InternalError(absl::StrFormat(
          "verbs: %s opened through libibverbs' legacy IBVERBS_1.0 ABI; the "
          "code calling ibv_* must be linked with -libverbs",
          names[index]));
    }
    ibv_device_attr dev{};
    if (int rc = ibv_query_device(ctx.get(), &dev); rc != 0) {
      why_not.push_back(absl::StrFormat("%s: ibv_query_device: %s",
                                        names[index], ErrnoStr(rc)));
      continue;
    }
    int first = 1, last = dev.phys_port_cnt;
    if (port > 0) {
      if (port > dev.phys_port_cnt) {
        return absl::NotFoundError(absl::StrFormat(
            "verbs: %s has %d port(s), no port %d", names[index],
            dev.phys_port_cnt, port));
      }
      first = last = port;
    }
    for (int p = first; p <= last; ++p) {
      ChosenPort chosen;
      absl::StatusOr<bool> fits =
          TryPort(ctx.get(), list.get()[index]->ibdev_path, names[index], p,
                  gid_index, chosen, why_not);
      if (!fits.ok()) return fits.status();
      if (!*fits) continue;
      chosen.context = std::move(ctx);
      return chosen;
    }
  }
  return absl::UnavailableError(absl::StrFormat(
      "verbs: no usable RDMA port: %s", absl::StrJoin(why_not, "; ")));
}

}  // namespace pagewire::verbs_internal
