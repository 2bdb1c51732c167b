#include "limits.hpp"

#include <fmt/format.h>

namespace dtsd::core {

expected<void> check_payload(std::string_view field, const payload& value,
                             std::size_t bytes_max) {
  if (!value || value->size() <= bytes_max) return {};
  return error{errc::invalid_argument,
               fmt::format("{} is {} bytes, over the limit of {} bytes", field, value->size(),
                           bytes_max)};
}

}  // namespace dtsd::core
