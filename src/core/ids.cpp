#include "ids.hpp"

#include <fmt/format.h>
#include <xxhash.h>

namespace dtsd::core {
namespace {

bool is_printable_ascii(char c) { return c >= 0x20 && c <= 0x7e; }

expected<void> validate_id_characters(std::string_view id) {
  if (id.empty()) return error{errc::invalid_argument, "instance id must not be empty"};
  if (id.size() > instance_id_length_max) {
    return error{errc::invalid_argument,
                 fmt::format("instance id is {} characters long, over the limit of {}",
                             id.size(), instance_id_length_max)};
  }
  for (std::size_t i = 0; i < id.size(); ++i) {
    if (!is_printable_ascii(id[i])) {
      return error{errc::invalid_argument,
                   fmt::format("instance id has a non-printable or non-ASCII character "
                               "(byte 0x{:02x}) at position {}",
                               static_cast<unsigned char>(id[i]), i)};
    }
  }
  return {};
}

}  // namespace

expected<void> validate_orchestration_id(std::string_view id) {
  if (auto valid = validate_id_characters(id); !valid) return valid;
  if (is_entity_id(id)) {
    return error{errc::invalid_argument,
                 fmt::format("instance id '{}' starts with '@', which is reserved for "
                             "entities",
                             id)};
  }
  return {};
}

expected<void> validate_instance_id(std::string_view id) {
  if (auto valid = validate_id_characters(id); !valid) return valid;
  if (!is_entity_id(id)) return {};
  auto separator = id.find('@', 1);
  if (separator == std::string_view::npos || separator == 1) {
    return error{errc::invalid_argument,
                 fmt::format("entity id '{}' must have the form @name@key", id)};
  }
  return {};
}

expected<void> validate_task_hub_name(std::string_view name) {
  if (name.empty()) return error{errc::invalid_argument, "task hub name must not be empty"};
  if (name.size() > task_hub_name_length_max) {
    return error{errc::invalid_argument,
                 fmt::format("task hub name is {} characters long, over the limit of {}",
                             name.size(), task_hub_name_length_max)};
  }
  auto is_alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!is_alnum(name.front())) {
    return error{errc::invalid_argument,
                 fmt::format("task hub name '{}' must start with a letter or digit", name)};
  }
  for (char c : name) {
    if (!is_alnum(c) && c != '-' && c != '_') {
      return error{errc::invalid_argument,
                   fmt::format("task hub name '{}' may contain only letters, digits, '-' "
                               "and '_'",
                               name)};
    }
  }
  return {};
}

std::string derive_execution_id(std::string_view base, std::string_view salt) {
  std::string input(base);
  input.push_back('\0');
  input.append(salt);
  auto high = XXH64(input.data(), input.size(), 0x6474736431ull);
  auto low = XXH64(input.data(), input.size(), 0x6474736432ull);
  return fmt::format("{:016x}{:016x}", high, low);
}

std::uint32_t partition_of(std::string_view instance_id, std::uint32_t partition_count) {
  assert(partition_count > 0);
  return static_cast<std::uint32_t>(XXH64(instance_id.data(), instance_id.size(), 0) %
                                    partition_count);
}

std::string entity_name(std::string_view entity_id) {
  if (entity_id.size() < 2 || entity_id.front() != '@') return {};
  const auto end = entity_id.find('@', 1);
  return std::string(entity_id.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1));
}

}  // namespace dtsd::core
