// dtsctl: the command line of dtsd.
//
//   dtsctl [--address A] [--task-hub H] [--json] taskhub list|create NAME|delete NAME [--force]
//   dtsctl ... taskhub status [NAME]
//   dtsctl ... instance list [--status S]... [--name-prefix P] [--id-prefix P] [--version V] [--page-size N] [--all]
//   dtsctl ... instance show ID [--history]
//   dtsctl ... instance start NAME [--input JSON] [--id ID] [--version V]
//   dtsctl ... instance raise ID EVENT [--data JSON]
//   dtsctl ... instance terminate ID [--reason JSON] [--recurse]
//   dtsctl ... instance suspend|resume|rewind ID [--reason TEXT]
//   dtsctl ... instance restart ID [--new-id]
//   dtsctl ... instance purge ID [--recursive]
//   dtsctl ... instance purge-where [--status S]... [--name-prefix P] [--id-prefix P] [--recursive]
//   dtsctl ... entity list [--id-prefix P] [--page-size N] [--all]
//   dtsctl ... entity show @NAME@KEY
//   dtsctl ... entity signal @NAME@KEY OPERATION [--input JSON]
//   dtsctl ... entity clean [--keep-empty] [--keep-orphaned-locks]
//   dtsctl ... worker list
//   dtsctl ... retention show|delete
//   dtsctl ... retention set [--default D] [--completed D] [--failed D] [--canceled D] [--terminated D]   (D: 30d, 12h, 0s, forever)
//   dtsctl ... schedule create|update ID [--orchestration NAME] [--every 1m | --cron "0 9 * * MON-FRI"] [--time-zone Z]
//              [--input JSON] [--version V] [--id-template T] [--start-at T] [--end-at T]
//              [--overlap skip|buffer-one|allow-all] [--catch-up one|all|skip] [--catch-up-max N]
//   dtsctl ... schedule list | show|pause|resume|trigger|delete ID [--note T]
//   dtsctl ... export --to FILE[.gz] [--gzip] [--status S]... [--name-prefix P] [--id-prefix P] [--created-from T]
//              [--created-to T] [--completed-from T] [--completed-to T] [--purge [--follow SECONDS]] [--restart]
//              [--page-size N]
//   dtsctl [--json] cluster status|drain NODE|undrain NODE --cluster etcd://HOST:PORT
//   dtsctl [--task-hub H] [--json] cluster where ID --cluster etcd://HOST:PORT
//   dtsctl [--json] token create --role contributor|worker|reader --task-hub NAME|'*' [--expires 30d] [--note T]
//   dtsctl [--json] token list|revoke ID [--auth-dir DIR | --data-dir DIR]
//   dtsctl [--json] compact [--data-dir DIR] [--only-task-hub H]   (dtsd stopped: gives freed pages back)
//
// Exit codes: 0 done, 1 the server refused or is unreachable (the reason on
// stderr), 2 the command line is wrong.

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <future>
#include <thread>
#include <iostream>
#include <map>

#include "auth/authority.hpp"
#include "cluster/membership.hpp"
#include "core/ids.hpp"
#include "core/retention.hpp"
#include "core/schedule.hpp"
#include "cli/export.hpp"
#include "sdk/client.hpp"
#include "store/kv.hpp"

using namespace dtsd;
using sdk::json;

namespace {

struct globals {
  std::string address = "127.0.0.1:8081";
  std::string hub = "default";
  std::string token;  ///< For a dtsd run with --auth.
  sdk::tls_options tls;  ///< For a dtsd whose native API serves TLS.
  bool as_json = false;
};

int refused(const dtsd::error& failure) {
  std::fprintf(stderr, "dtsctl: %s (%s)\n", failure.message.c_str(), to_string(failure.code));
  return 1;
}

std::string time_text(std::int64_t ns) {
  if (ns == 0) return "-";
  std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", std::gmtime(&seconds));
  return text;
}

json payload_json(const core::payload& p) {
  if (!p) return nullptr;
  auto parsed = json::parse(*p, nullptr, false);
  return parsed.is_discarded() ? json(*p) : parsed;
}

json entity_json(const core::instance_record& r) {
  json out = {{"entityId", r.instance_id},
              {"lastModifiedAt", time_text(r.last_updated_at_ns)},
              {"state", payload_json(r.entity_state)},
              {"waitingMessages", r.entity_deferred.size()}};
  out["lockedBy"] = r.entity_locked_by.empty() ? json(nullptr) : json(r.entity_locked_by);
  return out;
}

json record_json(const core::instance_record& r) {
  json out = {{"instanceId", r.instance_id},
              {"executionId", r.execution_id},
              {"name", r.name},
              {"version", r.version ? json(*r.version) : json(nullptr)},
              {"runtimeStatus", std::string(core::to_string(r.status))},
              {"createdAt", time_text(r.created_at_ns)},
              {"lastUpdatedAt", time_text(r.last_updated_at_ns)},
              {"completedAt", time_text(r.completed_at_ns)}};
  out["input"] = payload_json(r.input);
  out["output"] = payload_json(r.output);
  out["customStatus"] = payload_json(r.custom_status);
  if (!r.tags.empty()) out["tags"] = r.tags;
  if (r.parent) out["parentInstanceId"] = r.parent->instance.instance_id;
  if (r.failure) out["failure"] = {{"type", r.failure->error_type}, {"message", r.failure->error_message}};
  return out;
}

std::string event_kind(const core::history_event& event) {
  static const char* names[] = {"ExecutionStarted", "ExecutionCompleted", "ExecutionTerminated", "TaskScheduled",
                                "TaskCompleted", "TaskFailed", "SubOrchestrationInstanceCreated",
                                "SubOrchestrationInstanceCompleted", "SubOrchestrationInstanceFailed", "TimerCreated",
                                "TimerFired", "OrchestratorStarted", "OrchestratorCompleted", "EventSent", "EventRaised",
                                "GenericEvent", "HistoryState", "ContinueAsNew", "ExecutionSuspended",
                                "ExecutionResumed", "ExecutionRewound", "EntityOperationSignaled",
                                "EntityOperationCalled", "EntityOperationCompleted", "EntityOperationFailed",
                                "EntityLockRequested", "EntityLockGranted", "EntityUnlockSent"};
  return names[event.body.index()];
}

void print_entity_table(const std::vector<core::instance_record>& records) {
  std::printf("%-40s %-19s %-24s %s\n", "ENTITY", "MODIFIED (UTC)", "LOCKED BY", "STATE");
  for (const auto& r : records) {
    auto state = r.entity_state ? *r.entity_state : std::string("-");
    if (state.size() > 60) state = state.substr(0, 57) + "...";
    std::printf("%-40s %-19s %-24s %s\n", r.instance_id.c_str(), time_text(r.last_updated_at_ns).c_str(),
                r.entity_locked_by.empty() ? "-" : r.entity_locked_by.c_str(), state.c_str());
  }
}

void print_table(const std::vector<core::instance_record>& records) {
  std::printf("%-40s %-24s %-15s %-19s\n", "INSTANCE", "NAME", "STATUS", "CREATED (UTC)");
  for (const auto& r : records) {
    std::printf("%-40s %-24s %-15s %-19s\n", r.instance_id.c_str(), r.name.c_str(),
                std::string(core::to_string(r.status)).c_str(), time_text(r.created_at_ns).c_str());
  }
}

std::optional<core::runtime_status> parse_status(const std::string& text) {
  for (std::uint8_t i = 0; i < core::runtime_status_count; ++i) {
    auto status = static_cast<core::runtime_status>(i);
    std::string name(core::to_string(status));
    if (name.size() == text.size() && std::equal(name.begin(), name.end(), text.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        })) {
      return status;
    }
  }
  return std::nullopt;
}

