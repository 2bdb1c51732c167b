#include "error.hpp"

namespace dtsd {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::already_exists: return "already_exists";
    case errc::failed_precondition: return "failed_precondition";
    case errc::stale_token: return "stale_token";
    case errc::duplicate: return "duplicate";
    case errc::corrupt: return "corrupt";
    case errc::io: return "io";
    case errc::unimplemented: return "unimplemented";
    case errc::payload_too_large: return "payload_too_large";
    case errc::resource_exhausted: return "resource_exhausted";
    case errc::unknown_task_hub: return "unknown_task_hub";
    case errc::unavailable: return "unavailable";
    case errc::unauthenticated: return "unauthenticated";
    case errc::permission_denied: return "permission_denied";
  }
  return "unknown";
}

}  // namespace dtsd
