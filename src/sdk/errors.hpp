#pragma once
/// Turning the exceptions of the native API back into dtsd errors.

#include <kj/exception.h>

#include <string>

#include "core/error.hpp"

namespace dtsd::sdk {

/// The server sends "<code>: <message>"; Cap'n Proto may add a "remote exception: "
/// prefix. Anything else (a broken connection) is an I/O error.
inline dtsd::error error_of_text(std::string text) {
  const std::string remote = "remote exception: ";
  if (text.rfind(remote, 0) == 0) text.erase(0, remote.size());
  static const std::pair<const char*, errc> codes[] = {
      {"invalid_argument", errc::invalid_argument}, {"not_found", errc::not_found},
      {"already_exists", errc::already_exists},     {"failed_precondition", errc::failed_precondition},
      {"stale_token", errc::stale_token},           {"duplicate", errc::duplicate},
      {"corrupt", errc::corrupt},                   {"io", errc::io},
      {"unimplemented", errc::unimplemented},       {"payload_too_large", errc::payload_too_large},
      {"resource_exhausted", errc::resource_exhausted}, {"unknown_task_hub", errc::unknown_task_hub},
      {"unavailable", errc::unavailable},           {"unauthenticated", errc::unauthenticated},
      {"permission_denied", errc::permission_denied}};
  for (const auto& [name, code] : codes) {
    std::string prefix = std::string(name) + ": ";
    if (text.rfind(prefix, 0) == 0) return {code, text.substr(prefix.size())};
  }
  return {errc::io, text};
}

inline dtsd::error error_of(const kj::Exception& failure) { return error_of_text(failure.getDescription().cStr()); }

}  // namespace dtsd::sdk
