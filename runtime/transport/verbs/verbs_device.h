// verbs_device.h - choosing the RDMA device, port and GID a verbs transport
// uses: the one asked for, or the first active RoCE port with a RoCEv2 GID
// (IPv4-mapped preferred). Every port passed over is named with the reason.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_DEVICE_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_DEVICE_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/transport/verbs/verbs_resources.h"

namespace pagewire::verbs_internal {

struct ChosenPort {
  Context context;  // the device, opened
  std::string device_name;
  uint8_t port = 0;
  uint8_t gid_index = 0;
  ibv_gid gid{};
  ibv_mtu mtu = IBV_MTU_1024;
  uint32_t max_msg_sz = 0;
};

// `device`: a name or index ("" any); `port`: 1.. (0 any); `gid_index`:
// >= 0 to insist on one (-1 choose). Unavailable with every reason when
// nothing fits; NotFound when what was asked for does not exist.
absl::StatusOr<ChosenPort> ChoosePort(const std::string& device, int port,
                                      int gid_index);

// "::ffff:10.77.0.1".
std::string GidString(const ibv_gid& gid);

}  // namespace pagewire::verbs_internal

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_DEVICE_H_
