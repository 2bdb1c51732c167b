#include "store/kv.hpp"

namespace dtsd::store {

const char* table_name(table t) {
  switch (t) {
    case table::meta: return "meta";
    case table::log: return "log";
    case table::instances: return "instances";
    case table::history: return "history";
    case table::inbox: return "inbox";
    case table::timers: return "timers";
    case table::activities: return "activities";
    case table::outbox: return "outbox";
    case table::dedup: return "dedup";
    case table::entities: return "entities";
    case table::by_status: return "by_status";
    case table::by_created: return "by_created";
  }
  return "unknown";
}

}  // namespace dtsd::store
