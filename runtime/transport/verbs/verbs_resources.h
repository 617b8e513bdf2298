// verbs_resources.h - RAII owners for libibverbs objects, and the RC queue
// pair's named state moves.
//
// Each owner releases exactly one verbs object, once. VerbsTransport holds
// them as members declared in rc_pingpong's setup order (device context,
// protection domain, memory regions, completion channels and queues, queue
// pairs), so C++ destroys them in the reverse order, which is the order
// verbs requires: a QP before its CQs, CQs before their channels, MRs before
// the PD, and everything before the context.
//
// Threads: an owner is not synchronised; whoever owns it serialises access.
// The QueuePair state moves are called by the transport's control-plane
// paths (EndpointFor, Connect, PeerDied) under the peer's lock.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_RESOURCES_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_RESOURCES_H_

#include <infiniband/verbs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "runtime/base/unique_fd.h"

namespace pagewire {
namespace verbs_internal {

inline std::string ErrnoStr(int e) { return std::strerror(e); }


struct DeviceListDeleter {
  void operator()(ibv_device** list) const { ibv_free_device_list(list); }
};
struct ContextDeleter {
  void operator()(ibv_context* c) const { ibv_close_device(c); }
};
struct ProtectionDomainDeleter {
  void operator()(ibv_pd* pd) const { ibv_dealloc_pd(pd); }
};
struct MemoryRegistrationDeleter {
  void operator()(ibv_mr* mr) const { ibv_dereg_mr(mr); }
};
struct CompletionChannelDeleter {
  void operator()(ibv_comp_channel* ch) const { ibv_destroy_comp_channel(ch); }
};
struct CompletionQueueDeleter {
  void operator()(ibv_cq* cq) const { ibv_destroy_cq(cq); }
};

using DeviceList = std::unique_ptr<ibv_device*, DeviceListDeleter>;
using Context = std::unique_ptr<ibv_context, ContextDeleter>;
using ProtectionDomain = std::unique_ptr<ibv_pd, ProtectionDomainDeleter>;
using MemoryRegistration = std::unique_ptr<ibv_mr, MemoryRegistrationDeleter>;
using CompletionChannel =
    std::unique_ptr<ibv_comp_channel, CompletionChannelDeleter>;
// A CQ bound to a channel must have every event it raised acknowledged
// (ibv_ack_cq_events) before it is destroyed (ibv_destroy_cq waits for
// them); the transport acks the send CQ's events in batches and the rest in
// its destructor, the receive CQ's as soon as it takes them.
using CompletionQueue = std::unique_ptr<ibv_cq, CompletionQueueDeleter>;

// Where an RC QP connects to: the remote QP and how to route to its port.
struct RemoteQp {
  uint32_t qp_num = 0;
  uint32_t psn = 0;  // the remote's send PSN: our receive side expects it
  ibv_gid gid{};
};

// How this side's QP reaches the fabric and how hard the NIC retries.
struct QpPath {
  uint8_t port_num = 1;
  uint8_t sgid_index = 0;
  ibv_mtu mtu = IBV_MTU_1024;
  uint8_t max_rd_atomic = 1;  // READs/atomics in flight, each direction
  // The NIC's transport-level retry (not a fault-path timeout): the ACK
  // timeout is 4.096 us * 2^timeout_exponent, retried retry_count times;
  // then outstanding work completes with IBV_WC_RETRY_EXC_ERR.
  uint8_t timeout_exponent = 14;
  uint8_t retry_count = 7;
  // 7 = retry forever: a receiver that has not re-posted its buffers yet is
  // alive and only slow, so a message is never dropped for it.
  uint8_t rnr_retry = 7;
  uint8_t min_rnr_timer = 12;  // 0.64 ms between receiver-not-ready retries
};

// One reliable-connected queue pair. States move RESET -> INIT -> RTR ->
// RTS through the named functions (rc_pingpong's sequence); ToError flushes
// every outstanding work request with IBV_WC_WR_FLUSH_ERR.
class QueuePair {
 public:
  QueuePair() = default;
  explicit QueuePair(ibv_qp* qp) : qp_(qp) {}
  ~QueuePair() {
    if (qp_ != nullptr) ibv_destroy_qp(qp_);
  }
  QueuePair(QueuePair&& o) noexcept : qp_(o.qp_) { o.qp_ = nullptr; }
  QueuePair& operator=(QueuePair&& o) noexcept {
    if (this != &o) {
      if (qp_ != nullptr) ibv_destroy_qp(qp_);
      qp_ = o.qp_;
      o.qp_ = nullptr;
    }
    return *this;
  }
  QueuePair(const QueuePair&) = delete;
  QueuePair& operator=(const QueuePair&) = delete;

  ibv_qp* get() const { return qp_; }
  uint32_t qp_num() const { return qp_->qp_num; }

  // RESET -> INIT: bound to the port, remote READ/WRITE/atomics allowed.
  absl::Status ToInit(const QpPath& path) {
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_INIT;
    attr.pkey_index = 0;
    attr.port_num = path.port_num;
    attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                           IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
    return Modify(attr,
                  IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                      IBV_QP_ACCESS_FLAGS,
                  "INIT");
  }

  // INIT -> RTR: the remote QP, its PSN and a global route to its GID
  // (RoCE needs is_global with the GRH; there is no LID).
  absl::Status ToReadyToReceive(const QpPath& path, const RemoteQp& remote) {
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_RTR;
    attr.path_mtu = path.mtu;
    attr.dest_qp_num = remote.qp_num;
    attr.rq_psn = remote.psn;
    attr.max_dest_rd_atomic = path.max_rd_atomic;
    attr.min_rnr_timer = path.min_rnr_timer;
    attr.ah_attr.is_global = 1;
    attr.ah_attr.grh.dgid = remote.gid;
    attr.ah_attr.grh.sgid_index = path.sgid_index;
    attr.ah_attr.grh.hop_limit = 1;
    attr.ah_attr.dlid = 0;
    attr.ah_attr.sl = 0;
    attr.ah_attr.src_path_bits = 0;
    attr.ah_attr.port_num = path.port_num;
    return Modify(attr,
                  IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                      IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
                  "RTR");
  }

  // RTR -> RTS: this side's send PSN and the NIC's retry policy.
  absl::Status ToReadyToSend(const QpPath& path, uint32_t send_psn) {
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_RTS;
    attr.timeout = path.timeout_exponent;
    attr.retry_cnt = path.retry_count;
    attr.rnr_retry = path.rnr_retry;
    attr.sq_psn = send_psn;
    attr.max_rd_atomic = path.max_rd_atomic;
    return Modify(attr,
                  IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                      IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                      IBV_QP_MAX_QP_RD_ATOMIC,
                  "RTS");
  }

  // Any state -> ERR: the NIC stops and flushes all posted work.
  absl::Status ToError() {
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_ERR;
    return Modify(attr, IBV_QP_STATE, "ERR");
  }

 private:
  absl::Status Modify(ibv_qp_attr& attr, int mask, const char* state) {
    int rc = ibv_modify_qp(qp_, &attr, mask);
    if (rc != 0) {
      // ibv_modify_qp returns the errno value (and may also set errno).
      return absl::InternalError(absl::StrFormat(
          "ibv_modify_qp(qp %u -> %s): %s", qp_->qp_num, state, ErrnoStr(rc)));
    }
    return absl::OkStatus();
  }

  ibv_qp* qp_ = nullptr;
};

}  // namespace verbs_internal
}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_RESOURCES_H_
