#include "core/retention.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>

namespace dtsd::core {

namespace {

constexpr std::int64_t day_s = 86400;
constexpr std::int64_t longest_s = 3650 * day_s;

std::optional<runtime_status> terminal_status_named(std::string_view name) {
  for (auto status : retained_statuses) {
    if (to_string(status) == name) return status;
  }
  return std::nullopt;
}

nlohmann::json rule_json(const retention_rule& rule) {
  if (rule.forever) return {{"keepForever", true}};
  if (rule.seconds % day_s == 0) return {{"retentionPeriodInDays", rule.seconds / day_s}};
  return {{"retentionPeriodInSeconds", rule.seconds}};
}

expected<retention_rule> rule_of(const nlohmann::json& entry, const std::string& which) {
  const bool forever = entry.value("keepForever", false);
  const bool days = entry.contains("retentionPeriodInDays"), seconds = entry.contains("retentionPeriodInSeconds");
  if (forever + days + seconds != 1) {
    return error{errc::invalid_argument, fmt::format("the retention rule for {} needs one of retentionPeriodInDays, "
                                                     "retentionPeriodInSeconds or keepForever",
                                                     which)};
  }
  if (forever) return retention_rule{true, 0};
  const auto& period = days ? entry["retentionPeriodInDays"] : entry["retentionPeriodInSeconds"];
  if (!period.is_number()) {
    return error{errc::invalid_argument, fmt::format("the retention period for {} is not a number", which)};
  }
  const double value = period.get<double>() * (days ? day_s : 1);
  if (!(value >= 0) || value > static_cast<double>(longest_s)) {
    return error{errc::invalid_argument,
                 fmt::format("the retention period for {} must be between 0 and 3650 days", which)};
  }
  return retention_rule{false, static_cast<std::int64_t>(std::llround(value))};
}

}  // namespace

expected<std::int64_t> parse_duration(std::string_view text) {
  std::int64_t count = 0;
  auto [end, failed] = std::from_chars(text.data(), text.data() + text.size(), count);
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  const std::int64_t scale = unit == "d" ? day_s : unit == "h" ? 3600 : unit == "m" ? 60 : unit == "s" ? 1 : 0;
  if (failed != std::errc{} || end == text.data() || scale == 0 || count < 0 || count > longest_s / scale) {
    return error{errc::invalid_argument,
                 fmt::format("'{}' is not a duration: expected a count and d, h, m or s (30d, 12h, 0s)", text)};
  }
  return count * scale;
}

std::string format_duration(std::int64_t seconds) {
  if (seconds != 0 && seconds % day_s == 0) return fmt::format("{}d", seconds / day_s);
  if (seconds != 0 && seconds % 3600 == 0) return fmt::format("{}h", seconds / 3600);
  if (seconds != 0 && seconds % 60 == 0) return fmt::format("{}m", seconds / 60);
  return fmt::format("{}s", seconds);
}

std::optional<std::int64_t> retention_policy::keep_s(runtime_status status) const {
  if (!is_terminal(status)) return std::nullopt;
  auto own = by_status.find(status);
  const auto* rule = own != by_status.end() ? &own->second : fallback ? &*fallback : nullptr;
  if (!rule || rule->forever) return std::nullopt;
  return rule->seconds;
}

bool retention_policy::purges() const {
  for (auto status : retained_statuses) {
    if (keep_s(status)) return true;
  }
  return false;
}

std::string to_json(const retention_policy& policy) {
  auto rules = nlohmann::json::array();
  if (policy.fallback) rules.push_back(rule_json(*policy.fallback));
  for (auto status : retained_statuses) {
    auto own = policy.by_status.find(status);
    if (own == policy.by_status.end()) continue;
    auto rule = rule_json(own->second);
    rule["orchestrationState"] = std::string(to_string(status));
    rules.push_back(std::move(rule));
  }
  return nlohmann::json{{"retentionPolicies", std::move(rules)}}.dump();
}

expected<retention_policy> retention_from_json(std::string_view text) {
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("retentionPolicies") ||
      !parsed["retentionPolicies"].is_array()) {
    return error{errc::invalid_argument,
                 "a retention policy is a JSON object with a list \"retentionPolicies\", e.g. "
                 "{\"retentionPolicies\": [{\"retentionPeriodInDays\": 30}]}"};
  }
  retention_policy policy;
  for (const auto& entry : parsed["retentionPolicies"]) {
    if (!entry.is_object()) return error{errc::invalid_argument, "each retention rule is a JSON object"};
    if (!entry.contains("orchestrationState")) {
      if (policy.fallback) return error{errc::invalid_argument, "two retention rules without an orchestrationState"};
      auto rule = rule_of(entry, "every status");
      if (!rule) return rule.error();
      policy.fallback = *rule;
      continue;
    }
    const auto& state = entry["orchestrationState"];
    auto status = state.is_string() ? terminal_status_named(state.get<std::string>()) : std::nullopt;
    if (!status) {
      return error{errc::invalid_argument, fmt::format("orchestrationState {} is not one of Completed, Failed, "
                                                       "Canceled, Terminated (only ended orchestrations are purged)",
                                                       state.dump())};
    }
    auto rule = rule_of(entry, std::string(to_string(*status)));
    if (!rule) return rule.error();
    if (!policy.by_status.emplace(*status, *rule).second) {
      return error{errc::invalid_argument, fmt::format("two retention rules for {}", to_string(*status))};
    }
  }
  return policy;
}

std::string describe(const retention_policy& policy) {
  auto rule_text = [](const retention_rule& rule) { return rule.forever ? std::string("forever") : format_duration(rule.seconds); };
  std::string out = "default " + (policy.fallback ? rule_text(*policy.fallback) : std::string("forever"));
  for (auto status : retained_statuses) {
    auto own = policy.by_status.find(status);
    if (own != policy.by_status.end()) out += fmt::format(", {} {}", to_string(status), rule_text(own->second));
  }
  return out;
}

}  // namespace dtsd::core