/// The --status/--name-prefix/--id-prefix filter; nullopt (after saying why) when a
/// status is unknown.
std::optional<sdk::query_options> filter_of(const std::vector<std::string>& statuses,
                                            const std::string& name_prefix, const std::string& id_prefix) {
  sdk::query_options filter;
  for (const auto& text : statuses) {
    auto status = parse_status(text);
    if (!status) {
      std::fprintf(stderr, "dtsctl: unknown status '%s'\n", text.c_str());
      return std::nullopt;
    }
    filter.statuses.push_back(*status);
  }
  filter.name_prefix = name_prefix;
  filter.instance_id_prefix = id_prefix;
  return filter;
}

json filter_json(const core::kind_filter& filter) {
  if (!filter) return "*";
  json out = json::array();
  for (const auto& entry : *filter) out.push_back({{"name", entry.name}, {"versions", entry.versions}});
  return out;
}

/// `compact`: every partition of the data directory (or of one hub) rewritten
/// without its free pages, while no dtsd has it open.
int compact(const std::string& data_dir, const std::string& only_hub, bool as_json) {
  namespace fs = std::filesystem;
  auto found = store::partition_directories(data_dir, only_hub);
  if (!found) return refused(found.error());
  const auto& partitions = *found;
  if (partitions.empty()) {
    return refused(dtsd::error{errc::not_found, fmt::format("no partition stores under '{}'{}", data_dir,
                                                      only_hub.empty() ? "" : " for task hub '" + only_hub + "'")});
  }
  std::uint64_t before = 0, after = 0;
  json rows = json::array();
  for (std::size_t i = 0; i < partitions.size(); ++i) {
    const fs::path dir = partitions[i];
    auto done = store::compact_lmdb(dir.string());
    if (!done) return refused(done.error());
    before += done->bytes_before;
    after += done->bytes_after;
    const auto name = dir.parent_path().filename().string() + "/" + dir.filename().string();
    rows.push_back({{"partition", name}, {"bytesBefore", done->bytes_before}, {"bytesAfter", done->bytes_after}});
    std::fprintf(stderr, "[%zu/%zu] %s: %.1f MiB -> %.1f MiB\n", i + 1, partitions.size(), name.c_str(),
                 static_cast<double>(done->bytes_before) / 1048576.0, static_cast<double>(done->bytes_after) / 1048576.0);
  }
  if (as_json) {
    std::printf("%s\n", json{{"partitions", rows}, {"bytesBefore", before}, {"bytesAfter", after}}.dump().c_str());
  } else {
    std::printf("compacted %zu partitions: %.1f MiB -> %.1f MiB\n", partitions.size(),
                static_cast<double>(before) / 1048576.0, static_cast<double>(after) / 1048576.0);
  }
  return 0;
}

