#pragma once
/// Instance ids, task hub names and the partition function.

#include <cstdint>
#include <string>
#include <string_view>

#include "error.hpp"

namespace dtsd::core {

inline constexpr std::size_t instance_id_length_max = 100;
inline constexpr std::size_t task_hub_name_length_max = 64;
inline constexpr std::uint32_t partition_count_max = 1024;

/// An orchestration instance id: 1..100 printable ASCII characters, not starting
/// with `@` (reserved for entities, `@name@key`).
expected<void> validate_orchestration_id(std::string_view id);

/// Any instance id, orchestration or entity. Entity ids have the form `@name@key`
/// with a non-empty name.
expected<void> validate_instance_id(std::string_view id);

inline bool is_entity_id(std::string_view id) { return !id.empty() && id.front() == '@'; }

/// The "name" of "@name@key" (empty when `entity_id` is not one).
std::string entity_name(std::string_view entity_id);

/// Task hub names become directory names: 1..64 characters of [A-Za-z0-9_-],
/// starting with a letter or digit.
expected<void> validate_task_hub_name(std::string_view name);

/// A 32-hex execution id derived from `base` and `salt`, for executions the state
/// machine creates itself (sub-orchestrations, continue-as-new): deriving instead of
/// drawing keeps replay of the partition log deterministic.
std::string derive_execution_id(std::string_view base, std::string_view salt);

/// The partition that owns an instance: xxh64(id, seed 0) mod partition_count.
/// Part of the on-disk format: never change it.
std::uint32_t partition_of(std::string_view instance_id, std::uint32_t partition_count);

}  // namespace dtsd::core
