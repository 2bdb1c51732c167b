#include <doctest/doctest.h>

#include "core/schedule.hpp"

using namespace dtsd::core;

namespace {

std::int64_t at(const char* text) {
  auto parsed = parse_time(text);
  REQUIRE_MESSAGE(parsed.has_value(), text);
  return *parsed;
}

schedule_spec cron_spec(std::string cron, std::string zone = "UTC") {
  schedule_spec spec;
  spec.id = "nightly";
  spec.orchestration = "Report";
  spec.cron = std::move(cron);
  spec.time_zone = std::move(zone);
  return spec;
}

/// The next `count` slots after `from`, as text.
std::vector<std::string> slots(const schedule_spec& spec, const char* from, int count) {
  std::vector<std::string> out;
  auto after = at(from);
  for (int i = 0; i < count; ++i) {
    auto slot = next_slot(spec, after);
    if (!slot) break;
    out.push_back(format_time(*slot));
    after = *slot;
  }
  return out;
}

}  // namespace

TEST_CASE("schedule: cron expressions refuse what cron would not read") {
  CHECK_FALSE(cron_expression::parse("* * * *").has_value());
  CHECK_FALSE(cron_expression::parse("60 * * * *").has_value());
  CHECK_FALSE(cron_expression::parse("* 24 * * *").has_value());
  CHECK_FALSE(cron_expression::parse("* * 0 * *").has_value());
  CHECK_FALSE(cron_expression::parse("* * * 13 *").has_value());
  CHECK_FALSE(cron_expression::parse("5-1 * * * *").has_value());
  CHECK_FALSE(cron_expression::parse("*/0 * * * *").has_value());
  CHECK_FALSE(cron_expression::parse("0 0 30 FEB *").has_value());
  CHECK_FALSE(cron_expression::parse("a * * * *").has_value());
  CHECK(cron_expression::parse("0 9 * * MON-FRI").has_value());
  CHECK(cron_expression::parse("*/15 * * * * *").has_value());
  CHECK(cron_expression::parse("0 0 29 2 ?").has_value());
  CHECK(cron_expression::parse("0 0 1,15 jan,jul 7").has_value());
}

TEST_CASE("schedule: cron slots in UTC, with seconds, weekdays and either day field") {
  CHECK(slots(cron_spec("0 9 * * MON-FRI"), "2026-12-04T10:00:00Z", 2) ==
        std::vector<std::string>{"2026-12-07T09:00:00Z", "2026-12-08T09:00:00Z"});  // Friday -> Monday
  CHECK(slots(cron_spec("*/15 * * * * *"), "2026-12-01T21:00:05Z", 3) ==
        std::vector<std::string>{"2026-12-01T21:00:15Z", "2026-12-01T21:00:30Z", "2026-12-01T21:00:45Z"});
  // Sunday as 7; both day fields restricted: the 1st or a Sunday.
  CHECK(slots(cron_spec("0 0 1 * 7"), "2026-12-01T00:00:00Z", 3) ==
        std::vector<std::string>{"2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z", "2026-12-20T00:00:00Z"});
  CHECK(slots(cron_spec("0 0 1 * 7"), "2026-12-27T00:00:00Z", 1) == std::vector<std::string>{"2027-01-01T00:00:00Z"});
  // "5/20": 5, 25, 45.
  CHECK(slots(cron_spec("5/20 * * * *"), "2026-12-01T21:00:00Z", 3) ==
        std::vector<std::string>{"2026-12-01T21:05:00Z", "2026-12-01T21:25:00Z", "2026-12-01T21:45:00Z"});
}

TEST_CASE("schedule: leap days come every four years, not in 2100") {
  CHECK(slots(cron_spec("0 12 29 2 *"), "2026-03-01T00:00:00Z", 2) ==
        std::vector<std::string>{"2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"});
  CHECK(slots(cron_spec("0 12 29 2 *"), "2096-03-01T00:00:00Z", 1) == std::vector<std::string>{"2104-02-29T12:00:00Z"});
  // Every day across a leap day.
  CHECK(slots(cron_spec("0 0 * * *"), "2028-02-28T12:00:00Z", 2) ==
        std::vector<std::string>{"2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"});
}

