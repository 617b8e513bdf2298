// dataspace.h - memory that a manager provides page by page, on request.
//
// A Dataspace is the unit that region maps attach. Its manager answers page
// requests asynchronously: RequestPage() must return without waiting for the
// page (it may answer inline if it has the page at hand) and must post
// exactly one completion per request, whatever happens. A manager that needs
// a nested dataspace (another manager, perhaps on another node) forwards the
// request and never blocks its own service loop on the nested answer.
//
// Threads: RequestPage() is called by the fault service's loop; the
// completion may be posted from any thread.
#ifndef PAGEWIRE_RUNTIME_MEMORY_DATASPACE_H_
#define PAGEWIRE_RUNTIME_MEMORY_DATASPACE_H_

#include <cstdint>
#include <string>

#include "runtime/fault/pager.h"

namespace pagewire {

class RegionMap;

// A dataspace is a Pager (size, RequestPage, Describe) that region maps
// can attach.
class Dataspace : public Pager {
 public:
  // Non-null when this dataspace is a region map (a managed dataspace).
  virtual RegionMap* AsRegionMap() { return nullptr; }
};
}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_MEMORY_DATASPACE_H_
