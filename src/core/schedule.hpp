#pragma once
/// Schedules: a schedule starts an orchestration at each of its slots, the times an
/// interval or a cron expression (in a time zone) gives between an optional start
/// and end. Each slot's run has an instance id made from the schedule id and the
/// slot time, so a slot can start at most one run, whatever crashes.
///
/// A schedule lives in the partition of `schedule_address(id)`, in that partition's
/// store; the partition fires its slots from its own clock and sends each run's
/// start through its outbox, in the same batch that records the slot as fired.
/// What happens to slots that pass while dtsd is down (catch-up) and to a slot due
/// while the previous run still runs (overlap) is the schedule's policy.

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "core/model.hpp"

namespace dtsd::core {

/// A cron expression: five fields (minute hour day-of-month month day-of-week) or
/// six with seconds first (NCRONTAB, as Azure Functions writes them). A field is
/// `*`, `?`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of
/// those; months and weekdays may be named (JAN, MON); weekday 0 and 7 are Sunday.
/// When both day fields are restricted a day matching either matches (as cron).
class cron_expression {
 public:
  static expected<cron_expression> parse(std::string_view text);
  /// The first matching local wall-clock time (seconds since 1970-01-01T00:00 local)
  /// strictly after `after_local_s`; nothing within the next ten years.
  std::optional<std::int64_t> next_local(std::int64_t after_local_s) const;
  const std::string& text() const { return text_; }

