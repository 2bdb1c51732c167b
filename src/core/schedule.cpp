#include "core/schedule.hpp"

#include <date/date.h>
#include <date/tz.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <deque>
#include <sstream>

#include "core/ids.hpp"
#include "core/retention.hpp"

namespace dtsd::core {

namespace {

constexpr std::int64_t ns_per_s = 1'000'000'000;
constexpr std::int64_t day_s = 86400;
constexpr std::int64_t search_days = 3660;  // Ten years and the leap days in them.
constexpr std::string_view default_template = "{schedule}-{slot}";
constexpr std::int64_t interval_s_max = 3650 * day_s;
/// Slots walked one by one from the first due, before the walk jumps to the last day.
constexpr std::uint64_t due_walk_max = 100'000;

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string upper(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

constexpr std::string_view month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::string_view weekday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

struct field_range {
  std::string_view name;
  int low, high;
  bool months = false, weekdays = false;
};

expected<int> field_value(std::string_view text, const field_range& range) {
  const auto named = upper(text);
  if (range.months) {
    for (int i = 0; i < 12; ++i) {
      if (named == month_names[i]) return i + 1;
    }
  }
  if (range.weekdays) {
    for (int i = 0; i < 7; ++i) {
      if (named == weekday_names[i]) return i;
    }
  }
  int value = 0;
  if (text.empty() || text.size() > 4 || !std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    return invalid(fmt::format("'{}' in the {} field is not a number", text, range.name));
  }
  for (char c : text) value = value * 10 + (c - '0');
  if (value < range.low || value > range.high) {
    return invalid(fmt::format("{} in the {} field is out of {}-{}", value, range.name, range.low, range.high));
  }
  return value;
}

/// Sets the bits a field names; answers whether it was a wildcard.
template <std::size_t N>
expected<bool> parse_field(std::string_view field, const field_range& range, std::bitset<N>& bits) {
  if (field == "*" || field == "?") {
    for (int v = range.low; v <= range.high; ++v) bits.set(static_cast<std::size_t>(v % static_cast<int>(N)));
    return true;
  }
  std::size_t start = 0;
  while (start <= field.size()) {
    auto comma = field.find(',', start);
    auto part = field.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    start = comma == std::string_view::npos ? field.size() + 1 : comma + 1;
    if (part.empty()) return invalid(fmt::format("the {} field '{}' has an empty list item", range.name, field));
    int step = 1;
    if (auto slash = part.find('/'); slash != std::string_view::npos) {
      auto stepped = field_value(part.substr(slash + 1), field_range{range.name, 1, range.high});
      if (!stepped) return stepped.error();
      step = *stepped;
      part = part.substr(0, slash);
    }
    int low = range.low, high = range.high;
    if (part != "*" && part != "?") {
      auto dash = part.find('-');
      auto first = field_value(part.substr(0, dash), range);
      if (!first) return first.error();
      low = *first;
      if (dash != std::string_view::npos) {
        auto last = field_value(part.substr(dash + 1), range);
        if (!last) return last.error();
        high = *last;
        if (high < low) return invalid(fmt::format("the range '{}' in the {} field runs backwards", part, range.name));
      } else if (step == 1) {
        high = low;  // A single value; "5/15" means 5 and every 15th after it.
      }
    }
    for (int v = low; v <= high; v += step) bits.set(static_cast<std::size_t>(v % static_cast<int>(N)));
  }
  return false;
}

const date::time_zone* find_zone(const std::string& name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    return nullptr;
  }
}

/// 20261201T210000Z; with milliseconds (a triggered run's), 20261201T210000.250Z.
std::string compact_time(std::int64_t ns, bool millis) {
  const auto seconds = floor_div(ns, ns_per_s);
  const date::sys_seconds at{std::chrono::seconds{seconds}};
  if (!millis) return date::format("%Y%m%dT%H%M%SZ", at);
  return date::format("%Y%m%dT%H%M%S", at) + fmt::format(".{:03}Z", (ns - seconds * ns_per_s) / 1'000'000);
}

std::optional<std::int64_t> next_cron_slot(const schedule_spec& spec, const cron_expression& cron,
                                           const date::time_zone* zone, std::int64_t after_ns) {
  const auto after_s = floor_div(after_ns, ns_per_s);
  auto local = zone->to_local(date::sys_seconds{std::chrono::seconds{after_s}}).time_since_epoch().count();
  // Local times that fall into a gap (the clocks jumped forward) run at the gap's
  // end; a time that happens twice (the clocks went back) runs at its first
  // occurrence only. Either way a slot is later than the one before.
  for (int tries = 0; tries < 100000; ++tries) {
    auto candidate = cron.next_local(local);
    if (!candidate) return std::nullopt;
    local = *candidate;
    const date::local_seconds at{std::chrono::seconds{local}};
    const auto info = zone->get_info(at);
    std::int64_t utc = 0;
    if (info.result == date::local_info::nonexistent) {
      utc = info.second.begin.time_since_epoch().count();
    } else {
      utc = local - info.first.offset.count();
    }
    if (utc <= after_s) continue;
    if (spec.end_ns != 0 && utc * ns_per_s > spec.end_ns) return std::nullopt;
    return utc * ns_per_s;
  }
  return std::nullopt;
}

template <class E>
std::optional<E> enum_named(std::string_view name, std::initializer_list<E> values) {
  for (auto value : values) {
    if (upper(to_string(value)) == upper(name)) return value;
  }
  return std::nullopt;
}

std::optional<schedule_command::verb> verb_named(std::string_view name) {
  using v = schedule_command::verb;
  return enum_named(name, {v::create, v::update, v::remove, v::pause, v::resume, v::trigger, v::get, v::list});
}

nlohmann::json payload_json(const payload& value) { return value ? nlohmann::json(*value) : nlohmann::json(nullptr); }

expected<payload> payload_of(const nlohmann::json& object, const char* key) {
  if (!object.contains(key) || object[key].is_null()) return payload{};
  const auto& value = object[key];
  // The payload's JSON text; a JSON value that is not a string is taken as that text.
  return payload{value.is_string() ? value.get<std::string>() : value.dump()};
}

nlohmann::json spec_json(const schedule_spec& spec) {
  nlohmann::json out{{"scheduleId", spec.id},
                     {"orchestrationName", spec.orchestration},
                     {"orchestrationInput", payload_json(spec.input)},
                     {"orchestrationVersion", payload_json(spec.version)},
                     {"instanceIdTemplate", spec.instance_id_template.empty() ? std::string(default_template)
                                                                              : spec.instance_id_template},
                     {"timeZone", spec.time_zone},
                     {"overlapPolicy", to_string(spec.overlap)},
                     {"catchUpPolicy", to_string(spec.catch_up)},
                     {"catchUpMax", spec.catch_up_max}};
  if (spec.interval_s != 0) {
    out["intervalSeconds"] = spec.interval_s;
    out["interval"] = format_duration(spec.interval_s);
  } else {
    out["cron"] = spec.cron;
  }
  if (spec.start_ns != 0) out["startAt"] = format_time(spec.start_ns);
  if (spec.end_ns != 0) out["endAt"] = format_time(spec.end_ns);
  return out;
}

expected<schedule_spec> spec_of(const nlohmann::json& in) {
  if (!in.is_object()) return invalid("a schedule is a JSON object");
  auto text = [&](const char* key, std::string& out) -> expected<void> {
    if (!in.contains(key) || in[key].is_null()) return {};
    if (!in[key].is_string()) return invalid(fmt::format("\"{}\" must be a string", key));
    out = in[key].get<std::string>();
    return {};
  };
  schedule_spec spec;
  std::string interval, start, end, overlap, catch_up;
  for (auto [key, out] : {std::pair{"scheduleId", &spec.id}, {"orchestrationName", &spec.orchestration},
                          {"instanceIdTemplate", &spec.instance_id_template}, {"cron", &spec.cron},
                          {"timeZone", &spec.time_zone}, {"interval", &interval}, {"startAt", &start},
                          {"endAt", &end}, {"overlapPolicy", &overlap}, {"catchUpPolicy", &catch_up}}) {
    if (auto ok = text(key, *out); !ok) return ok.error();
  }
  if (spec.instance_id_template == default_template) spec.instance_id_template.clear();
  auto input = payload_of(in, "orchestrationInput");
  if (!input) return input.error();
  spec.input = *input;
  auto version = payload_of(in, "orchestrationVersion");
  if (!version) return version.error();
  spec.version = *version;
  if (in.contains("intervalSeconds") && !in["intervalSeconds"].is_null()) {
    if (!in["intervalSeconds"].is_number_integer()) return invalid("\"intervalSeconds\" must be a whole number");
    spec.interval_s = in["intervalSeconds"].get<std::int64_t>();
    if (spec.interval_s <= 0) return invalid("\"intervalSeconds\" must be at least 1");
  } else if (!interval.empty()) {
    auto seconds = parse_duration(interval);
    if (!seconds) return seconds.error();
    spec.interval_s = *seconds;
    if (spec.interval_s <= 0) return invalid("the interval must be at least 1s");
  }
  // Whole seconds, as slots are (and as the JSON keeps them).
  if (!start.empty()) {
    auto at = parse_time(start);
    if (!at) return at.error();
    spec.start_ns = floor_div(*at, ns_per_s) * ns_per_s;
  }
  if (!end.empty()) {
    auto at = parse_time(end);
    if (!at) return at.error();
    spec.end_ns = floor_div(*at, ns_per_s) * ns_per_s;
  }
  if (!overlap.empty()) {
    auto policy = enum_named(overlap, {overlap_policy::skip, overlap_policy::buffer_one, overlap_policy::allow_all});
    if (!policy) return invalid(fmt::format("overlapPolicy '{}' is not one of Skip, BufferOne, AllowAll", overlap));
    spec.overlap = *policy;
  }
  if (!catch_up.empty()) {
    auto policy = enum_named(catch_up, {catch_up_policy::one, catch_up_policy::all, catch_up_policy::skip});
    if (!policy) return invalid(fmt::format("catchUpPolicy '{}' is not one of One, All, Skip", catch_up));
    spec.catch_up = *policy;
  }
  if (in.contains("catchUpMax") && !in["catchUpMax"].is_null()) {
    if (!in["catchUpMax"].is_number_integer()) return invalid("\"catchUpMax\" must be a whole number");
    const auto most = in["catchUpMax"].get<std::int64_t>();
    if (most < 1 || most > 10000) return invalid("\"catchUpMax\" must be between 1 and 10000");
    spec.catch_up_max = static_cast<std::uint32_t>(most);
  }
  if (spec.time_zone.empty()) spec.time_zone = "UTC";
  return spec;
}

nlohmann::json time_json(std::int64_t ns) { return ns == 0 ? nlohmann::json(nullptr) : nlohmann::json(format_time(ns)); }

nlohmann::json schedule_json(const schedule& s) {
  auto out = spec_json(s.spec);
  const auto& st = s.state;
  out["state"] = {{"paused", st.paused},
                  {"note", st.note},
                  {"createdNs", st.created_ns},
                  {"updatedNs", st.updated_ns},
                  {"nextSlotNs", st.next_slot_ns},
                  {"lastSlotNs", st.last_slot_ns},
                  {"lastInstanceId", st.last_instance_id},
                  {"lastRunning", st.last_running},
                  {"lastStatus", st.last_status},
                  {"bufferedSlotNs", st.buffered_slot_ns},
                  {"runs", st.runs},
                  {"skipped", st.skipped},
                  {"missed", st.missed}};
  // For people and dashboards: the same times as text.
  out["status"] = st.paused ? "Paused" : st.next_slot_ns == 0 ? "Ended" : "Active";
  out["createdAt"] = time_json(st.created_ns);
  out["nextRunAt"] = st.paused ? nlohmann::json(nullptr) : time_json(st.next_slot_ns);
  out["lastRunAt"] = time_json(st.last_slot_ns);
  return out;
}

expected<schedule> schedule_of(const nlohmann::json& in) {
  auto spec = spec_of(in);
  if (!spec) return spec.error();
  schedule out{std::move(*spec), {}};
  if (!in.contains("state") || !in["state"].is_object()) return invalid("a stored schedule has no \"state\"");
  const auto& st = in["state"];
  auto& s = out.state;
  try {
    s.paused = st.value("paused", false);
    s.note = st.value("note", std::string());
    s.created_ns = st.value("createdNs", std::int64_t{0});
    s.updated_ns = st.value("updatedNs", std::int64_t{0});
    s.next_slot_ns = st.value("nextSlotNs", std::int64_t{0});
    s.last_slot_ns = st.value("lastSlotNs", std::int64_t{0});
    s.last_instance_id = st.value("lastInstanceId", std::string());
    s.last_running = st.value("lastRunning", false);
    s.last_status = st.value("lastStatus", std::string());
    s.buffered_slot_ns = st.value("bufferedSlotNs", std::int64_t{0});
    s.runs = st.value("runs", std::uint64_t{0});
    s.skipped = st.value("skipped", std::uint64_t{0});
    s.missed = st.value("missed", std::uint64_t{0});
  } catch (const nlohmann::json::exception& e) {
    return invalid(fmt::format("a stored schedule's state is not readable: {}", e.what()));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------- cron

expected<cron_expression> cron_expression::parse(std::string_view text) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    const auto start = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) fields.push_back(text.substr(start, i - start));
  }
  if (fields.size() != 5 && fields.size() != 6) {
    return invalid(fmt::format("cron expression '{}' has {} fields; it needs 5 (minute hour day month weekday) or 6 "
                               "(second first)",
                               text, fields.size()));
  }
  cron_expression out;
  out.text_ = std::string(text);
  std::size_t at = 0;
  if (fields.size() == 6) {
    if (auto ok = parse_field(fields[at++], {"second", 0, 59}, out.seconds_); !ok) return ok.error();
  } else {
    out.seconds_.set(0);
  }
  if (auto ok = parse_field(fields[at++], {"minute", 0, 59}, out.minutes_); !ok) return ok.error();
  if (auto ok = parse_field(fields[at++], {"hour", 0, 23}, out.hours_); !ok) return ok.error();
  auto any_day = parse_field(fields[at++], {"day-of-month", 1, 31}, out.days_);
  if (!any_day) return any_day.error();
  if (auto ok = parse_field(fields[at++], {"month", 1, 12, true}, out.months_); !ok) return ok.error();
  auto any_weekday = parse_field(fields[at++], {"day-of-week", 0, 7, false, true}, out.weekdays_);
  if (!any_weekday) return any_weekday.error();
  out.any_day_ = *any_day;
  out.any_weekday_ = *any_weekday;
  // A day that can never come (30 February) would make the search run ten years for nothing.
  bool possible = false;
  for (int month = 1; month <= 12 && !possible; ++month) {
    if (!out.months_[static_cast<std::size_t>(month)]) continue;
    const int longest = month == 2 ? 29 : (month == 4 || month == 6 || month == 9 || month == 11) ? 30 : 31;
    for (int day = 1; day <= longest; ++day) possible |= out.days_[static_cast<std::size_t>(day)];
  }
  if (!possible && !out.any_weekday_ && !out.any_day_) possible = true;  // Either day field may match.
  if (!possible) return invalid(fmt::format("cron expression '{}' names a day that no month it allows has", text));
  return out;
}

bool cron_expression::matches_day(std::int64_t days_since_epoch) const {
  const date::sys_days day{date::days{days_since_epoch}};
  const date::year_month_day ymd{day};
  if (!months_[static_cast<unsigned>(ymd.month())]) return false;
  const bool by_day = days_[static_cast<unsigned>(ymd.day())];
  const bool by_weekday = weekdays_[date::weekday{day}.c_encoding()];
  if (any_day_ && any_weekday_) return true;
  if (any_day_) return by_weekday;
  if (any_weekday_) return by_day;
  return by_day || by_weekday;
}

std::optional<std::int64_t> cron_expression::next_local(std::int64_t after_local_s) const {
  const auto from = after_local_s + 1;
  auto day = floor_div(from, day_s);
  auto floor_s = from - day * day_s;  // Second of the first day to start at.
  for (std::int64_t n = 0; n < search_days; ++n, ++day, floor_s = 0) {
    if (!matches_day(day)) continue;
    for (int h = 0; h < 24; ++h) {
      if (!hours_[static_cast<std::size_t>(h)] || h * 3600 + 3599 < floor_s) continue;
      for (int m = 0; m < 60; ++m) {
        if (!minutes_[static_cast<std::size_t>(m)] || h * 3600 + m * 60 + 59 < floor_s) continue;
        for (int s = 0; s < 60; ++s) {
          const auto second = h * 3600 + m * 60 + s;
          if (seconds_[static_cast<std::size_t>(s)] && second >= floor_s) return day * day_s + second;
        }
      }
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------- schedules

std::string_view to_string(overlap_policy policy) {
  switch (policy) {
    case overlap_policy::skip: return "Skip";
    case overlap_policy::buffer_one: return "BufferOne";
    case overlap_policy::allow_all: return "AllowAll";
  }
  return "Skip";
}

std::string_view to_string(catch_up_policy policy) {
  switch (policy) {
    case catch_up_policy::one: return "One";
    case catch_up_policy::all: return "All";
    case catch_up_policy::skip: return "Skip";
  }
  return "One";
}

std::string_view to_string(schedule_command::verb verb) {
  using v = schedule_command::verb;
  switch (verb) {
    case v::create: return "create";
    case v::update: return "update";
    case v::remove: return "delete";
    case v::pause: return "pause";
    case v::resume: return "resume";
    case v::trigger: return "trigger";
    case v::get: return "get";
    case v::list: return "list";
  }
  return "get";
}

expected<void> validate_schedule_id(std::string_view id) {
  const bool fits = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
  if (!fits) return invalid(fmt::format("schedule id '{}' must be 1..64 characters of A-Z a-z 0-9 _ - .", id));
  return {};
}

expected<void> validate(const schedule_spec& spec) {
  if (auto ok = validate_schedule_id(spec.id); !ok) return ok;
  if (spec.orchestration.empty()) return invalid(fmt::format("schedule '{}' names no orchestration", spec.id));
  if ((spec.interval_s > 0) == !spec.cron.empty()) {
    return invalid(fmt::format("schedule '{}' needs exactly one of an interval and a cron expression", spec.id));
  }
  if (spec.interval_s < 0 || spec.interval_s > interval_s_max) {
    return invalid("the interval must be between 1s and 3650d");
  }
  if (spec.start_ns < 0 || spec.end_ns < 0 || spec.start_ns % ns_per_s != 0 || spec.end_ns % ns_per_s != 0) {
    return invalid("the start and end of a schedule are whole seconds after 1970");
  }
  if (!spec.cron.empty()) {
    auto cron = cron_expression::parse(spec.cron);
    if (!cron) return cron.error();
  }
  if (find_zone(spec.time_zone) == nullptr) {
    return invalid(fmt::format("time zone '{}' is not known (an IANA name such as UTC or Europe/Berlin)",
                               spec.time_zone));
  }
  if (spec.end_ns != 0 && spec.end_ns < spec.start_ns) return invalid("the schedule ends before it starts");
  if (!spec.instance_id_template.empty() && spec.instance_id_template.find("{slot}") == std::string::npos) {
    return invalid("the instance id template must contain {slot}: each slot's run needs an id of its own");
  }
  if (auto id = validate_orchestration_id(slot_instance_id(spec, 0)); !id) {
    return invalid(fmt::format("the instance id template makes ids that are not valid: {}", id.error().message));
  }
  if (spec.catch_up_max == 0) return invalid("catchUpMax must be at least 1");
  return {};
}

std::string schedule_address(std::string_view schedule_id) { return "@@" + std::string(schedule_id); }

std::optional<std::string_view> schedule_of_address(std::string_view instance_id) {
  if (instance_id.size() > 2 && instance_id.substr(0, 2) == "@@") return instance_id.substr(2);
  return std::nullopt;
}

instance_message run_ended_report(std::string_view schedule_id, std::string_view run_instance_id,
                                  std::string_view status, std::int64_t now_ns) {
  return instance_message{
      schedule_address(schedule_id), {},
      history_event{-1, now_ns, events::event_raised{std::string(run_instance_id), std::string(status)}}};
}

namespace {

/// next_slot with the cron expression and zone already found.
std::optional<std::int64_t> next_slot_in(const schedule_spec& spec, const cron_expression* cron,
                                         const date::time_zone* zone, std::int64_t after_ns) {
  const auto after = spec.start_ns != 0 ? std::max(after_ns, spec.start_ns - 1) : after_ns;
  if (spec.interval_s > 0) {
    const auto step = spec.interval_s * ns_per_s;
    const auto anchor = spec.start_ns;
    const auto slot = after < anchor ? anchor : anchor + (floor_div(after - anchor, step) + 1) * step;
    if (spec.end_ns != 0 && slot > spec.end_ns) return std::nullopt;
    return slot;
  }
  if (cron == nullptr || zone == nullptr) return std::nullopt;
  return next_cron_slot(spec, *cron, zone, after);
}

}  // namespace

std::optional<std::int64_t> next_slot(const schedule_spec& spec, std::int64_t after_ns) {
  if (spec.interval_s > 0) return next_slot_in(spec, nullptr, nullptr, after_ns);
  auto cron = cron_expression::parse(spec.cron);
  return next_slot_in(spec, cron ? &*cron : nullptr, find_zone(spec.time_zone), after_ns);
}

std::string slot_instance_id(const schedule_spec& spec, std::int64_t slot_ns, bool triggered) {
  std::string id = spec.instance_id_template.empty() ? std::string(default_template) : spec.instance_id_template;
  for (auto [key, value] : {std::pair<std::string_view, std::string>{"{schedule}", spec.id}, {"{slot}", compact_time(slot_ns, triggered)}}) {
    for (auto at = id.find(key); at != std::string::npos; at = id.find(key, at + value.size())) {
      id.replace(at, key.size(), value);
    }
  }
  return id;
}

std::string format_time(std::int64_t ns) {
  const date::sys_seconds at{std::chrono::seconds{floor_div(ns, ns_per_s)}};
  return date::format("%FT%TZ", at);
}

// date::parse's inlined internals trip GCC 12's flow analysis (a false alarm).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
expected<std::int64_t> parse_time(std::string_view text) {
  for (const char* format : {"%FT%TZ", "%FT%T%Ez", "%F %TZ", "%F %T%Ez"}) {
    std::istringstream in{std::string(text)};
    date::sys_time<std::chrono::nanoseconds> at;
    in >> date::parse(format, at);
    if (!in.fail() && in.peek() == std::char_traits<char>::eof()) return at.time_since_epoch().count();
  }
  return invalid(fmt::format("'{}' is not an RFC 3339 time (2026-12-01T21:00:00Z or with an offset, +01:00)", text));
}
#pragma GCC diagnostic pop

due_slots slots_due(const schedule_spec& spec, std::int64_t first_ns, std::int64_t now_ns, std::size_t keep) {
  due_slots out;
  keep = std::max<std::size_t>(keep, 1);
  if (first_ns == 0 || first_ns > now_ns) return out;
  if (spec.interval_s > 0) {
    const auto step = spec.interval_s * ns_per_s;
    auto last_ns = spec.end_ns != 0 ? std::min(now_ns, spec.end_ns) : now_ns;
    if (last_ns < first_ns) return out;
    out.count = static_cast<std::uint64_t>((last_ns - first_ns) / step) + 1;
    const auto kept = std::min<std::uint64_t>(out.count, keep);
    const auto latest = first_ns + static_cast<std::int64_t>(out.count - 1) * step;
    for (auto k = kept; k > 0; --k) out.latest.push_back(latest - static_cast<std::int64_t>(k - 1) * step);
    return out;
  }
  auto cron = cron_expression::parse(spec.cron);
  const auto* zone = find_zone(spec.time_zone);
  if (!cron || zone == nullptr) return out;
  std::deque<std::int64_t> latest;
  std::optional<std::int64_t> slot = first_ns;
  auto walk = [&](std::uint64_t steps_max) {
    for (std::uint64_t steps = 0; slot && *slot <= now_ns && steps < steps_max;
         ++steps, slot = next_slot_in(spec, &*cron, zone, *slot)) {
      ++out.count;
      latest.push_back(*slot);
      if (latest.size() > keep) latest.pop_front();
    }
  };
  walk(due_walk_max);
  if (slot && *slot <= now_ns) {
    // A long stop under a frequent expression: the slots of the last day are
    // walked, the ones between are not counted (missed counts at least these).
    slot = next_slot_in(spec, &*cron, zone, std::max(*slot, now_ns - day_s * ns_per_s));
    walk(UINT64_MAX);
  }
  out.latest.assign(latest.begin(), latest.end());
  return out;
}

std::vector<std::int64_t> slots_to_run(const schedule_spec& spec, const due_slots& due, std::int64_t now_ns) {
  if (due.latest.empty()) return {};
  const auto last = due.latest.back();
  switch (spec.catch_up) {
    case catch_up_policy::all: {
      const auto kept = std::min<std::size_t>(due.latest.size(), spec.catch_up_max);
      return {due.latest.end() - static_cast<long>(kept), due.latest.end()};
    }
    case catch_up_policy::one: return {last};
    case catch_up_policy::skip:
      if (now_ns - last <= schedule_grace_ns) return {last};
      return {};
  }
  return {};
}

// ---------------------------------------------------------------------------- JSON

expected<schedule_spec> schedule_spec_from_json(std::string_view text) {
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return invalid("the schedule is not valid JSON");
  auto spec = spec_of(parsed);
  if (!spec) return spec.error();
  if (auto ok = validate(*spec); !ok) return ok.error();
  return spec;
}

std::string to_json(const schedule_spec& spec) { return spec_json(spec).dump(); }

std::string to_json(const schedule& schedule) { return schedule_json(schedule).dump(); }

expected<schedule> schedule_from_json(std::string_view text) {
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return invalid("a stored schedule is not valid JSON");
  return schedule_of(parsed);
}

std::string to_json(const std::vector<schedule>& schedules) {
  auto out = nlohmann::json::array();
  for (const auto& s : schedules) out.push_back(schedule_json(s));
  return out.dump();
}

expected<std::vector<schedule>> schedules_from_json(std::string_view text) {
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_array()) return invalid("schedules are a JSON array");
  std::vector<schedule> out;
  for (const auto& entry : parsed) {
    auto s = schedule_of(entry);
    if (!s) return s.error();
    out.push_back(std::move(*s));
  }
  return out;
}

std::string to_json(const schedule_command& command) {
  nlohmann::json out{{"verb", to_string(command.what)}, {"scheduleId", command.id}, {"note", command.note}};
  if (command.spec) out["schedule"] = spec_json(*command.spec);
  return out.dump();
}

expected<schedule_command> schedule_command_from_json(std::string_view text) {
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("verb") || !parsed["verb"].is_string()) {
    return invalid("a schedule command is a JSON object with a \"verb\"");
  }
  schedule_command out;
  auto verb = verb_named(parsed["verb"].get<std::string>());
  if (!verb) return invalid(fmt::format("'{}' is not a schedule command", parsed["verb"].get<std::string>()));
  out.what = *verb;
  if (parsed.contains("scheduleId") && parsed["scheduleId"].is_string()) out.id = parsed["scheduleId"].get<std::string>();
  if (parsed.contains("note") && parsed["note"].is_string()) out.note = parsed["note"].get<std::string>();
  if (parsed.contains("schedule") && !parsed["schedule"].is_null()) {
    auto spec = spec_of(parsed["schedule"]);
    if (!spec) return spec.error();
    out.spec = std::move(*spec);
  }
  return out;
}

}  // namespace dtsd::core
