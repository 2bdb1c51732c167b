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

/// Names (of orchestrations, activities, events, entity operations) and tags are
/// bounded too: they are stored with every instance and listed with every query.
inline constexpr std::size_t name_length_max = 256;
inline constexpr std::size_t tag_count_max = 64;
inline constexpr std::size_t tag_key_length_max = 256;
inline constexpr std::size_t tag_value_length_max = 1024;

/// Fails with invalid_argument naming `field` when `name` is longer than name_length_max.
expected<void> check_name(std::string_view field, std::string_view name);
/// Fails with invalid_argument naming `field` when `tags` break a bound above.
expected<void> check_tags(std::string_view field, const tag_map& tags);

/// Fails with invalid_argument naming `field`, the size and the limit when `value`
/// is larger than `bytes_max`. A null payload always passes.
expected<void> check_payload(std::string_view field, const payload& value,
                             std::size_t bytes_max);

/// A worker's answer with a payload over its limit cannot be stored, and a worker
/// would send the same answer again on every retry: rather than refusing it (the
/// instance would wait, or loop, forever), the answer becomes a failure that names
/// the field, its size and the limit. An activity result becomes a task failure
/// the orchestration sees and may handle; an orchestrator's answer (its output,
/// custom status or any action's payload) fails the orchestration. Returns the
/// reason when it changed the answer. Entity batches are left alone (their state
/// limit is checked where the batch is applied).
std::optional<error> fail_oversize(activity_result& result, const payload_limits& limits);
std::optional<error> fail_oversize(orchestrator_completion& completion, const payload_limits& limits);

/// The failure type of such an answer.
inline constexpr std::string_view payload_too_large_type = "PayloadTooLarge";

}  // namespace dtsd::core
