#include "dashboard/rest_json.hpp"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <fmt/format.h>

#include "grpc/proto_convert.hpp"

namespace dtsd::dashboard {
namespace {

/// Protobuf-JSON of `message` as an object (empty should protobuf refuse it).
json to_json(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  if (!google::protobuf::util::MessageToJsonString(message, &text, options).ok()) return json::object();
  auto parsed = json::parse(text, nullptr, false);
  return parsed.is_object() ? parsed : json::object();
}

}  // namespace

json orchestration_json(const core::instance_record& record) {
  OrchestrationState state;
  grpc_api::write(&state, record, false);
  auto out = to_json(state);
  // Protobuf-JSON leaves out fields at their default: RUNNING is the status enum's 0.
  out["orchestrationStatus"] = status_name(record.status);
  return out;
}

json payloads_json(const core::instance_record& record) {
  json out = json::object();
  if (record.input) out["input"] = *record.input;
  if (record.output) out["output"] = *record.output;
  if (record.custom_status) out["customStatus"] = *record.custom_status;
  out["orchestrationStatus"] = status_name(record.status);
  if (record.failure) {
    TaskFailureDetails failure;
    grpc_api::write(&failure, *record.failure);
    out["failureDetails"] = to_json(failure);
  }
  return out;
}

json history_event_json(const core::history_event& event) {
  HistoryEvent message;
  grpc_api::write(&message, event);
  auto out = to_json(message);
  out["eventId"] = event.event_id;  // Also 0, which protobuf-JSON would leave out.
  return out;
}

json entity_json(const core::instance_record& record) {
  json out = json::object();
  out["instanceId"] = record.instance_id;
  out["lastModifiedTime"] = rfc3339(record.last_updated_at_ns);
  out["backlogQueueSize"] = record.entity_deferred.size();
  if (!record.entity_locked_by.empty()) out["lockedBy"] = record.entity_locked_by;
  return out;
}

json worker_json(const service::worker_view& worker) {
  json out = json::object();
  out["workerId"] = worker.worker.empty() ? fmt::format("session-{}", worker.session) : worker.worker;
  out["activeOrchestrationsCount"] = worker.in_use.orchestrators;
  out["maxOrchestrationsCount"] = worker.slots.orchestrators;
  out["activeActivitiesCount"] = worker.in_use.activities;
  out["maxActivitiesCount"] = worker.slots.activities;
  out["activeEntitiesCount"] = worker.in_use.entities;
  out["maxEntitiesCount"] = worker.slots.entities;
  // What it takes, when it said (none: everything).
  const auto& filters = worker.filters;
  if (filters.orchestrations || filters.activities || filters.entities) {
    auto list = [](const core::kind_filter& kind) {
      json names = json::array();
      for (const auto& name : kind.value_or(std::vector<core::name_filter>{})) {
        if (name.versions.empty()) names.push_back({{"name", name.name}});
        for (const auto& version : name.versions) names.push_back({{"name", name.name}, {"version", version}});
      }
      return names;
    };
    out["workItemFilters"] = {{"orchestrations", list(filters.orchestrations)},
                              {"activities", list(filters.activities)},
                              {"entities", list(filters.entities)}};
  }
  return out;
}

std::string status_name(core::runtime_status status) {
  return OrchestrationStatus_Name(grpc_api::to_proto(status));
}

std::optional<core::runtime_status> parse_status(const std::string& text) {
  std::string upper;
  for (char c : text) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (upper.rfind("ORCHESTRATION_STATUS_", 0) != 0) upper = "ORCHESTRATION_STATUS_" + upper;
  OrchestrationStatus parsed{};
  if (!OrchestrationStatus_Parse(upper, &parsed)) return std::nullopt;
  auto status = grpc_api::read(parsed);
  if (!status) return std::nullopt;
  return *status;
}

std::string rfc3339(std::int64_t ns) {
  google::protobuf::Timestamp time;
  grpc_api::set_time(&time, ns);
  return google::protobuf::util::TimeUtil::ToString(time);
}

expected<std::int64_t> parse_rfc3339(const std::string& text) {
  google::protobuf::Timestamp time;
  if (!google::protobuf::util::TimeUtil::FromString(text, &time)) {
    return error{errc::invalid_argument, fmt::format("'{}' is not an RFC 3339 time", text)};
  }
  return grpc_api::to_ns(time);
}

core::payload payload_of(const json& value) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

}  // namespace dtsd::dashboard
