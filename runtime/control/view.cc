// view.cc - View helpers.
#include "runtime/control/view.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pagewire::control {

View View::FromProto(const proto::MembershipView& view) {
  View out;
  out.epoch = view.epoch();
  out.members.reserve(view.members_size());
  for (const proto::Member& m : view.members()) {
    out.members.push_back(
        ViewMember{m.rank(), m.state(), m.endpoint(), m.reason()});
  }
  std::sort(out.members.begin(), out.members.end(),
            [](const ViewMember& a, const ViewMember& b) {
              return a.rank < b.rank;
            });
  return out;
}

const ViewMember* View::Find(int rank) const {
  for (const ViewMember& m : members) {
    if (m.rank == rank) return &m;
  }
  return nullptr;
}

int View::Count(MemberState state) const {
  return static_cast<int>(
      std::count_if(members.begin(), members.end(),
                    [state](const ViewMember& m) { return m.state == state; }));
}

std::string View::Describe() const {
  std::string s = absl::StrCat("epoch ", epoch, ":");
  for (const ViewMember& m : members) {
    absl::StrAppend(&s, " ", m.rank, " ", MemberStateName(m.state));
  }
  return s;
}

const char* MemberStateName(MemberState state) {
  switch (state) {
    case proto::Member::JOINING: return "JOINING";
    case proto::Member::ALIVE: return "ALIVE";
    case proto::Member::SUSPECT: return "SUSPECT";
    case proto::Member::DEAD: return "DEAD";
    case proto::Member::LEFT: return "LEFT";
    default: return "UNKNOWN";
  }
}

}  // namespace pagewire::control