TEST_CASE("schedule: clocks jumping forward run the skipped times at the gap's end, once") {
  // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
  const auto daily = cron_spec("30 2 * * *", "Europe/Berlin");
  CHECK(slots(daily, "2026-03-27T12:00:00Z", 3) ==
        std::vector<std::string>{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"});
  // Every 15 minutes: 02:00..02:45 do not exist; they are one run at 03:00 CEST.
  CHECK(slots(cron_spec("*/15 * * * *", "Europe/Berlin"), "2026-03-29T00:40:00Z", 4) ==
        std::vector<std::string>{"2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z",
                                 "2026-03-29T01:30:00Z"});
  // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
  CHECK(slots(cron_spec("0 2 * * *", "America/New_York"), "2026-03-07T12:00:00Z", 2) ==
        std::vector<std::string>{"2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"});
}

TEST_CASE("schedule: clocks going back run a repeated time once, at its first occurrence") {
  // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:xx happens twice.
  CHECK(slots(cron_spec("30 2 * * *", "Europe/Berlin"), "2026-10-24T12:00:00Z", 2) ==
        std::vector<std::string>{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"});
  CHECK(slots(cron_spec("0 * * * *", "Europe/Berlin"), "2026-10-24T23:30:00Z", 3) ==
        std::vector<std::string>{"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"});
}

TEST_CASE("schedule: interval slots count from the start (or the epoch) and stop at the end") {
  schedule_spec spec;
  spec.id = "poll";
  spec.orchestration = "Poll";
  spec.interval_s = 90;
  CHECK(slots(spec, "2026-12-01T21:00:00Z", 2) ==
        std::vector<std::string>{"2026-12-01T21:01:30Z", "2026-12-01T21:03:00Z"});
  spec.start_ns = at("2026-12-01T21:00:10Z");
  spec.end_ns = at("2026-12-01T21:03:10Z");
  CHECK(slots(spec, "2026-12-01T20:00:00Z", 5) ==
        std::vector<std::string>{"2026-12-01T21:00:10Z", "2026-12-01T21:01:40Z", "2026-12-01T21:03:10Z"});
}

TEST_CASE("schedule: catch-up after a stop runs one, every slot up to a bound, or none") {
  schedule_spec spec;
  spec.id = "tick";
  spec.orchestration = "Tick";
  spec.interval_s = 60;
  const auto first = at("2026-12-01T10:00:00Z");
  const auto now = at("2026-12-01T12:00:30Z");  // Down for two hours: 121 slots passed.
  auto due = slots_due(spec, first, now, 5);
  CHECK(due.count == 121);
  REQUIRE(due.latest.size() == 5);
  CHECK(format_time(due.latest.back()) == "2026-12-01T12:00:00Z");
  CHECK(format_time(due.latest.front()) == "2026-12-01T11:56:00Z");

  spec.catch_up = catch_up_policy::one;
  CHECK(slots_to_run(spec, due, now) == std::vector<std::int64_t>{due.latest.back()});
  spec.catch_up = catch_up_policy::all;
  spec.catch_up_max = 3;
  CHECK(slots_to_run(spec, due, now).size() == 3);
  spec.catch_up = catch_up_policy::skip;
  CHECK(slots_to_run(spec, due, now) == std::vector<std::int64_t>{due.latest.back()});  // 30 s late: on time
  CHECK(slots_to_run(spec, due, now + 60'000'000'000).empty());

  // A cron schedule is counted slot by slot.
  auto hourly = cron_spec("0 * * * *", "Europe/Berlin");
  auto hours = slots_due(hourly, at("2026-10-24T22:00:00Z"), at("2026-10-25T04:00:00Z"), 100);
  CHECK(hours.count == 6);  // 00:00Z..01:00Z is 02:00 CET again: no slot at 01:00Z.
}

TEST_CASE("schedule: instance ids are the schedule id and the slot") {
  auto spec = cron_spec("0 * * * *");
  CHECK(slot_instance_id(spec, at("2026-12-01T21:00:00Z")) == "nightly-20261201T210000Z");
  CHECK(slot_instance_id(spec, at("2026-12-01T21:00:00Z") + 250'000'000, true) == "nightly-20261201T210000.250Z");
  CHECK(slot_instance_id(spec, at("2026-12-01T21:00:00Z"), true) == "nightly-20261201T210000.000Z");
  spec.instance_id_template = "report/{slot}/{schedule}";
  CHECK(slot_instance_id(spec, at("2026-12-01T21:00:00Z")) == "report/20261201T210000Z/nightly");
  CHECK(schedule_of_address(schedule_address("nightly")) == "nightly");
  CHECK_FALSE(schedule_of_address("nightly").has_value());
}

TEST_CASE("schedule: JSON in and out, and clear refusals") {
  auto spec = schedule_spec_from_json(R"({"scheduleId": "s1", "orchestrationName": "Report", "cron": "0 9 * * *",
      "timeZone": "Europe/Berlin", "orchestrationInput": {"city": "Seattle"}, "overlapPolicy": "BufferOne",
      "catchUpPolicy": "all", "catchUpMax": 10, "startAt": "2026-12-01T10:00:00+01:00"})");
  REQUIRE(spec.has_value());
  CHECK(spec->input == payload{R"({"city":"Seattle"})"});
  CHECK(spec->overlap == overlap_policy::buffer_one);
  CHECK(spec->catch_up == catch_up_policy::all);
  CHECK(format_time(spec->start_ns) == "2026-12-01T09:00:00Z");
  schedule s{*spec, {}};
  s.state.next_slot_ns = at("2026-12-02T08:00:00Z");
  s.state.runs = 3;
  s.state.last_instance_id = "s1-20261201T080000Z";
  auto back = schedule_from_json(to_json(s));
  REQUIRE(back.has_value());
  CHECK(*back == s);
  auto listed = schedules_from_json(to_json(std::vector<schedule>{s, s}));
  REQUIRE(listed.has_value());
  CHECK(listed->size() == 2);

  schedule_command command{schedule_command::verb::create, "s1", *spec, ""};
  auto command_back = schedule_command_from_json(to_json(command));
  REQUIRE(command_back.has_value());
  CHECK(*command_back == command);

  auto interval = schedule_spec_from_json(R"({"scheduleId": "s2", "orchestrationName": "Poll", "interval": "90s"})");
  REQUIRE(interval.has_value());
  CHECK(interval->interval_s == 90);

  auto refused = [](const char* json) {
    auto parsed = schedule_spec_from_json(json);
    REQUIRE_FALSE(parsed.has_value());
    return parsed.error().message;
  };
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x"})").find("exactly one") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "cron": "* * * * *", "interval": "1m"})")
            .find("exactly one") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "cron": "* * * * *", "timeZone": "Mars/Olympus"})")
            .find("Mars/Olympus") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "interval": "1m", "instanceIdTemplate": "fixed"})")
            .find("{slot}") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "bad id", "orchestrationName": "x", "interval": "1m"})").find("schedule id") !=
        std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "interval": "1m", "overlapPolicy": "Sometimes"})")
            .find("Sometimes") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "interval": "1m", "startAt": "tomorrow"})")
            .find("RFC 3339") != std::string::npos);
  CHECK(refused("not json").find("JSON") != std::string::npos);
  CHECK(refused(R"({"scheduleId": "s", "orchestrationName": "x", "intervalSeconds": 10000000000})").find("3650d") !=
        std::string::npos);
  // Start and end are kept in whole seconds.
  auto fraction = schedule_spec_from_json(
      R"({"scheduleId": "s", "orchestrationName": "x", "interval": "1m", "startAt": "2026-12-01T10:00:00.750Z"})");
  REQUIRE(fraction.has_value());
  CHECK(fraction->start_ns % 1'000'000'000 == 0);
}