 private:
  bool matches_day(std::int64_t days_since_epoch) const;
  std::bitset<60> seconds_, minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;
  std::bitset<13> months_;
  std::bitset<7> weekdays_;
  bool any_day_ = true, any_weekday_ = true;
  std::string text_;
};

/// A slot due while the schedule's previous run has not ended.
enum class overlap_policy : std::uint8_t {
  skip,        ///< Not run (counted as skipped).
  buffer_one,  ///< Run when the previous run ends; a later slot replaces it.
  allow_all,   ///< Run at once, beside the previous run.
};
/// Slots that passed unseen (dtsd was down or the schedule's partition was moving),
/// found when the schedule is looked at again.
enum class catch_up_policy : std::uint8_t {
  one,   ///< The latest of them runs, once.
  all,   ///< Each runs, oldest first, up to catch_up_max of the latest.
  skip,  ///< None runs; only a slot due within the last minute is run.
};
std::string_view to_string(overlap_policy policy);
std::string_view to_string(catch_up_policy policy);

/// A slot counts as on time for this long after it was due; older ones passed unseen.
inline constexpr std::int64_t schedule_grace_ns = 60'000'000'000;

struct schedule_spec {
  std::string id;  ///< 1..64 of [A-Za-z0-9_.-]
  std::string orchestration;
  payload version;
  payload input;
  /// The run's instance id: "{schedule}" and "{slot}" (the slot as 20261201T210000Z;
  /// a triggered run's time with milliseconds, 20261201T210003.250Z) are replaced;
  /// it must contain "{slot}". Empty: "{schedule}-{slot}".
  std::string instance_id_template;
  std::int64_t interval_s = 0;  ///< Every this many seconds, counted from start_ns (or the epoch); or
  std::string cron;             ///< a cron expression, read in
  std::string time_zone = "UTC";  ///< an IANA zone (Europe/Berlin).
  std::int64_t start_ns = 0;  ///< No slot before this (0: none).
  std::int64_t end_ns = 0;    ///< No slot after this (0: none).
  overlap_policy overlap = overlap_policy::skip;
  catch_up_policy catch_up = catch_up_policy::one;
  std::uint32_t catch_up_max = 100;
  bool operator==(const schedule_spec&) const = default;
};

struct schedule_state {
  bool paused = false;
  std::string note;  ///< Why it was paused.
  std::int64_t created_ns = 0;
  std::int64_t updated_ns = 0;
  std::int64_t next_slot_ns = 0;  ///< The next slot not looked at yet; 0: none left (past its end).
  std::int64_t last_slot_ns = 0;  ///< The slot of the last run started (0: none yet).
  std::string last_instance_id;
  bool last_running = false;  ///< The last run has not reported its end.
  std::string last_status;    ///< What it reported: a runtime status, or "StartFailed".
  std::int64_t buffered_slot_ns = 0;  ///< A slot waiting for the last run to end (0: none).
  std::uint64_t runs = 0;     ///< Runs started.
  std::uint64_t skipped = 0;  ///< Slots not run because the previous run still ran.
  std::uint64_t missed = 0;   ///< Slots that passed unseen and that the catch-up policy dropped.
  bool operator==(const schedule_state&) const = default;
};

struct schedule {
  schedule_spec spec;
  schedule_state state;
  bool operator==(const schedule&) const = default;
};

/// What a client asks of a schedule (list: every schedule of the partition).
struct schedule_command {
  enum class verb : std::uint8_t { create, update, remove, pause, resume, trigger, get, list };
  verb what = verb::get;
  std::string id;
  std::optional<schedule_spec> spec;  ///< create, update
  std::string note;                   ///< pause: why
  bool operator==(const schedule_command&) const = default;
};
std::string_view to_string(schedule_command::verb verb);

expected<void> validate_schedule_id(std::string_view id);
/// Checks everything: the id, a name, exactly one of interval and cron, a known
/// time zone, the template, start before end.
expected<void> validate(const schedule_spec& spec);

/// The partition key of a schedule and the instance id its runs report their end
/// to: "@@" + id, which no orchestration or entity can have.
std::string schedule_address(std::string_view schedule_id);
/// The schedule id of an address; nothing when `instance_id` is not one.
std::optional<std::string_view> schedule_of_address(std::string_view instance_id);
/// The tag a run carries: its schedule's id (and "dtsd.slot": its slot).
inline constexpr std::string_view schedule_tag = "dtsd.schedule";
inline constexpr std::string_view slot_tag = "dtsd.slot";

/// What a run tells its schedule when it ended (`status`: its runtime status) or
/// could not start ("StartFailed"): an EventRaised named after the run's id.
instance_message run_ended_report(std::string_view schedule_id, std::string_view run_instance_id,
                                  std::string_view status, std::int64_t now_ns);

/// The first slot strictly after `after_ns`; nothing when none is left.
std::optional<std::int64_t> next_slot(const schedule_spec& spec, std::int64_t after_ns);
/// The run's instance id for a slot, or for a run triggered by hand at `slot_ns`
/// (its time to the millisecond, so that it is never a slot's id).
std::string slot_instance_id(const schedule_spec& spec, std::int64_t slot_ns, bool triggered = false);
/// 2026-12-01T21:00:00Z (UTC, whole seconds).
std::string format_time(std::int64_t ns);
/// RFC 3339 ("2026-12-01T21:00:00Z", "2026-12-01T22:00:00+01:00") -> ns.
expected<std::int64_t> parse_time(std::string_view text);

/// Slots from `first_ns` (a slot) up to `now_ns`: how many, and the latest
/// `keep` of them, oldest first.
struct due_slots {
  std::uint64_t count = 0;
  std::vector<std::int64_t> latest;
};
due_slots slots_due(const schedule_spec& spec, std::int64_t first_ns, std::int64_t now_ns, std::size_t keep);

/// Which due slots run (the rest are missed), by the catch-up policy.
std::vector<std::int64_t> slots_to_run(const schedule_spec& spec, const due_slots& due, std::int64_t now_ns);

/// JSON, as clients give a schedule: {"scheduleId", "orchestrationName",
/// "orchestrationInput" (the input's JSON text), "orchestrationVersion",
/// "instanceIdTemplate", "interval" ("90s", "1h") or "intervalSeconds", "cron",
/// "timeZone", "startAt", "endAt" (RFC 3339), "overlapPolicy" (Skip, BufferOne,
/// AllowAll), "catchUpPolicy" (One, All, Skip), "catchUpMax"}.
expected<schedule_spec> schedule_spec_from_json(std::string_view text);
std::string to_json(const schedule_spec& spec);
/// A schedule with its state: the spec's fields and "state" (what the store keeps
/// and what clients read: times as ns and as RFC 3339).
std::string to_json(const schedule& schedule);
expected<schedule> schedule_from_json(std::string_view text);
std::string to_json(const std::vector<schedule>& schedules);
expected<std::vector<schedule>> schedules_from_json(std::string_view text);
std::string to_json(const schedule_command& command);
expected<schedule_command> schedule_command_from_json(std::string_view text);

}  // namespace dtsd::core
