#pragma once
/// Conversions between the core model and the messages of the Durable Task gRPC
/// protocol (schema/durabletask.proto). Readers of network input check what the
/// protocol leaves open (an action with no body, an unknown status) and answer
/// invalid_argument naming the field instead of guessing.

#include <cstdint>

#include "core/error.hpp"
#include "core/model.hpp"
#include "core/work_filter.hpp"
#include "durabletask.pb.h"

namespace dtsd::grpc_api {

std::int64_t to_ns(const google::protobuf::Timestamp& time);
/// Every Timestamp anywhere in `message` is a valid protobuf time: years 1 to
/// 9999, nanos in [0, 1e9). A request with another is refused (naming the field)
/// rather than stored.
expected<void> check_times(const google::protobuf::Message& message);
void set_time(google::protobuf::Timestamp* time, std::int64_t ns);

/// A StringValue field: null unless `present`.
core::payload read_payload(const google::protobuf::StringValue& value, bool present);

expected<core::runtime_status> read(OrchestrationStatus status);
OrchestrationStatus to_proto(core::runtime_status status);

core::failure_details read(const TaskFailureDetails& failure);
void write(TaskFailureDetails* out, const core::failure_details& failure);

expected<core::history_event> read(const HistoryEvent& event);
void write(HistoryEvent* out, const core::history_event& event);

void write(OrchestrationState* out, const core::instance_record& record, bool with_payloads);

expected<core::orchestrator_action> read(const OrchestratorAction& action);
/// The completion without its token (the endpoint resolves the token itself).
expected<core::orchestrator_completion> read(const OrchestratorResponse& response);

void write(OrchestratorRequest* out, const core::orchestrator_work_item& item);
/// An entity batch (an orchestrator work item with `entity` set).
void write(EntityRequest* out, const core::orchestrator_work_item& item);
expected<core::entity_batch_result> read(const EntityBatchResult& result);
/// An entity's record as the protocol's EntityMetadata.
void write(EntityMetadata* out, const core::instance_record& record, bool with_state);
void write(ActivityRequest* out, const core::activity_request& request);

/// A worker's work item filters. None, or all three lists empty: everything.
core::work_filters read(const WorkItemFilters& filters);

}  // namespace dtsd::grpc_api