/// `retention show|set|delete`: the policy in force, and whose it is.
int show_retention(const expected<sdk::retention_info>& retention, const std::string& hub, bool as_json) {
  if (!retention) return refused(retention.error());
  if (as_json) {
    auto out = json::parse(core::to_json(retention->policy));
    out["taskHub"] = hub;
    out["source"] = retention->own ? "taskHub" : "dtsdDefault";
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("task hub '%s': %s (%s)\n", hub.c_str(), core::describe(retention->policy).c_str(),
              retention->own ? "its own policy" : "dtsd's default, --retention-default");
  return 0;
}

/// The policy `retention set` asks for: a rule for each status given ("forever",
/// or a duration), and the default for the rest.
expected<core::retention_policy> retention_asked(const std::map<std::string, std::string>& rules) {
  core::retention_policy policy;
  for (const auto& [which, text] : rules) {
    if (text.empty()) continue;
    core::retention_rule rule{true, 0};
    if (text != "forever") {
      auto seconds = core::parse_duration(text);
      if (!seconds) return error{errc::invalid_argument, "--" + which + ": " + seconds.error().message + ", or forever"};
      rule = {false, *seconds};
    }
    if (which == "default") {
      policy.fallback = rule;
      continue;
    }
    for (auto status : core::retained_statuses) {
      std::string name(core::to_string(status));
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (name == which) policy.by_status[status] = rule;
    }
  }
  if (!policy.fallback && policy.by_status.empty()) {
    return error{errc::invalid_argument, "say how long to keep ended orchestrations: --default, --completed, "
                                         "--failed, --canceled or --terminated (30d, 12h, 0s, forever)"};
  }
  return policy;
}

/// What `schedule create|update` was given; empty: not given.
struct schedule_options {
  std::string orchestration, every, cron, time_zone, input, version, id_template, start_at, end_at, overlap, catch_up;
  std::int64_t catch_up_max = 0;
};

/// The definition `schedule create|update` asks for: `base` (update: the schedule
/// as it is) with what was given on top, checked as dtsd checks it.
expected<core::schedule_spec> schedule_asked(const std::string& id, const schedule_options& o, json base) {
  base["scheduleId"] = id;
  auto set = [&](const char* key, const std::string& value) {
    if (!value.empty()) base[key] = value;
  };
  set("orchestrationName", o.orchestration);
  set("timeZone", o.time_zone);
  set("orchestrationInput", o.input);
  set("orchestrationVersion", o.version);
  set("instanceIdTemplate", o.id_template);
  set("startAt", o.start_at);
  set("endAt", o.end_at);
  auto policy = [](std::string text) {
    text.erase(std::remove(text.begin(), text.end(), '-'), text.end());
    return text;
  };
  set("overlapPolicy", policy(o.overlap));
  set("catchUpPolicy", policy(o.catch_up));
  if (o.catch_up_max != 0) base["catchUpMax"] = o.catch_up_max;
  if (!o.every.empty() || !o.cron.empty()) {  // One replaces the other.
    base.erase("interval");
    base.erase("intervalSeconds");
    base.erase("cron");
    set("interval", o.every);
    set("cron", o.cron);
  }
  return core::schedule_spec_from_json(base.dump());
}

std::string describe_timing(const core::schedule_spec& spec) {
  if (spec.interval_s != 0) return "every " + core::format_duration(spec.interval_s);
  return "cron \"" + spec.cron + "\" " + spec.time_zone;
}

/// `schedule ...`: the schedules a command concerns.
int show_schedules(const expected<std::vector<core::schedule>>& schedules, bool as_json, bool as_list) {
  if (!schedules) return refused(schedules.error());
  if (as_json) {
    auto all = json::parse(core::to_json(*schedules));
    std::printf("%s\n", (as_list ? all : all.empty() ? json() : all[0]).dump().c_str());
    return 0;
  }
  if (as_list && schedules->empty()) {
    std::printf("no schedules\n");
    return 0;
  }
  if (as_list) std::printf("%-24s %-36s %-8s %-22s %s\n", "ID", "WHEN", "STATUS", "NEXT RUN", "LAST RUN");
  for (const auto& s : *schedules) {
    const auto& st = s.state;
    const std::string status = st.paused ? "Paused" : st.next_slot_ns == 0 ? "Ended" : "Active";
    const std::string next = st.paused || st.next_slot_ns == 0 ? "-" : core::format_time(st.next_slot_ns);
    const std::string last = st.last_instance_id.empty() ? "-" : st.last_instance_id + " (" + st.last_status + ")";
    if (as_list) {
      std::printf("%-24s %-36s %-8s %-22s %s\n", s.spec.id.c_str(), describe_timing(s.spec).c_str(), status.c_str(),
                  next.c_str(), last.c_str());
      continue;
    }
    std::printf("schedule '%s': %s, starts %s; %s\n", s.spec.id.c_str(), describe_timing(s.spec).c_str(),
                s.spec.orchestration.c_str(), status.c_str());
    if (st.paused && !st.note.empty()) std::printf("  paused: %s\n", st.note.c_str());
    std::printf("  next run: %s\n  last run: %s\n", next.c_str(), last.c_str());
    std::printf("  runs %llu, skipped (overlap %s) %llu, missed (catch-up %s) %llu\n",
                static_cast<unsigned long long>(st.runs), std::string(core::to_string(s.spec.overlap)).c_str(),
                static_cast<unsigned long long>(st.skipped), std::string(core::to_string(s.spec.catch_up)).c_str(),
                static_cast<unsigned long long>(st.missed));
  }
  return 0;
}

int list_workers(sdk::client& client, bool as_json) {
  auto workers = client.workers();
  if (!workers) {
    std::fprintf(stderr, "dtsctl: %s\n", workers.error().message.c_str());
    return 1;
  }
  if (as_json) {
    json out = json::array();
    for (const auto& w : *workers) {
      out.push_back({{"session", w.session},
                     {"worker", w.worker},
                     {"slots", {{"orchestrators", w.orchestrator_slots}, {"activities", w.activity_slots},
                                {"entities", w.entity_slots}}},
                     {"inUse", {{"orchestrators", w.orchestrators_in_use}, {"activities", w.activities_in_use},
                                {"entities", w.entities_in_use}}},
                     {"filters", {{"orchestrations", filter_json(w.filters.orchestrations)},
                                  {"activities", filter_json(w.filters.activities)},
                                  {"entities", filter_json(w.filters.entities)}}}});
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("%-8s %-24s %-17s %-17s %s\n", "SESSION", "WORKER", "ORCH (USED/ALL)", "ACT (USED/ALL)", "TAKES");
  for (const auto& w : *workers) {
    auto used = [](std::uint32_t a, std::uint32_t b) { return std::to_string(a) + "/" + std::to_string(b); };
    std::string takes = w.filters.accepts_everything()
                            ? std::string("everything")
                            : "orchestrations " + core::describe(w.filters.orchestrations) + "; activities " +
                                  core::describe(w.filters.activities) + "; entities " +
                                  core::describe(w.filters.entities);
    std::printf("%-8llu %-24s %-17s %-17s %s\n", static_cast<unsigned long long>(w.session),
                w.worker.empty() ? "-" : w.worker.c_str(), used(w.orchestrators_in_use, w.orchestrator_slots).c_str(),
                used(w.activities_in_use, w.activity_slots).c_str(), takes.c_str());
  }
  return 0;
}

/// A wait for a person to read: "-" for none, else ms or s.
std::string fmt_wait(std::int64_t ns) {
  if (ns <= 0) return "-";
  char text[32];
  if (ns < 10'000'000'000) {
    std::snprintf(text, sizeof text, "%.0f ms", static_cast<double>(ns) / 1e6);
  } else {
    std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ns) / 1e9);
  }
  return text;
}

/// `taskhub status`: one line per partition, saying whether it can write.
int show_partitions(sdk::client& client, const std::string& hub, bool as_json) {
  auto partitions = client.partitions(hub);
  if (!partitions) {
    std::fprintf(stderr, "dtsctl: %s\n", partitions.error().message.c_str());
    return 1;
  }
  json out = json::array();
  if (!as_json) {
    std::printf("%-10s %-9s %-9s %-9s %-9s %-12s %-8s %-9s %-10s %-14s %s\n", "PARTITION", "STATE", "READY-ORC",
                "READY-ACT", "READY-ENT", "OLDEST-WAIT", "UNACKED", "COMMITS", "COMMIT-MS", "FAILED-COMMITS",
                "SINCE / REASON");
  }
  for (const auto& p : *partitions) {
    const double commit_ms =
        p.commits == 0 ? 0.0 : static_cast<double>(p.commit_ns_total) / 1e6 / static_cast<double>(p.commits);
    if (as_json) {
      json row = {{"partition", p.index},
                  {"writable", p.stalled.empty()},
                  {"failedCommits", p.failed_commits},
                  {"commits", p.commits},
                  {"committedChanges", p.committed_changes},
                  {"commitMsMean", commit_ms},
                  {"commitMsMax", static_cast<double>(p.commit_ns_max) / 1e6},
                  {"ready", {{"orchestrators", p.ready_orchestrators},
                             {"activities", p.ready_activities},
                             {"entities", p.ready_entities}}},
                  {"oldestReadyWaitMs", static_cast<double>(p.oldest_ready_wait_ns) / 1e6},
                  {"unacknowledgedMessages", p.unacknowledged_messages},
                  {"liveInstances", p.live_instances}};
      if (!p.stalled.empty()) {
        row["stalled"] = p.stalled;
        row["stalledSince"] = time_text(p.stalled_since_ns);
      }
      out.push_back(std::move(row));
      continue;
    }
    std::string detail = p.stalled.empty() ? "-" : time_text(p.stalled_since_ns) + "  " + p.stalled;
    std::printf("%-10u %-9s %-9llu %-9llu %-9llu %-12s %-8llu %-9llu %-10.2f %-14llu %s\n", p.index,
                p.stalled.empty() ? "writable" : "STALLED", static_cast<unsigned long long>(p.ready_orchestrators),
                static_cast<unsigned long long>(p.ready_activities), static_cast<unsigned long long>(p.ready_entities),
                fmt_wait(p.oldest_ready_wait_ns).c_str(), static_cast<unsigned long long>(p.unacknowledged_messages),
                static_cast<unsigned long long>(p.commits), commit_ms,
                static_cast<unsigned long long>(p.failed_commits), detail.c_str());
  }
  if (as_json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

std::optional<json> parse_json_argument(const std::string& text, const char* what) {
  auto parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) {
    std::fprintf(stderr, "dtsctl: %s is not valid JSON: %s\n", what, text.c_str());
    return std::nullopt;
  }
  return parsed;
}

/// A client of the cluster's etcd (`url`: etcd://host:port[,...]).
expected<std::unique_ptr<cluster::etcd_client>> etcd_at(const std::string& url) {
  auto options = cluster::parse_etcd_url(url);
  if (!options) return options.error();
  return cluster::etcd_client::connect(*options);
}

/// The cluster as etcd holds it now.
expected<cluster::cluster_view> view_at(const std::string& url) {
  auto client = etcd_at(url);
  if (!client) return client.error();
  return cluster::read_cluster(**client);
}

/// What one node says of the partitions it holds, per hub.
using node_report = expected<std::map<std::string, std::vector<sdk::partition_info>>>;
/// Asks a node, in the background: a node cut off must not hang the command.
std::future<node_report> ask_node(const std::string& address, const std::map<std::string, std::uint32_t>& hubs,
                                  const std::string& token, const sdk::tls_options& tls) {
  auto answer = std::make_shared<std::promise<node_report>>();
  auto answered = answer->get_future();
  // Its own thread (a client belongs to the thread that made it), left behind if
  // the node does not answer in time; the command ends soon after anyway.
  std::thread([answer, address, hubs, token, tls] {
    auto report = [&]() -> node_report {
      auto client = sdk::client::connect(address, "", token, tls);
      if (!client) return client.error();
      std::map<std::string, std::vector<sdk::partition_info>> out;
      for (const auto& [hub, count] : hubs) {
        auto partitions = (*client)->partitions(hub);
        if (!partitions) return partitions.error();
        out[hub] = std::move(*partitions);
      }
      return out;
    }();
    answer->set_value(std::move(report));
  }).detach();
  return answered;
}

/// Ends `cluster status`. A node that did not answer leaves its thread blocked in
/// a call: the process ends without running static destructors under its feet.
int finish_status(const std::map<std::string, node_report>& reports) {
  for (const auto& [id, report] : reports) {
    if (!report && report.error().code == errc::unavailable) {
      std::fflush(stdout);
      std::_Exit(0);
    }
  }
  return 0;
}

/// The cluster as etcd holds it (its nodes, and who owns each partition under which
/// epoch), with each partition's lag as its owner reports it: the work waiting for
/// a worker and how long the oldest has waited, and the messages it sent that their
/// partition has not acknowledged yet.
int cluster_status(const std::string& url, const std::string& token, const sdk::tls_options& tls, bool as_json) {
  auto view = view_at(url);
  if (!view) return refused(view.error());
  std::map<std::string, std::size_t> owned;
  for (const auto& [partition, held] : view->claims) ++owned[held.owner];
  std::map<std::string, node_report> reports;
  {
    std::map<std::string, std::future<node_report>> asked;
    for (const auto& [id, address] : view->nodes) asked.emplace(id, ask_node(address, view->hubs, token, tls));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (auto& [id, answer] : asked) {
      if (answer.wait_until(deadline) == std::future_status::ready) {
        reports.emplace(id, answer.get());
      } else {
        reports.emplace(id, error{errc::unavailable, "no answer within 3 s"});
      }
    }
  }
  // The owner's own figures for a partition, if it answered.
  auto lag_of = [&](const std::string& hub, std::uint32_t p) -> const sdk::partition_info* {
    auto held = view->claims.find({hub, p});
    if (held == view->claims.end()) return nullptr;
    auto report = reports.find(held->second.owner);
    if (report == reports.end() || !report->second) return nullptr;
    auto rows = report->second->find(hub);
    if (rows == report->second->end()) return nullptr;
    for (const auto& row : rows->second) {
      if (row.index == p) return &row;
    }
    return nullptr;
  };
  if (as_json) {
    json out = {{"revision", view->revision}, {"nodes", json::array()}, {"partitions", json::array()}};
    for (const auto& [id, address] : view->nodes) {
      json node = {{"nodeId", id}, {"address", address}, {"partitionsOwned", owned[id]},
                   {"drained", view->drained.count(id) > 0}, {"reachable", reports.at(id).has_value()}};
      if (!reports.at(id)) node["error"] = reports.at(id).error().message;
      out["nodes"].push_back(std::move(node));
    }
    for (const auto& [hub, count] : view->hubs) {
      for (std::uint32_t p = 0; p < count; ++p) {
        auto held = view->claims.find({hub, p});
        json row = {{"taskHub", hub}, {"partition", p},
                    {"owner", held == view->claims.end() ? json(nullptr) : json(held->second.owner)},
                    {"epoch", held == view->claims.end() ? 0 : held->second.epoch}, {"lag", nullptr}};
        if (const auto* lag = lag_of(hub, p)) {
          row["lag"] = {{"ready", lag->ready_orchestrators + lag->ready_activities + lag->ready_entities},
                        {"oldestReadyWaitMs", static_cast<double>(lag->oldest_ready_wait_ns) / 1e6},
                        {"unacknowledgedMessages", lag->unacknowledged_messages},
                        {"writable", lag->stalled.empty()}};
        }
        out["partitions"].push_back(std::move(row));
      }
    }
    std::printf("%s\n", out.dump().c_str());
    return finish_status(reports);
  }
  std::printf("%-24s %-28s %-11s %s\n", "NODE", "ADDRESS", "PARTITIONS", "STATE");
  for (const auto& [id, address] : view->nodes) {
    const auto& report = reports.at(id);
    std::string state = report ? "answering" : "not answering: " + report.error().message;
    if (view->drained.count(id)) state += " (drained)";
    std::printf("%-24s %-28s %-11zu %s\n", id.c_str(), address.c_str(), owned[id], state.c_str());
  }
  std::printf("\n%-20s %-9s %-24s %-10s %-7s %-13s %s\n", "TASK HUB", "PARTITION", "OWNER", "EPOCH", "READY",
              "OLDEST-WAIT", "UNACKED-MSGS");
  for (const auto& [hub, count] : view->hubs) {
    for (std::uint32_t p = 0; p < count; ++p) {
      auto held = view->claims.find({hub, p});
      if (held == view->claims.end()) {
        std::printf("%-20s %-9u %-24s %s\n", hub.c_str(), p, "(none: moving)", "-");
        continue;
      }
      std::printf("%-20s %-9u %-24s %-10lld ", hub.c_str(), p, held->second.owner.c_str(),
                  static_cast<long long>(held->second.epoch));
      if (const auto* lag = lag_of(hub, p)) {
        const auto wait = fmt_wait(lag->oldest_ready_wait_ns);
        std::printf("%-7llu %-13s %llu%s\n",
                    static_cast<unsigned long long>(lag->ready_orchestrators + lag->ready_activities +
                                                    lag->ready_entities),
                    wait.c_str(), static_cast<unsigned long long>(lag->unacknowledged_messages),
                    lag->stalled.empty() ? "" : "  (STALLED)");
      } else {
        std::printf("%-7s %-13s %s\n", "?", "?", "?");
      }
    }
  }
  return finish_status(reports);
}

/// Where an instance lives: its partition, and the node that owns it now.
int cluster_where(const std::string& url, const std::string& hub, const std::string& instance_id, bool as_json) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return refused(valid.error());
  auto view = view_at(url);
  if (!view) return refused(view.error());
  auto count = view->hubs.find(hub);
  if (count == view->hubs.end()) return refused({errc::not_found, "the cluster has no task hub '" + hub + "'"});
  const auto partition = core::partition_of(instance_id, count->second);
  auto held = view->claims.find({hub, partition});
  const bool owned = held != view->claims.end();
  auto address = owned ? view->nodes.find(held->second.owner) : view->nodes.end();
  if (as_json) {
    json out = {{"instanceId", instance_id},
                {"taskHub", hub},
                {"partition", partition},
                {"owner", owned ? json(held->second.owner) : json(nullptr)},
                {"address", address != view->nodes.end() ? json(address->second) : json(nullptr)},
                {"epoch", owned ? held->second.epoch : 0}};
    std::printf("%s\n", out.dump().c_str());
  } else if (owned) {
    std::printf("%s: partition %u of '%s', owned by node %s (%s) under epoch %lld\n", instance_id.c_str(), partition,
                hub.c_str(), held->second.owner.c_str(),
                address != view->nodes.end() ? address->second.c_str() : "address unknown",
                static_cast<long long>(held->second.epoch));
  } else {
    std::printf("%s: partition %u of '%s', owned by no node at the moment (it is moving)\n", instance_id.c_str(),
                partition, hub.c_str());
  }
  return 0;
}

std::string unix_time_text(std::int64_t s) { return s == 0 ? "never" : time_text(s * 1'000'000'000); }

/// `token create`: a new grant in the registry, and its token, shown once.
int token_create(auth::registry& files, const std::string& role_text, const std::vector<std::string>& hubs,
                 const std::string& expires, const std::string& note, bool as_json) {
  auto role = auth::parse_role(role_text);
  if (!role) return refused(role.error());
  auto lifetime = auth::parse_duration_s(expires);
  if (!lifetime) return refused(lifetime.error());
  auth::grant what;
  what.role = *role;
  what.hubs = hubs;
  what.note = note;
  what.issued_at_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  what.expires_at_s = *lifetime == 0 ? 0 : what.issued_at_s + *lifetime;
  what.id = auth::new_token_id();
  auto token = files.create(what);
  if (!token) return refused(token.error());
  if (as_json) {
    std::printf("%s\n", json{{"id", what.id}, {"token", *token}, {"expiresAt", what.expires_at_s}}.dump().c_str());
  } else {
    std::fprintf(stderr, "token %s (%s for %s, expires %s); it is shown only this once:\n", what.id.c_str(),
                 role_text.c_str(), what.all_hubs() ? "every task hub" : ("task hub " + hubs.front()).c_str(),
                 unix_time_text(what.expires_at_s).c_str());
    std::printf("%s\n", token->c_str());
  }
  return 0;
}

int token_list(const auth::registry& files, bool as_json) {
  auto tokens = files.list();
  if (!tokens) return refused(tokens.error());
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  auto state_of = [&](const auth::listed_token& t) {
    return t.revoked ? "revoked" : (t.grant.expires_at_s != 0 && now >= t.grant.expires_at_s) ? "expired" : "valid";
  };
  if (as_json) {
    json out = json::array();
    for (const auto& t : *tokens) {
      out.push_back({{"id", t.grant.id}, {"role", auth::role_name(t.grant.role)}, {"taskHubs", t.grant.hubs},
                     {"issuedAt", unix_time_text(t.grant.issued_at_s)},
                     {"expiresAt", unix_time_text(t.grant.expires_at_s)}, {"state", state_of(t)},
                     {"note", t.grant.note}});
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("%-22s %-12s %-20s %-8s %-25s %s\n", "ID", "ROLE", "TASK HUBS", "STATE", "EXPIRES", "NOTE");
  for (const auto& t : *tokens) {
    std::string hubs;
    for (const auto& h : t.grant.hubs) hubs += (hubs.empty() ? "" : ",") + h;
    std::printf("%-22s %-12s %-20s %-8s %-25s %s\n", t.grant.id.c_str(),
                std::string(auth::role_name(t.grant.role)).c_str(), hubs.c_str(), state_of(t),
                unix_time_text(t.grant.expires_at_s).c_str(), t.grant.note.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  globals g;
  CLI::App app{"dtsctl - manage dtsd task hubs and instances"};
  app.add_option("--address", g.address, "dtsd's native API")->envname("DTSD_ADDRESS")->capture_default_str();
  app.add_option("--task-hub", g.hub)->envname("DTSD_TASK_HUB")->capture_default_str();
  app.add_flag("--json", g.as_json, "Print JSON for scripts");
  app.add_option("--token", g.token, "A token, for a dtsd run with --auth (dtsctl token create)")->envname("DTSD_TOKEN");
  app.add_option("--tls-ca", g.tls.ca, "PEM CA to trust: dtsd's native API serves TLS (or give --address tls://HOST:PORT)")->envname("DTSD_TLS_CA");
  app.add_option("--tls-client-cert", g.tls.cert, "PEM client certificate, for a dtsd run with --tls-client-ca")->envname("DTSD_TLS_CLIENT_CERT");
  app.add_option("--tls-client-key", g.tls.key, "PEM key of --tls-client-cert")->envname("DTSD_TLS_CLIENT_KEY");
  app.add_option("--tls-server-name", g.tls.server_name, "The name dtsd's certificate must carry (default: --address's host)")->envname("DTSD_TLS_SERVER_NAME");
  app.require_subcommand(1);

  auto* taskhub = app.add_subcommand("taskhub", "List, create and delete task hubs")->require_subcommand(1);
  auto* hub_list = taskhub->add_subcommand("list", "List task hubs");
  std::string hub_name;
  std::uint32_t hub_partitions = 0;
  auto* hub_create = taskhub->add_subcommand("create", "Create a task hub");
  hub_create->add_option("name", hub_name)->required();
  hub_create->add_option("--partitions", hub_partitions, "Partitions (default: the server's)");
  auto* hub_delete = taskhub->add_subcommand("delete", "Delete a task hub and all its data");
  hub_delete->add_option("name", hub_name)->required();
  bool force_delete = false;
  hub_delete->add_flag("--force", force_delete, "Also when it still holds instances (they are deleted too)");
  auto* hub_status = taskhub->add_subcommand("status", "Show whether each partition of a hub can write");
  hub_status->add_option("name", hub_name, "The hub (default: --task-hub)");

  auto* instance = app.add_subcommand("instance", "Work with orchestration instances")->require_subcommand(1);
  std::string id, name, input = "null", data = "null", reason, event;
  std::vector<std::string> statuses;
  std::string name_prefix, id_prefix;
  std::uint32_t page_size = 100;
  bool all_pages = false, with_history = false, recurse = false, new_id = false;
  auto* list = instance->add_subcommand("list", "List instances");
  list->add_option("--status", statuses, "Running, Completed, Failed, ... (repeatable)");
  list->add_option("--name-prefix", name_prefix);
  list->add_option("--id-prefix", id_prefix);
  std::optional<std::string> version_filter;
  list->add_option("--version", version_filter, "Only instances of this orchestration version");
  list->add_option("--page-size", page_size)->check(CLI::Range(1u, 1000u));
  list->add_flag("--all", all_pages, "Follow continuation tokens to the end");
  auto* show = instance->add_subcommand("show", "Show one instance");
  show->add_option("id", id)->required();
  show->add_flag("--history", with_history);
  auto* start = instance->add_subcommand("start", "Start an orchestration");
  start->add_option("name", name)->required();
  start->add_option("--input", input, "JSON input");
  start->add_option("--id", id, "Instance id (default: random)");
  std::string start_version;
  start->add_option("--version", start_version, "The orchestration's version");
  auto* raise = instance->add_subcommand("raise", "Raise an event");
  raise->add_option("id", id)->required();
  raise->add_option("event", event)->required();
  raise->add_option("--data", data, "JSON event data");
  auto* terminate = instance->add_subcommand("terminate", "Terminate an instance");
  terminate->add_option("id", id)->required();
  terminate->add_option("--reason", reason, "JSON reason");
  terminate->add_flag("--recurse", recurse, "Terminate its sub-orchestrations too");
  auto* suspend = instance->add_subcommand("suspend", "Suspend an instance");
  suspend->add_option("id", id)->required();
  suspend->add_option("--reason", reason);
  auto* resume = instance->add_subcommand("resume", "Resume an instance");
  resume->add_option("id", id)->required();
  resume->add_option("--reason", reason);
  auto* rewind = instance->add_subcommand("rewind", "Resume a failed orchestration from its last good point");
  rewind->add_option("id", id)->required();
  rewind->add_option("--reason", reason);
  auto* restart = instance->add_subcommand("restart", "Start a finished instance again with its input");
  restart->add_option("id", id)->required();
  restart->add_flag("--new-id", new_id, "Under a new random id instead of the same one");
  auto* purge = instance->add_subcommand("purge", "Delete a finished instance and its history");
  purge->add_option("id", id)->required();
  purge->add_flag("--recursive", recurse, "Its finished sub-orchestrations too");
  auto* purge_where = instance->add_subcommand("purge-where", "Delete every finished instance that matches");
  purge_where->add_option("--status", statuses, "Completed, Failed, Terminated, Canceled (repeatable)");
  purge_where->add_option("--name-prefix", name_prefix);
  purge_where->add_option("--id-prefix", id_prefix);
  purge_where->add_flag("--recursive", recurse, "Their finished sub-orchestrations too");
  auto* entity = app.add_subcommand("entity", "Work with durable entities (@name@key)")->require_subcommand(1);
  auto* entity_list = entity->add_subcommand("list", "List entities");
  entity_list->add_option("--id-prefix", id_prefix, "e.g. @counter@");
  entity_list->add_option("--page-size", page_size)->check(CLI::Range(1u, 1000u));
  entity_list->add_flag("--all", all_pages, "Follow continuation tokens to the end");
  auto* entity_show = entity->add_subcommand("show", "Show one entity and its state");
  entity_show->add_option("id", id)->required();
  std::string operation;
  auto* entity_signal = entity->add_subcommand("signal", "Send an operation to an entity");
  entity_signal->add_option("id", id)->required();
  entity_signal->add_option("operation", operation)->required();
  entity_signal->add_option("--input", input, "JSON input");
  bool keep_empty = false, keep_locks = false;
  auto* entity_clean = entity->add_subcommand("clean", "Remove empty entities and release orphaned locks");
  entity_clean->add_flag("--keep-empty", keep_empty, "Do not remove entities without state");
  entity_clean->add_flag("--keep-orphaned-locks", keep_locks, "Do not release locks of ended orchestrations");
  auto* worker = app.add_subcommand("worker", "See the connected workers")->require_subcommand(1);
  auto* worker_list = worker->add_subcommand("list", "List worker sessions, their slots and what they take");
  auto* retention = app.add_subcommand("retention", "How long the hub keeps ended orchestrations before purging them")
                        ->require_subcommand(1);
  auto* retention_show = retention->add_subcommand("show", "The policy in force, and whether it is the hub's own");
  auto* retention_set = retention->add_subcommand("set", "Give the hub a policy of its own (in force at once)");
  auto* retention_delete = retention->add_subcommand("delete", "Drop the hub's own policy: dtsd's default applies");
  std::map<std::string, std::string> retention_rules;
  retention_set->add_option("--default", retention_rules["default"],
                            "Every ended status without a rule of its own: 30d, 12h, 0s (at once), forever (unset: forever)");
  for (const char* status : {"completed", "failed", "canceled", "terminated"}) {
    retention_set->add_option(std::string("--") + status, retention_rules[status],
                              std::string("Orchestrations that ended ") + status);
  }
  auto* schedule_cmd = app.add_subcommand("schedule", "Start orchestrations on a schedule (an interval or cron)")
                           ->require_subcommand(1);
  auto* schedule_create = schedule_cmd->add_subcommand("create", "Create a schedule");
  auto* schedule_update = schedule_cmd->add_subcommand("update", "Change a schedule (what is not given stays)");
  schedule_options sched;
  std::string schedule_id, schedule_note;
  for (auto* sub : {schedule_create, schedule_update}) {
    sub->add_option("id", schedule_id, "Schedule id (A-Z a-z 0-9 _ - ., up to 64)")->required();
    sub->add_option("--orchestration", sched.orchestration, "The orchestration each run starts");
    sub->add_option("--every", sched.every, "An interval: 30s, 5m, 1h, 1d (slots count from --start-at or the epoch)");
    sub->add_option("--cron", sched.cron, "A cron expression: 5 fields, or 6 with seconds first");
    sub->add_option("--time-zone", sched.time_zone, "IANA time zone the cron expression is read in (default UTC)");
    sub->add_option("--input", sched.input, "Each run's input (JSON)");
    sub->add_option("--version", sched.version, "The orchestration version");
    sub->add_option("--id-template", sched.id_template, "Run ids; {schedule} and {slot} replaced (default {schedule}-{slot})");
    sub->add_option("--start-at", sched.start_at, "No run before this (RFC 3339)");
    sub->add_option("--end-at", sched.end_at, "No run after this (RFC 3339)");
    sub->add_option("--overlap", sched.overlap, "A slot while the last run runs: skip (default), buffer-one, allow-all");
    sub->add_option("--catch-up", sched.catch_up, "Slots missed while down: one (default), all, skip");
    sub->add_option("--catch-up-max", sched.catch_up_max, "With --catch-up all: at most this many (default 100)");
  }
  auto* schedule_list = schedule_cmd->add_subcommand("list", "Every schedule of the hub, with its next and last run");
  std::map<std::string, CLI::App*> schedule_verbs;
  for (auto [verb, what] : {std::pair{"show", "A schedule, its last run and its counts"},
                            {"pause", "Stop starting runs (slots while paused are skipped)"},
                            {"resume", "Start runs again from the next slot"},
                            {"trigger", "Start a run now, whatever the overlap policy"},
                            {"delete", "Delete a schedule (its runs stay)"}}) {
    auto* sub = schedule_cmd->add_subcommand(verb, what);
    sub->add_option("id", schedule_id, "Schedule id")->required();
    if (std::string_view(verb) == "pause") sub->add_option("--note", schedule_note, "Why (shown with it)");
    schedule_verbs[verb] = sub;
  }
  auto* export_cmd = app.add_subcommand("export", "Write orchestrations with their histories to a file, JSON Lines "
                                                  "(resumable: run the same command again)");
  cli::export_options exported;
  std::vector<std::string> export_statuses;
  std::string export_name_prefix, export_id_prefix, export_created_from, export_created_to;
  std::uint32_t export_page_size = 100;
  export_cmd->add_option("--to", exported.to, "The file (FILE.gz is compressed); its progress is kept in FILE.progress")
      ->required();
  export_cmd->add_flag("--gzip", exported.gzip, "Compress with gzip (also when the file ends in .gz)");
  export_cmd->add_option("--status", export_statuses, "Only these statuses (repeat)");
  export_cmd->add_option("--name-prefix", export_name_prefix, "Only names starting with this");
  export_cmd->add_option("--id-prefix", export_id_prefix, "Only instance ids starting with this");
  export_cmd->add_option("--created-from", export_created_from, "Created at or after (RFC 3339)");
  export_cmd->add_option("--created-to", export_created_to, "Created at or before (RFC 3339)");
  export_cmd->add_option("--completed-from", exported.completed_from, "Ended at or after (RFC 3339); only ended ones");
  export_cmd->add_option("--completed-to", exported.completed_to, "Ended at or before (RFC 3339); only ended ones");
  export_cmd->add_flag("--purge", exported.purge, "Purge each page's orchestrations once the page is on disk");
  export_cmd->add_flag("--restart", exported.restart, "Start over: replace the file and forget its progress");
  export_cmd->add_option("--follow", exported.follow_s,
                         "Keep going: look for new matches every this many seconds until Ctrl-C (needs --purge)");
  export_cmd->add_option("--page-size", export_page_size, "Orchestrations per page (in memory at once)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  // Local too: it works on the files, while dtsd is stopped.
  auto* compact_cmd = app.add_subcommand("compact", "Rewrite the data directory's stores without their free pages "
                                                    "(dtsd must be stopped)");
  std::string compact_dir = "./dtsd-data", compact_hub;
  compact_cmd->add_option("--data-dir", compact_dir, "dtsd's data directory")->envname("DTSD_DATA_DIR")->capture_default_str();
  compact_cmd->add_option("--only-task-hub", compact_hub, "Only this hub's partitions");
  auto* cluster_cmd = app.add_subcommand("cluster", "See a dtsd cluster as etcd holds it")->require_subcommand(1);
  std::string etcd_url;
  auto* cluster_show = cluster_cmd->add_subcommand("status", "Nodes, and each partition's owner and epoch");
  auto* cluster_drain = cluster_cmd->add_subcommand("drain", "Move a node's partitions to the others; it stays up");
  auto* cluster_undrain = cluster_cmd->add_subcommand("undrain", "Let a drained node own partitions again");
  auto* cluster_where_cmd = cluster_cmd->add_subcommand("where", "Which partition and node an instance lives on");
  std::string where_id;
  cluster_where_cmd->add_option("id", where_id, "The instance id")->required();
  std::string drain_node;
  for (auto* command : {cluster_show, cluster_drain, cluster_undrain, cluster_where_cmd}) {
    command->add_option("--cluster", etcd_url, "etcd of the cluster: etcd://host:port[,host:port...]")
        ->envname("DTSD_CLUSTER")
        ->required();
  }
  cluster_drain->add_option("node", drain_node, "The node's id")->required();
  cluster_undrain->add_option("node", drain_node, "The node's id")->required();

  // Tokens are made from the auth directory's key, on the machine that has it:
  // no call to a server, so the first token can be made before anyone has one.
  auto* token_cmd = app.add_subcommand("token", "Create, list and revoke access tokens (local: reads the auth directory)")
                        ->require_subcommand(1);
  std::string auth_dir, data_dir = "./dtsd-data", token_role, token_expires = "30d", token_note, revoke_id;
  std::vector<std::string> token_hubs;
  auto* token_create_cmd = token_cmd->add_subcommand("create", "Issue a token (printed once)");
  token_create_cmd->add_option("--role", token_role, "contributor | worker | reader")->required();
  token_create_cmd->add_option("--task-hub", token_hubs, "A task hub it is for (repeat for more), or '*' for every hub")
      ->required();
  token_create_cmd->add_option("--expires", token_expires, "How long it is valid: 30d, 12h, 45m, or never")
      ->capture_default_str();
  token_create_cmd->add_option("--note", token_note, "Whom it is for");
  auto* token_list_cmd = token_cmd->add_subcommand("list", "List issued tokens (never the tokens themselves)");
  auto* token_revoke_cmd = token_cmd->add_subcommand("revoke", "Revoke a token: refused within a second");
  token_revoke_cmd->add_option("id", revoke_id, "The token's id")->required();
  for (auto* command : {token_create_cmd, token_list_cmd, token_revoke_cmd}) {
    command->add_option("--auth-dir", auth_dir, "dtsd's auth directory (default: DATA-DIR/auth)")->envname("DTSD_AUTH_DIR");
    command->add_option("--data-dir", data_dir, "dtsd's data directory")->envname("DTSD_DATA_DIR")->capture_default_str();
  }
  CLI11_PARSE(app, argc, argv);

  if (compact_cmd->parsed()) return compact(compact_dir, compact_hub, g.as_json);
  if (token_cmd->parsed()) {
    auth::registry files(auth_dir.empty() ? std::filesystem::path(data_dir) / "auth" : std::filesystem::path(auth_dir));
    if (token_create_cmd->parsed()) return token_create(files, token_role, token_hubs, token_expires, token_note, g.as_json);
    if (token_list_cmd->parsed()) return token_list(files, g.as_json);
    if (auto revoked = files.revoke(revoke_id); !revoked) return refused(revoked.error());
    std::printf("revoked token %s\n", revoke_id.c_str());
    return 0;
  }

  if (cluster_show->parsed()) return cluster_status(etcd_url, g.token, g.tls, g.as_json);
  if (cluster_where_cmd->parsed()) return cluster_where(etcd_url, g.hub, where_id, g.as_json);
  if (cluster_drain->parsed() || cluster_undrain->parsed()) {
    const bool drain = cluster_drain->parsed();
    auto client = etcd_at(etcd_url);
    if (!client) return refused(client.error());
    auto view = cluster::read_cluster(**client);
    if (!view) return refused(view.error());
    if (drain && !view->nodes.count(drain_node)) {
      return refused({errc::not_found, "no live node '" + drain_node + "' in the cluster"});
    }
    if (auto set = cluster::set_drained(**client, drain_node, drain); !set) return refused(set.error());
    std::printf("%s\n", (drain ? "draining node " + drain_node + ": its partitions move to the others"
                               : "node " + drain_node + " may own partitions again").c_str());
    return 0;
  }

  // Task hub commands work whatever hubs exist; instance commands need theirs.
  auto connected = sdk::client::connect(g.address, taskhub->parsed() ? std::string() : g.hub, g.token, g.tls);
  if (!connected) return refused(connected.error());
  auto& client = **connected;
  auto done = [&](expected<void> result, const std::string& what) {
    if (!result) return refused(result.error());
    if (g.as_json) {
      std::printf("%s\n", json({{"ok", true}, {"instanceId", id}}).dump().c_str());
    } else {
      std::printf("%s\n", what.c_str());
    }
    return 0;
  };

  if (worker_list->parsed()) return list_workers(client, g.as_json);
  if (retention_show->parsed()) return show_retention(client.retention(), g.hub, g.as_json);
  if (retention_delete->parsed()) return show_retention(client.set_retention(std::nullopt), g.hub, g.as_json);
  if (retention_set->parsed()) {
    auto policy = retention_asked(retention_rules);
    if (!policy) {
      std::fprintf(stderr, "dtsctl: %s\n", policy.error().message.c_str());
      return 2;
    }
    return show_retention(client.set_retention(*policy), g.hub, g.as_json);
  }
  if (export_cmd->parsed()) {
    auto filter = filter_of(export_statuses, export_name_prefix, export_id_prefix);
    if (!filter) return 2;
    for (auto [text, bound] : {std::pair{&export_created_from, &filter->created_from},
                               {&export_created_to, &filter->created_to}}) {
      if (text->empty()) continue;
      auto at = core::parse_time(*text);
      if (!at) {
        std::fprintf(stderr, "dtsctl: %s\n", at.error().message.c_str());
        return 2;
      }
      *bound = std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(*at)));
    }
    filter->page_size = export_page_size;
    exported.filter = std::move(*filter);
    if (exported.to.size() > 3 && exported.to.substr(exported.to.size() - 3) == ".gz") exported.gzip = true;
    return cli::export_instances(client, exported, g.as_json);
  }
  if (schedule_create->parsed() || schedule_update->parsed()) {
    json base = json::object();
    if (schedule_update->parsed()) {
      auto current = client.get_schedule(schedule_id);
      if (!current) return refused(current.error());
      base = json::parse(core::to_json(current->spec));
    }
    auto spec = schedule_asked(schedule_id, sched, std::move(base));
    if (!spec) {
      std::fprintf(stderr, "dtsctl: %s\n", spec.error().message.c_str());
      return 2;
    }
    auto answered = schedule_create->parsed() ? client.create_schedule(*spec) : client.update_schedule(*spec);
    if (!answered) return refused(answered.error());
    return show_schedules(std::vector{*answered}, g.as_json, false);
  }
  if (schedule_list->parsed()) return show_schedules(client.list_schedules(), g.as_json, true);
  for (const auto& [verb, sub] : schedule_verbs) {
    if (!sub->parsed()) continue;
    using v = core::schedule_command::verb;
    const auto what = verb == "show" ? v::get : verb == "pause" ? v::pause : verb == "resume" ? v::resume
                    : verb == "trigger" ? v::trigger : v::remove;
    auto answered = client.schedule({what, schedule_id, {}, schedule_note});
    if (answered && verb == "trigger" && !g.as_json && answered->size() == 1) {
      std::printf("started %s\n", answered->front().state.last_instance_id.c_str());
      return 0;
    }
    if (answered && verb == "delete" && !g.as_json) {
      std::printf("deleted schedule '%s'\n", schedule_id.c_str());
      return 0;
    }
    return show_schedules(answered, g.as_json, false);
  }
  if (hub_list->parsed()) {
    auto hubs = client.task_hubs();
    if (!hubs) return refused(hubs.error());
    if (g.as_json) {
      std::printf("%s\n", json(*hubs).dump().c_str());
    } else {
      for (const auto& hub : *hubs) std::printf("%s\n", hub.c_str());
    }
    return 0;
  }
  if (hub_status->parsed()) return show_partitions(client, hub_name.empty() ? g.hub : hub_name, g.as_json);
  if (hub_create->parsed()) return done(client.create_task_hub(hub_name, hub_partitions), "created task hub " + hub_name);
  if (hub_delete->parsed()) {
    return done(client.delete_task_hub(hub_name, force_delete), "deleted task hub " + hub_name);
  }

  // One page, or with --all every page; then JSON or a table.
  auto list_pages = [&](sdk::query_options options, const char* key, auto to_json, auto print) {
    options.page_size = page_size;
    std::vector<core::instance_record> records;
    std::string token;
    do {
      auto page = client.query(options);
      if (!page) return refused(page.error());
      records.insert(records.end(), page->instances.begin(), page->instances.end());
      token = page->continuation_token;
      options.continuation_token = token;
    } while (all_pages && !token.empty());
    if (g.as_json) {
      json out = {{key, json::array()}, {"continuationToken", token}};
      for (const auto& r : records) out[key].push_back(to_json(r));
      std::printf("%s\n", out.dump().c_str());
    } else {
      print(records);
      if (!token.empty()) std::printf("(more: --all, or the next page from token %s)\n", token.c_str());
    }
    return 0;
  };
  if (list->parsed()) {
    auto options = filter_of(statuses, name_prefix, id_prefix);
    if (!options) return 2;
    options->version = version_filter;
    return list_pages(*options, "instances", record_json, print_table);
  }
  if (entity_list->parsed()) {
    sdk::query_options options;
    options.entities = true;
    options.instance_id_prefix = id_prefix;
    return list_pages(options, "entities", entity_json, print_entity_table);
  }
  if (entity_show->parsed()) {
    auto found = client.get_entity(id);
    if (!found) return refused(found.error());
    if (!*found) return refused({errc::not_found, "entity '" + id + "' has no state"});
    std::printf("%s\n", entity_json(**found).dump(g.as_json ? -1 : 2).c_str());
    return 0;
  }
  if (entity_signal->parsed()) {
    auto parsed = parse_json_argument(input, "--input");
    if (!parsed) return 2;
    return done(client.signal_entity(id, operation, *parsed), "signaled " + operation + " to " + id);
  }
  if (entity_clean->parsed()) {
    auto cleaned = client.clean_entity_storage(!keep_empty, !keep_locks);
    if (!cleaned) return refused(cleaned.error());
    if (g.as_json) {
      std::printf("%s\n", json({{"removed", cleaned->removed}, {"released", cleaned->released}}).dump().c_str());
    } else {
      std::printf("removed %zu empty entit(ies), released %zu orphaned lock(s)\n", cleaned->removed, cleaned->released);
    }
    return 0;
  }
  if (show->parsed()) {
    auto found = client.get(id);
    if (!found) return refused(found.error());
    if (!*found) return refused({errc::not_found, "no instance with id '" + id + "'"});
    auto out = record_json(**found);
    if (with_history) {
      auto history = client.history(id);
      if (!history) return refused(history.error());
      out["history"] = json::array();
      for (const auto& e : *history) {
        out["history"].push_back({{"eventId", e.event_id}, {"kind", event_kind(e)}, {"timestamp", time_text(e.timestamp_ns)}});
      }
    }
    std::printf("%s\n", out.dump(g.as_json ? -1 : 2).c_str());
    return 0;
  }
  if (start->parsed()) {
    auto parsed = parse_json_argument(input, "--input");
    if (!parsed) return 2;
    sdk::start_options options;
    options.instance_id = id;
    if (!start_version.empty()) options.version = start_version;
    auto started = client.start(name, *parsed, options);
    if (!started) return refused(started.error());
    id = *started;
    if (g.as_json) {
      std::printf("%s\n", json({{"instanceId", *started}}).dump().c_str());
    } else {
      std::printf("started %s\n", started->c_str());
    }
    return 0;
  }
  if (raise->parsed()) {
    auto parsed = parse_json_argument(data, "--data");
    if (!parsed) return 2;
    return done(client.raise_event(id, event, *parsed), "raised " + event + " on " + id);
  }
  if (terminate->parsed()) {
    json why = reason.empty() ? json() : json(reason);
    return done(client.terminate(id, why, recurse), "terminated " + id);
  }
  if (suspend->parsed()) return done(client.suspend(id, reason), "suspended " + id);
  if (resume->parsed()) return done(client.resume(id, reason), "resumed " + id);
  if (rewind->parsed()) return done(client.rewind(id, reason), "rewound " + id);
  auto purged = [&](expected<std::size_t> count) {
    if (!count) return refused(count.error());
    if (g.as_json) {
      std::printf("%s\n", json({{"purged", *count}}).dump().c_str());
    } else {
      std::printf("purged %zu instance(s)\n", *count);
    }
    return 0;
  };
  if (purge->parsed()) return purged(client.purge(id, recurse));
  if (purge_where->parsed()) {
    auto filter = filter_of(statuses, name_prefix, id_prefix);
    if (!filter) return 2;
    return purged(client.purge_where(*filter, recurse));
  }
  if (restart->parsed()) {
    auto restarted = client.restart(id, new_id);
    if (!restarted) return refused(restarted.error());
    id = *restarted;
    return done({}, "restarted as " + *restarted);
  }
  return 2;
}
