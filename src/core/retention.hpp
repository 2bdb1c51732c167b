#pragma once
/// Retention of ended orchestrations (DTS's autopurge): how long an instance that
/// reached a terminal status (Completed, Failed, Canceled, Terminated) is kept,
/// counted from when it reached it, before its partition purges it. A policy has a
/// rule for every terminal status without one of its own, and rules per status;
/// each rule keeps for a number of seconds (0: purge as soon as possible) or for
/// ever. JSON as DTS writes its policies ("retentionPeriodInDays", an optional
/// "orchestrationState"), with seconds and "keepForever" besides.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "core/model.hpp"

namespace dtsd::core {

/// "30d", "12h", "45m", "10s", "0s" -> seconds (at most ten years).
expected<std::int64_t> parse_duration(std::string_view text);
/// Seconds in the largest unit that divides them: 86400 -> "1d", 5400 -> "90m".
std::string format_duration(std::int64_t seconds);

struct retention_rule {
  bool forever = false;
  std::int64_t seconds = 0;  ///< When not forever.
  bool operator==(const retention_rule&) const = default;
};

struct retention_policy {
  /// Every terminal status without a rule of its own; none: kept for ever.
  std::optional<retention_rule> fallback;
  std::map<runtime_status, retention_rule> by_status;

  /// How long an instance that ended with `status` is kept; nothing: for ever
  /// (also for any status that is not terminal).
  std::optional<std::int64_t> keep_s(runtime_status status) const;
  /// Whether any terminal status is ever purged.
  bool purges() const;
  bool operator==(const retention_policy&) const = default;
};

/// The terminal statuses a policy speaks of, in DTS's order.
inline constexpr runtime_status retained_statuses[] = {runtime_status::completed, runtime_status::failed,
                                                      runtime_status::canceled, runtime_status::terminated};

/// {"retentionPolicies": [{"retentionPeriodInDays": 30}, {"orchestrationState": "Failed", "keepForever": true}]}
std::string to_json(const retention_policy& policy);
/// The same back; errc::invalid_argument naming what is wrong (an unknown or
/// non-terminal status, a negative or missing period, two rules for one status).
expected<retention_policy> retention_from_json(std::string_view text);

/// "default 30d, Completed 1d, Failed forever" (for logs and dtsctl).
std::string describe(const retention_policy& policy);

}  // namespace dtsd::core
