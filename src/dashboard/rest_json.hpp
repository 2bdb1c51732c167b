#pragma once
/// The JSON shapes of the DTS REST API. Records and history events are the gRPC
/// protocol's messages in protobuf-JSON (camelCase names, enum names such as
/// ORCHESTRATION_STATUS_RUNNING, RFC 3339 timestamps), which is what DTS's own
/// clients read; they are made through the same conversions the gRPC endpoint
/// uses, so the two APIs cannot drift apart.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "core/error.hpp"
#include "core/model.hpp"
#include "service/types.hpp"

namespace dtsd::dashboard {

using json = nlohmann::json;

/// An orchestration's metadata (the list's rows, GET orchestrations/{id}): no payloads.
json orchestration_json(const core::instance_record& record);
/// GET orchestrations/{id}/payloads.
json payloads_json(const core::instance_record& record);
/// One history event: eventId, timestamp and one key naming its kind.
json history_event_json(const core::history_event& event);
/// An entity row of entities/query.
json entity_json(const core::instance_record& record);
json worker_json(const service::worker_view& worker);

/// "ORCHESTRATION_STATUS_RUNNING"; also accepts "RUNNING" and "Running".
std::optional<core::runtime_status> parse_status(const std::string& text);
std::string status_name(core::runtime_status status);

std::string rfc3339(std::int64_t ns);
expected<std::int64_t> parse_rfc3339(const std::string& text);

/// A JSON payload field: a string is the serialized payload as is; any other JSON
/// value is serialized; null or absent is no payload.
core::payload payload_of(const json& value);

}  // namespace dtsd::dashboard
