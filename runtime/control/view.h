// view.h - a membership view as the runtime sees it: an epoch and every
// rank that ever joined the job, with its state and endpoint.
//
// Epochs increase strictly; every member receives the same sequence of
// views. A View is a plain value: copy it freely, from any thread.
#ifndef PAGEWIRE_RUNTIME_CONTROL_VIEW_H_
#define PAGEWIRE_RUNTIME_CONTROL_VIEW_H_

#include <cstdint>
#include <string>
#include <vector>

#include "proto/control_plane.pb.h"

namespace pagewire::control {

using MemberState = proto::Member::State;

struct ViewMember {
  int rank = -1;
  MemberState state = proto::Member::JOINING;
  proto::Endpoint endpoint;
  std::string reason;  // why it is SUSPECT, DEAD or LEFT
};

struct View {
  uint64_t epoch = 0;
  std::vector<ViewMember> members;  // sorted by rank

  static View FromProto(const proto::MembershipView& view);

  // The member with `rank`, or nullptr if it never joined.
  const ViewMember* Find(int rank) const;
  // How many members are in `state`.
  int Count(MemberState state) const;
  // "epoch 5: 0 ALIVE, 1 ALIVE, 2 DEAD" for logs and test failures.
  std::string Describe() const;
};

const char* MemberStateName(MemberState state);

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_VIEW_H_
