#include "work_filter.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "error.hpp"

namespace dtsd::core {
namespace {

bool same_name(std::string_view a, std::string_view b, bool ignore_case) {
  if (!ignore_case) return a == b;
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

expected<void> validate_kind(const kind_filter& filter, std::string_view kind) {
  if (!filter) return {};
  if (filter->size() > filter_names_max) {
    return error{errc::invalid_argument,
                 fmt::format("work item filters name {} {}: at most {}", filter->size(), kind, filter_names_max)};
  }
  for (const auto& entry : *filter) {
    if (entry.name.empty()) {
      return error{errc::invalid_argument, fmt::format("a work item filter for {} has an empty name", kind)};
    }
    if (entry.versions.size() > filter_versions_max) {
      return error{errc::invalid_argument, fmt::format("the work item filter for {} '{}' lists {} versions: at most {}",
                                                       kind, entry.name, entry.versions.size(), filter_versions_max)};
    }
  }
  return {};
}

}  // namespace

bool accepts(const kind_filter& filter, std::string_view name, const payload& version, filter_kind kind) {
  if (!filter) return true;
  const std::string_view asked = version ? std::string_view(*version) : std::string_view();
  const bool entity = kind == filter_kind::entity;
  const bool any_version = entity || (kind == filter_kind::activity && asked.empty());
  return std::any_of(filter->begin(), filter->end(), [&](const name_filter& entry) {
    if (!same_name(entry.name, name, entity)) return false;
    if (any_version || entry.versions.empty()) return true;
    return std::find(entry.versions.begin(), entry.versions.end(), asked) != entry.versions.end();
  });
}

void widen(kind_filter& into, const kind_filter& more) {
  if (!into) return;
  if (!more) {
    into.reset();
    return;
  }
  into->insert(into->end(), more->begin(), more->end());
}

expected<void> validate(const work_filters& filters) {
  if (auto valid = validate_kind(filters.orchestrations, "orchestrations"); !valid) return valid;
  if (auto valid = validate_kind(filters.activities, "activities"); !valid) return valid;
  return validate_kind(filters.entities, "entities");
}

std::string describe(const kind_filter& filter) {
  if (!filter) return "*";
  if (filter->empty()) return "-";
  std::string out;
  for (const auto& entry : *filter) {
    if (!out.empty()) out += ", ";
    out += entry.name;
    if (!entry.versions.empty()) out += "@" + fmt::format("{}", fmt::join(entry.versions, "|"));
  }
  return out;
}

}  // namespace dtsd::core
