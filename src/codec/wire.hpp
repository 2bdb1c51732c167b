#pragma once
/// Conversions between the core model and the Cap'n Proto structs of the native
/// RPC API (the same structs the store uses, so one codec serves both). Readers of
/// network input throw kj::Exception on malformed data; the RPC layer turns that
/// into an error for the caller.

#include <cstdint>
#include <utility>

#include "core/model.hpp"
#include "log.capnp.h"
#include "model.capnp.h"

namespace dtsd::codec::wire {

core::start_request read(schema::StartRequest::Reader reader);
void write(schema::StartRequest::Builder builder, const core::start_request& value);

core::instance_record read(schema::InstanceRecord::Reader reader);
void write(schema::InstanceRecord::Builder builder, const core::instance_record& value);

core::history_event read(schema::HistoryEvent::Reader reader);
void write(schema::HistoryEvent::Builder builder, const core::history_event& value);

core::orchestrator_completion read(schema::OrchestratorCompletion::Reader reader);
void write(schema::OrchestratorCompletion::Builder builder, const core::orchestrator_completion& value);

core::activity_result read(schema::ActivityCompletion::Reader reader);
void write(schema::ActivityCompletion::Builder builder, const core::activity_result& value);

core::orchestrator_work_item read(schema::OrchestratorWorkItem::Reader reader);
void write(schema::OrchestratorWorkItem::Builder builder, const core::orchestrator_work_item& value);

/// An activity work item: the request and its lease token.
std::pair<core::activity_request, std::uint64_t> read(schema::ActivityWorkItem::Reader reader);
void write(schema::ActivityWorkItem::Builder builder, const core::activity_request& request,
           std::uint64_t token);

core::instance_message read(schema::InstanceMessage::Reader reader);
void write(schema::InstanceMessage::Builder builder, const core::instance_message& value);

core::terminate_request read(schema::TerminateRequest::Reader reader);
void write(schema::TerminateRequest::Builder builder, const core::terminate_request& value);

core::tag_map read(capnp::List<schema::Tag>::Reader reader);
void write(capnp::List<schema::Tag>::Builder builder, const core::tag_map& value);
core::runtime_status read(schema::OrchestrationStatus status);
schema::OrchestrationStatus write(core::runtime_status status);

}  // namespace dtsd::codec::wire
