#pragma once
/// Payload limits. As DTS: 1 MiB each by default, configurable per server.

#include <cstddef>
#include <string_view>

#include "error.hpp"
#include "model.hpp"

namespace dtsd::core {

inline constexpr std::size_t payload_bytes_default = 1024 * 1024;

struct payload_limits {
  std::size_t orchestration_input_bytes_max = payload_bytes_default;
  std::size_t orchestration_output_bytes_max = payload_bytes_default;
  std::size_t activity_input_bytes_max = payload_bytes_default;
  std::size_t activity_output_bytes_max = payload_bytes_default;
  std::size_t event_data_bytes_max = payload_bytes_default;
  std::size_t custom_status_bytes_max = payload_bytes_default;
  std::size_t entity_state_bytes_max = payload_bytes_default;
};

/// Fails with invalid_argument naming `field`, the size and the limit when `value`
/// is larger than `bytes_max`. A null payload always passes.
expected<void> check_payload(std::string_view field, const payload& value,
                             std::size_t bytes_max);

}  // namespace dtsd::core
