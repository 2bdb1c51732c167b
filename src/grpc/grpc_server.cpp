#include "grpc/grpc_server.hpp"

#include <absl/synchronization/mutex.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <thread>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "auth/authority.hpp"
#include "core/ids.hpp"
#include "core/orchestration.hpp"
#include "core/overloaded.hpp"
#include "durabletask.grpc.pb.h"
#include "grpc/calls.hpp"
#include "grpc/history_stream.hpp"
#include "grpc/proto_convert.hpp"
#include "grpc/work_stream.hpp"

namespace dtsd::grpc_api {
namespace {

/// How often gRPC's TLS files are looked at again (a renewed certificate is used
/// from then on; connections already made keep theirs).
constexpr unsigned tls_refresh_seconds = 5;

// ------------------------------------------------------------------ the service

/// A server stream refused before it began: finished at once with the refusal.
template <class Item>
class refused_stream final : public grpc::ServerWriteReactor<Item> {
 public:
  explicit refused_stream(Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

class grpc_service final : public TaskHubSidecarService::CallbackService {
 public:
  grpc_service(service::task_service& scheduler, grpc_options options)
      : scheduler_(scheduler), options_(std::move(options)) {}

  ServerUnaryReactor* Hello(CallbackServerContext* context, const google::protobuf::Empty*,
                            google::protobuf::Empty*) override {
    if (auto* refused = refuse_unauthenticated(context)) return refused;
    auto* reactor = context->DefaultReactor();
    reactor->Finish(Status::OK);
    return reactor;
  }

  ServerUnaryReactor* StartInstance(CallbackServerContext* context, const CreateInstanceRequest* request,
                                    CreateInstanceResponse* response) override {
    if (auto* refused = refuse(context, auth::action::write, "StartInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    auto start = read_start(*request);
    if (!start) {
      unary_call::finish(call->shared(), to_status(start.error()));
      return call;
    }
    scheduler_.start(task_hub_of(context), std::move(*start),
                     answer_with<service::started>(call->shared(), [response](const service::started& started) {
                       response->set_instance_id(started.instance_id);
                     }));
    return call;
  }

  ServerUnaryReactor* GetInstance(CallbackServerContext* context, const GetInstanceRequest* request,
                                  GetInstanceResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "GetInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    const bool payloads = request->get_inputs_and_outputs();
    scheduler_.get(task_hub_of(context), request->instance_id(), false,
                   answer_with<std::optional<service::instance_view>>(
                       call->shared(), [response, payloads](const std::optional<service::instance_view>& view) {
                         response->set_exists(view.has_value());
                         if (view) write(response->mutable_orchestration_state(), view->record, payloads);
                       }));
    return call;
  }

  ServerUnaryReactor* WaitForInstanceStart(CallbackServerContext* context, const GetInstanceRequest* request,
                                           GetInstanceResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "WaitForInstanceStart")) return refused;
    return wait(context, *request, response, false);
  }

  ServerUnaryReactor* WaitForInstanceCompletion(CallbackServerContext* context, const GetInstanceRequest* request,
                                                GetInstanceResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "WaitForInstanceCompletion")) return refused;
    return wait(context, *request, response, true);
  }

  ServerUnaryReactor* RewindInstance(CallbackServerContext* context, const RewindInstanceRequest* request,
                                     RewindInstanceResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "RewindInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    scheduler_.rewind(task_hub_of(context), request->instance_id(),
                      read_payload(request->reason(), request->has_reason()), answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* RestartInstance(CallbackServerContext* context, const RestartInstanceRequest* request,
                                      RestartInstanceResponse* response) override {
    if (auto* refused = refuse(context, auth::action::write, "RestartInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    auto handle = call->shared();
    scheduler_.restart(task_hub_of(context), request->instance_id(), request->restart_with_new_instance_id(),
                       answer_with<std::string>(handle, [response](const std::string& id) {
                         response->set_instance_id(id);
                       }));
    return call;
  }

  ServerUnaryReactor* RaiseEvent(CallbackServerContext* context, const RaiseEventRequest* request,
                                 RaiseEventResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "RaiseEvent", request->instance_id())) return refused;
    auto* call = new unary_call();
    scheduler_.raise_event(task_hub_of(context), request->instance_id(), request->name(),
                           read_payload(request->input(), request->has_input()), answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* TerminateInstance(CallbackServerContext* context, const TerminateRequest* request,
                                        TerminateResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "TerminateInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    scheduler_.terminate(task_hub_of(context), request->instance_id(),
                         core::terminate_request{read_payload(request->output(), request->has_output()), request->recursive()},
                         answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* SuspendInstance(CallbackServerContext* context, const SuspendRequest* request,
                                      SuspendResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "SuspendInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    scheduler_.suspend(task_hub_of(context), request->instance_id(), read_payload(request->reason(), request->has_reason()),
                       answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* ResumeInstance(CallbackServerContext* context, const ResumeRequest* request,
                                     ResumeResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "ResumeInstance", request->instance_id())) return refused;
    auto* call = new unary_call();
    scheduler_.resume(task_hub_of(context), request->instance_id(), read_payload(request->reason(), request->has_reason()),
                      answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* QueryInstances(CallbackServerContext* context, const QueryInstancesRequest* request,
                                     QueryInstancesResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "QueryInstances")) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    const auto& q = request->query();
    core::instance_query query;
    const auto hub = task_hub_of(context);
    for (const auto& named : q.task_hub_names()) {
      if (named.value() != hub) {
        unary_call::finish(call->shared(),
                           Status(StatusCode::UNIMPLEMENTED,
                                  fmt::format("querying task hub '{}' from hub '{}' (InstanceQuery.taskHubNames) is not "
                                              "supported; name the hub in the taskhub header",
                                              named.value(), hub)));
        return call;
      }
    }
    for (int status : q.runtime_status()) {
      auto read_status = read(static_cast<OrchestrationStatus>(status));
      if (!read_status) {
        unary_call::finish(call->shared(), to_status(read_status.error()));
        return call;
      }
      query.statuses.push_back(*read_status);
    }
    if (q.has_created_time_from()) query.created_from_ns = to_ns(q.created_time_from());
    if (q.has_created_time_to()) query.created_to_ns = to_ns(q.created_time_to());
    if (q.has_instance_id_prefix()) query.instance_id_prefix = q.instance_id_prefix().value();
    if (q.has_continuation_token()) query.continuation_token = q.continuation_token().value();
    if (refused_page_size(q.max_instance_count(), call->shared())) return call;
    query.page_size = page_size(q.max_instance_count());
    query.fetch_payloads = q.fetch_inputs_and_outputs();
    const bool payloads = query.fetch_payloads;
    scheduler_.query(hub, std::move(query),
                     answer_with<core::query_page>(call->shared(), [response, payloads](const core::query_page& page) {
                       for (const auto& record : page.instances) {
                         write(response->add_orchestration_state(), record, payloads);
                       }
                       if (!page.continuation_token.empty()) {
                         response->mutable_continuation_token()->set_value(page.continuation_token);
                       }
                     }));
    return call;
  }

  ServerUnaryReactor* ListInstanceIds(CallbackServerContext* context, const ListInstanceIdsRequest* request,
                                      ListInstanceIdsResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "ListInstanceIds")) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    core::instance_query query;
    for (int status : request->runtime_status()) {
      auto read_status = read(static_cast<OrchestrationStatus>(status));
      if (!read_status) {
        unary_call::finish(call->shared(), to_status(read_status.error()));
        return call;
      }
      query.statuses.push_back(*read_status);
    }
    if (request->has_last_instance_key()) query.continuation_token = request->last_instance_key().value();
    if (refused_page_size(request->page_size(), call->shared())) return call;
    query.page_size = page_size(request->page_size());
    query.fetch_payloads = false;
    // The index orders by creation; the completed-time range filters the page.
    const auto from = request->has_completed_time_from() ? to_ns(request->completed_time_from()) : INT64_MIN;
    const auto to = request->has_completed_time_to() ? to_ns(request->completed_time_to()) : INT64_MAX;
    const bool by_completion = request->has_completed_time_from() || request->has_completed_time_to();
    scheduler_.query(task_hub_of(context), std::move(query),
                     answer_with<core::query_page>(call->shared(), [=](const core::query_page& page) {
                       for (const auto& record : page.instances) {
                         if (by_completion && (record.completed_at_ns == 0 || record.completed_at_ns < from ||
                                               record.completed_at_ns > to)) {
                           continue;
                         }
                         response->add_instance_ids(record.instance_id);
                       }
                       if (!page.continuation_token.empty()) {
                         response->mutable_last_instance_key()->set_value(page.continuation_token);
                       }
                     }));
    return call;
  }

  ServerUnaryReactor* PurgeInstances(CallbackServerContext* context, const PurgeInstancesRequest* request,
                                     PurgeInstancesResponse* response) override {
    if (auto* refused = refuse(context, auth::action::write, "PurgeInstances", request->instance_id())) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    auto handle = call->shared();
    const auto hub = task_hub_of(context);
    const bool recursive = request->recursive();
    auto answered = [handle, response](expected<service::purge_result> result) {
      // Purging an instance that does not exist purges nothing; it is not an error.
      if (!result && result.error().code == errc::not_found) result = service::purge_result{};
      if (!result) return unary_call::finish(handle, to_status(result.error()));
      unary_call::finish(handle, Status::OK, [&] {
        response->set_deleted_instance_count(static_cast<std::int32_t>(result->purged));
        response->mutable_is_complete()->set_value(result->complete);
      });
    };
    auto purged = [answered](expected<std::size_t> count) {
      if (!count) return answered(count.error());
      answered(service::purge_result{*count, true});
    };
    switch (request->request_case()) {
      case PurgeInstancesRequest::kInstanceId:
        // isOrchestration says the id names an orchestration, not an entity.
        if (request->is_orchestration() && core::is_entity_id(request->instance_id())) {
          unary_call::finish(handle, Status(StatusCode::INVALID_ARGUMENT,
                                            fmt::format("'{}' is an entity id, but isOrchestration is set",
                                                        request->instance_id())));
          return call;
        }
        scheduler_.purge(hub, request->instance_id(), recursive, purged);
        break;
      case PurgeInstancesRequest::kPurgeInstanceFilter: {
        const auto& f = request->purge_instance_filter();
        core::instance_query filter;
        for (int status : f.runtime_status()) {
          auto read_status = read(static_cast<OrchestrationStatus>(status));
          if (!read_status) {
            unary_call::finish(handle, to_status(read_status.error()));
            return call;
          }
          filter.statuses.push_back(*read_status);
        }
        if (f.has_created_time_from()) filter.created_from_ns = to_ns(f.created_time_from());
        if (f.has_created_time_to()) filter.created_to_ns = to_ns(f.created_time_to());
        // PurgeInstanceFilter.timeout: answered by the deadline with what went so far
        // and isComplete false; the purge itself goes on to the end.
        std::optional<std::chrono::nanoseconds> within;
        if (f.has_timeout()) {
          within = std::chrono::seconds(std::clamp<std::int64_t>(f.timeout().seconds(), 0, purge_timeout_s_max)) +
                   std::chrono::nanoseconds(std::max<std::int32_t>(0, f.timeout().nanos()));
        }
        scheduler_.purge_where(hub, std::move(filter), recursive, within, answered);
        break;
      }
      case PurgeInstancesRequest::kInstanceBatch:
        scheduler_.purge_many(
            hub, {request->instance_batch().instance_ids().begin(), request->instance_batch().instance_ids().end()},
            recursive, std::move(purged));
        break;
      case PurgeInstancesRequest::REQUEST_NOT_SET:
        unary_call::finish(handle, Status(StatusCode::INVALID_ARGUMENT,
                                          "PurgeInstances needs an instance id, a filter or an instance batch"));
        break;
    }
    return call;
  }

  grpc::ServerWriteReactor<WorkItem>* GetWorkItems(CallbackServerContext* context,
                                                   const GetWorkItemsRequest* request) override;

  ServerUnaryReactor* CompleteOrchestratorTask(CallbackServerContext* context, const OrchestratorResponse* response,
                                               CompleteTaskResponse*) override {
    auto* call = new unary_call();
    auto handle = call->shared();
    auto held = take(context, response->completion_token(), token_kind::orchestrator);
    if (!held) {
      unary_call::finish(handle, to_status(held.error()));
      return call;
    }
    auto& [sink, item] = *held;
    if (item.instance_id != response->instance_id()) {
      sink->put_back(response->completion_token(), item);
      unary_call::finish(handle, Status(StatusCode::INVALID_ARGUMENT,
                                        fmt::format("completion token '{}' belongs to instance '{}', not '{}'",
                                                    response->completion_token(), item.instance_id,
                                                    response->instance_id())));
      return call;
    }
    if (response->requires_history()) {
      // The worker could not run the item without its history: it goes out again
      // (as an abandon does), and a redelivered item carries the history.
      scheduler_.abandon(sink->session(), item.token);
      unary_call::finish(handle, Status::OK);
      return call;
    }
    if (response->has_num_events_processed() &&
        static_cast<std::size_t>(std::max(0, response->num_events_processed().value())) < item.new_events) {
      sink->put_back(response->completion_token(), item);
      unary_call::finish(handle, Status(StatusCode::UNIMPLEMENTED,
                                        fmt::format("the worker processed {} of the {} new events it was given "
                                                    "(numEventsProcessed); partial processing is not supported",
                                                    response->num_events_processed().value(), item.new_events)));
      return call;
    }
    auto times = check_times(*response);
    auto completion = times ? read(*response) : expected<core::orchestrator_completion>(times.error());
    if (!completion) {
      sink->put_back(response->completion_token(), item);
      unary_call::finish(handle, to_status(completion.error()));
      return call;
    }
    completion->completion_token = item.token;
    scheduler_.complete_orchestrator(sink->session(), std::move(*completion),
                                     completion_answer(handle, sink, response->completion_token(), item));
    return call;
  }

  ServerUnaryReactor* CompleteActivityTask(CallbackServerContext* context, const ActivityResponse* response,
                                           CompleteTaskResponse*) override {
    auto* call = new unary_call();
    auto handle = call->shared();
    auto held = take(context, response->completion_token(), token_kind::activity);
    if (!held) {
      unary_call::finish(handle, to_status(held.error()));
      return call;
    }
    auto& [sink, item] = *held;
    if (item.instance_id != response->instance_id() || item.activity.task_id != response->task_id()) {
      sink->put_back(response->completion_token(), item);
      unary_call::finish(handle, Status(StatusCode::INVALID_ARGUMENT,
                                        fmt::format("completion token '{}' belongs to task {} of instance '{}'",
                                                    response->completion_token(), item.activity.task_id,
                                                    item.instance_id)));
      return call;
    }
    core::activity_result result;
    result.instance_id = item.activity.instance_id;
    result.execution_id = item.activity.execution_id;
    result.task_id = item.activity.task_id;
    result.completion_token = item.token;
    if (response->has_failure_details()) {
      result.outcome = read(response->failure_details());
    } else {
      result.outcome = read_payload(response->result(), response->has_result());
    }
    scheduler_.complete_activity(sink->session(), std::move(result),
                                 completion_answer(handle, sink, response->completion_token(), item));
    return call;
  }

  ServerUnaryReactor* AbandonTaskOrchestratorWorkItem(CallbackServerContext* context,
                                                      const AbandonOrchestrationTaskRequest* request,
                                                      AbandonOrchestrationTaskResponse*) override {
    return abandon(context, request->completion_token(), token_kind::orchestrator);
  }

  ServerUnaryReactor* AbandonTaskActivityWorkItem(CallbackServerContext* context,
                                                  const AbandonActivityTaskRequest* request,
                                                  AbandonActivityTaskResponse*) override {
    return abandon(context, request->completion_token(), token_kind::activity);
  }

  ServerUnaryReactor* AbandonTaskEntityWorkItem(CallbackServerContext* context, const AbandonEntityTaskRequest* request,
                                                AbandonEntityTaskResponse*) override {
    return abandon(context, request->completion_token(), token_kind::entity);
  }

  ServerUnaryReactor* CompleteEntityTask(CallbackServerContext* context, const EntityBatchResult* result,
                                         CompleteTaskResponse*) override {
    auto* call = new unary_call();
    auto handle = call->shared();
    auto held = take(context, result->completion_token(), token_kind::entity);
    if (!held) {
      unary_call::finish(handle, to_status(held.error()));
      return call;
    }
    auto& [sink, item] = *held;
    if (result->requires_state()) {
      // Entity batches always carry the state; one the worker says it lacks goes out again.
      scheduler_.abandon(sink->session(), item.token);
      unary_call::finish(handle, Status::OK);
      return call;
    }
    auto times = check_times(*result);
    auto batch = times ? read(*result) : expected<core::entity_batch_result>(times.error());
    if (!batch) {
      sink->put_back(result->completion_token(), item);
      unary_call::finish(handle, to_status(batch.error()));
      return call;
    }
    core::orchestrator_completion completion;
    completion.instance_id = item.instance_id;
    completion.completion_token = item.token;
    completion.entity = std::move(*batch);
    scheduler_.complete_orchestrator(sink->session(), std::move(completion),
                                     completion_answer(handle, sink, result->completion_token(), item));
    return call;
  }

  ServerUnaryReactor* SignalEntity(CallbackServerContext* context, const SignalEntityRequest* request,
                                   SignalEntityResponse*) override {
    if (auto* refused = refuse(context, auth::action::write, "SignalEntity", request->instance_id())) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    service::entity_signal signal{request->instance_id(), request->name(),
                                  read_payload(request->input(), request->has_input()),
                                  request->has_scheduled_time() ? to_ns(request->scheduled_time()) : 0,
                                  request->request_id()};
    scheduler_.signal_entity(task_hub_of(context), std::move(signal), answer_empty(call->shared()));
    return call;
  }

  ServerUnaryReactor* GetEntity(CallbackServerContext* context, const GetEntityRequest* request,
                                GetEntityResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "GetEntity", request->instance_id())) return refused;
    auto* call = new unary_call();
    const bool with_state = request->include_state();
    if (!core::is_entity_id(request->instance_id())) {
      unary_call::finish(call->shared(), Status(StatusCode::INVALID_ARGUMENT,
                                                fmt::format("'{}' is not an entity id (@name@key)", request->instance_id())));
      return call;
    }
    scheduler_.get(task_hub_of(context), request->instance_id(), false,
                   answer_with<std::optional<service::instance_view>>(
                       call->shared(), [response, with_state](const std::optional<service::instance_view>& view) {
                         // An entity exists while it has state (as in DTS).
                         const bool exists = view && view->record.entity_state.has_value();
                         response->set_exists(exists);
                         if (exists) write(response->mutable_entity(), view->record, with_state);
                       }));
    return call;
  }

  ServerUnaryReactor* QueryEntities(CallbackServerContext* context, const QueryEntitiesRequest* request,
                                    QueryEntitiesResponse* response) override {
    if (auto* refused = refuse(context, auth::action::read, "QueryEntities")) return refused;
    auto* call = new unary_call();
    if (refused_times(*request, call->shared())) return call;
    const auto& q = request->query();
    core::instance_query query;
    query.entities = true;
    if (q.has_instance_id_starts_with()) query.instance_id_prefix = q.instance_id_starts_with().value();
    if (q.has_continuation_token()) query.continuation_token = q.continuation_token().value();
    if (refused_page_size(q.has_page_size() ? q.page_size().value() : 0, call->shared())) return call;
    query.page_size = page_size(q.has_page_size() ? q.page_size().value() : 0);
    query.fetch_payloads = true;  // The state tells a transient entity; write() drops it unless asked.
    const auto from = q.has_last_modified_from() ? to_ns(q.last_modified_from()) : INT64_MIN;
    const auto to = q.has_last_modified_to() ? to_ns(q.last_modified_to()) : INT64_MAX;
    const bool with_state = q.include_state();
    const bool transient = q.include_transient();
    scheduler_.query(task_hub_of(context), std::move(query),
                     answer_with<core::query_page>(call->shared(), [=](const core::query_page& page) {
                       for (const auto& record : page.instances) {
                         if (record.last_updated_at_ns < from || record.last_updated_at_ns > to) continue;
                         // Without state an entity is transient (it may only hold a lock or a queue).
                         if (!record.entity_state && !transient) continue;
                         write(response->add_entities(), record, with_state);
                       }
                       if (!page.continuation_token.empty()) {
                         response->mutable_continuation_token()->set_value(page.continuation_token);
                       }
                     }));
    return call;
  }

  ServerUnaryReactor* CleanEntityStorage(CallbackServerContext* context, const CleanEntityStorageRequest* request,
                                         CleanEntityStorageResponse* response) override;

  grpc::ServerWriteReactor<HistoryChunk>* StreamInstanceHistory(CallbackServerContext* context,
                                                                const StreamInstanceHistoryRequest* request) override {
    if (auto* refused =
            refuse_stream<HistoryChunk>(context, {auth::action::work, auth::action::read}, "StreamInstanceHistory")) {
      return refused;
    }
    auto* stream = new history_stream();
    const auto id = request->instance_id();
    // A worker streaming the history of its work item names the execution: an
    // answer about another one would be replayed against the wrong code path.
    const auto execution = request->has_execution_id() ? request->execution_id().value() : std::string();
    scheduler_.get(task_hub_of(context), id, true,
                   [stream, id, execution](expected<std::optional<service::instance_view>> view) {
      if (!view) return stream->start(to_status(view.error()), {});
      if (!*view) return stream->start(Status(StatusCode::NOT_FOUND, fmt::format("no instance '{}'", id)), {});
      if (!execution.empty() && execution != (*view)->record.execution_id) {
        return stream->start(Status(StatusCode::NOT_FOUND,
                                    fmt::format("instance '{}' has no execution '{}' (its current one is '{}')", id,
                                                execution, (*view)->record.execution_id)),
                             {});
      }
      stream->start(Status::OK, std::move((*view)->history));
    });
    return stream;
  }

  ServerUnaryReactor* CreateTaskHub(CallbackServerContext* context, const CreateTaskHubRequest* request,
                                    CreateTaskHubResponse*) override {
    if (auto* refused = refuse(context, auth::action::manage_hubs, "CreateTaskHub")) return refused;
    auto* reactor = context->DefaultReactor();
    const auto hub = task_hub_of(context);
    auto hubs = scheduler_.task_hubs();
    const bool exists = std::find(hubs.begin(), hubs.end(), hub) != hubs.end();
    if (exists && !request->recreate_if_exists()) {
      reactor->Finish(Status::OK);
      return reactor;
    }
    if (exists) {
      if (auto deleted = scheduler_.delete_task_hub(hub, true); !deleted) {
        reactor->Finish(to_status(deleted.error()));
        return reactor;
      }
    }
    auto created = scheduler_.create_task_hub(hub, options_.partition_count);
    reactor->Finish(created ? Status::OK : to_status(created.error()));
    return reactor;
  }

  ServerUnaryReactor* DeleteTaskHub(CallbackServerContext* context, const DeleteTaskHubRequest*,
                                    DeleteTaskHubResponse*) override {
    if (auto* refused = refuse(context, auth::action::manage_hubs, "DeleteTaskHub")) return refused;
    auto* reactor = context->DefaultReactor();
    auto hub = named_task_hub(context);
    if (!hub) {
      reactor->Finish(Status(StatusCode::INVALID_ARGUMENT,
                             "DeleteTaskHub needs a taskhub header naming the hub to delete (no default applies)"));
      return reactor;
    }
    auto deleted = scheduler_.delete_task_hub(*hub, force_delete(context));
    if (deleted) {
      reactor->Finish(Status::OK);
      return reactor;
    }
    auto failure = deleted.error();
    if (failure.code == errc::failed_precondition) failure.message += " (send the header dtsd-force-delete: true)";
    reactor->Finish(to_status(failure));
    return reactor;
  }

  ServerUnaryReactor* SkipGracefulOrchestrationTerminations(
      CallbackServerContext* context, const SkipGracefulOrchestrationTerminationsRequest* request,
      SkipGracefulOrchestrationTerminationsResponse* response) override;

  /// Ends the work streams whose token has expired or been revoked (each second,
  /// from the authority's watcher): their workers get no more work.
  void end_revoked_streams() {
    std::vector<std::shared_ptr<stream_sink>> live;
    {
      std::lock_guard lock(streams_mutex_);
      for (const auto& [id, weak] : streams_) {
        if (auto sink = weak.lock()) live.push_back(std::move(sink));
      }
    }
    for (const auto& sink : live) {
      auto who = sink->grant();
      if (!who) continue;
      if (auto current = options_.authority->still_valid(*who); !current) {
        options_.authority->audit("grpc", "GetWorkItems (ended)", sink->hub(), {}, &*who, &current.error());
        sink->end(current.error().message);
      }
    }
  }

  void forget_stream(std::uint64_t id) {
    std::lock_guard lock(streams_mutex_);
    streams_.erase(id);
  }

 private:
  friend class work_stream;

  /// The worker gives an item back unprocessed; it is dispatched again at once.
  // ---- access (--auth): each call's `authorization: Bearer` token checked for
  // what the call does, on the hub its `taskhub` header names. Without an
  // authority every call is let through.

  /// The credential's error when it may do none of `what` on the call's hub. The
  /// audit log gets every refusal, and every change let through.
  std::optional<error> denied(const CallbackServerContext* context, std::initializer_list<auth::action> what,
                              std::string_view operation, std::string_view instance = {}) const {
    if (!options_.authority) return std::nullopt;
    const auto hub = task_hub_of(context);
    auto who = options_.authority->authenticate(bearer_of(context));
    if (!who) {
      options_.authority->audit("grpc", operation, hub, instance, nullptr, &who.error());
      return who.error();
    }
    std::optional<error> first;
    for (auto action : what) {
      auto allowed = auth::authority::authorize(*who, action, hub);
      if (allowed) {
        if (action == auth::action::write || action == auth::action::manage_hubs) {
          if (auto rated = options_.authority->take_call(*who); !rated) {
            options_.authority->audit("grpc", operation, hub, instance, &*who, &rated.error());
            return rated.error();
          }
          options_.authority->audit("grpc", operation, hub, instance, &*who, nullptr);
        }
        return std::nullopt;
      }
      if (!first) first = allowed.error();
    }
    options_.authority->audit("grpc", operation, hub, instance, &*who, &*first);
    return first;
  }
  /// A work stream or wait of the call's token, counted until the handle goes
  /// (nothing without --auth); errc::resource_exhausted at the token's limit.
  /// `opened_by`, if given, gets the token's grant.
  expected<std::shared_ptr<void>> hold_stream(const CallbackServerContext* context,
                                              std::optional<auth::grant>* opened_by = nullptr) const {
    if (!options_.authority) return std::shared_ptr<void>();
    auto who = options_.authority->authenticate(bearer_of(context));
    if (!who) return who.error();
    if (opened_by) *opened_by = *who;
    return options_.authority->hold_stream(*who);
  }
  /// A finished reactor when the call is refused; null when it may go on.
  ServerUnaryReactor* refuse(CallbackServerContext* context, auth::action what, std::string_view operation,
                             std::string_view instance = {}) {
    auto failure = denied(context, {what}, operation, instance);
    if (!failure) return nullptr;
    auto* reactor = context->DefaultReactor();
    reactor->Finish(to_status(*failure));
    return reactor;
  }
  /// Hello: any valid token (the SDKs call it first; a bad token fails here, clearly).
  ServerUnaryReactor* refuse_unauthenticated(CallbackServerContext* context) {
    if (!options_.authority) return nullptr;
    auto who = options_.authority->authenticate(bearer_of(context));
    if (who) return nullptr;
    options_.authority->audit("grpc", "Hello", task_hub_of(context), {}, nullptr, &who.error());
    auto* reactor = context->DefaultReactor();
    reactor->Finish(to_status(who.error()));
    return reactor;
  }
  template <class Item>
  grpc::ServerWriteReactor<Item>* refuse_stream(CallbackServerContext* context,
                                                std::initializer_list<auth::action> what, std::string_view operation) {
    auto failure = denied(context, what, operation);
    if (!failure) return nullptr;
    return new refused_stream<Item>(to_status(*failure));
  }

  ServerUnaryReactor* abandon(CallbackServerContext* context, const std::string& token, token_kind kind) {
    auto* reactor = context->DefaultReactor();
    auto held = take(context, token, kind);
    if (!held) {
      reactor->Finish(to_status(held.error()));
      return reactor;
    }
    const auto& [sink, item] = *held;
    scheduler_.abandon(sink->session(), item.token);
    reactor->Finish(Status::OK);
    return reactor;
  }

  /// Page sizes, the same on every call: 0 (unset) is 100, more than
  /// core::query_page_size_max (1000) is that maximum; a negative one was checked
  /// by refused_page_size.
  static std::size_t page_size(std::int32_t asked) {
    if (asked <= 0) return page_size_default;
    return std::min<std::size_t>(static_cast<std::size_t>(asked), core::query_page_size_max);
  }
  static bool refused_page_size(std::int32_t asked, const unary_call::handle& call) {
    if (asked >= 0) return false;
    unary_call::finish(call, Status(StatusCode::INVALID_ARGUMENT, fmt::format("page size {} is negative", asked)));
    return true;
  }

  /// Answers INVALID_ARGUMENT when a time in `request` is not a valid protobuf time.
  static bool refused_times(const google::protobuf::Message& request, const unary_call::handle& call) {
    auto valid = check_times(request);
    if (valid) return false;
    unary_call::finish(call, to_status(valid.error()));
    return true;
  }

  static ServerUnaryReactor* unimplemented(CallbackServerContext* context, const char* what) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(Status(StatusCode::UNIMPLEMENTED, fmt::format("dtsd does not support {} yet", what)));
    return reactor;
  }

  static expected<core::start_request> read_start(const CreateInstanceRequest& request) {
    core::start_request start;
    start.instance_id = request.instance_id().empty() ? service::new_instance_id() : request.instance_id();
    if (request.has_execution_id() && !request.execution_id().value().empty()) {
      // The caller's own execution id (the protocol allows it); the same rules as ids.
      if (auto valid = core::validate_instance_id(request.execution_id().value()); !valid) {
        return error{errc::invalid_argument, "executionId: " + valid.error().message};
      }
      start.execution_id = request.execution_id().value();
    }
    start.name = request.name();
    start.version = read_payload(request.version(), request.has_version());
    start.input = read_payload(request.input(), request.has_input());
    start.tags = core::tag_map(request.tags().begin(), request.tags().end());
    // The JS SDK sends the epoch for "now"; only a time in the future delays the start.
    if (request.has_scheduled_start_timestamp()) start.scheduled_start_ns = to_ns(request.scheduled_start_timestamp());
    if (request.has_orchestration_id_reuse_policy()) {
      for (int status : request.orchestration_id_reuse_policy().replaceable_status()) {
        auto read_status = read(static_cast<OrchestrationStatus>(status));
        if (!read_status) return read_status.error();
        start.replaceable_statuses.push_back(*read_status);
      }
    } else {
      start.replaceable_statuses = core::terminal_statuses();
    }
    return start;
  }

  ServerUnaryReactor* wait(CallbackServerContext* context, const GetInstanceRequest& request,
                           GetInstanceResponse* response, bool until_completed) {
    auto held = hold_stream(context);
    if (!held) {
      auto* reactor = context->DefaultReactor();
      reactor->Finish(to_status(held.error()));
      return reactor;
    }
    auto* call = new unary_call();
    call->keep(std::move(*held));  // Counted against the token while the wait lasts.
    const bool payloads = request.get_inputs_and_outputs();
    const auto hub = task_hub_of(context);
    const auto id = request.instance_id();
    const auto handle =
        scheduler_.wait(hub, id, until_completed,
                        answer_with<core::instance_record>(call->shared(), [response, payloads](const core::instance_record& r) {
                          response->set_exists(true);
                          write(response->mutable_orchestration_state(), r, payloads);
                        }));
    // The wait has no time limit: a client that gives up must not leave it registered.
    call->on_cancel([&scheduler = scheduler_, hub, id, handle] { scheduler.cancel_wait(hub, id, handle); });
    return call;
  }

  /// The sink and the item a completion token names, taken from its stream.
  /// The work item a completion token names, taken from its stream; refused unless
  /// the call's credential may work for the stream's hub (tokens are not secrets).
  expected<std::pair<std::shared_ptr<stream_sink>, outstanding>> take(const CallbackServerContext* context,
                                                                      const std::string& token, token_kind kind) {
    const auto dot = token.find('.');
    std::uint64_t stream = 0;
    const bool well_formed = dot != std::string::npos && dot + 1 < token.size() &&
                             std::from_chars(token.data(), token.data() + dot, stream).ec == std::errc() &&
                             token[dot + 1] == static_cast<char>(kind);
    if (!well_formed) {
      return error{errc::invalid_argument,
                   fmt::format("'{}' is not an {} completion token", token, describe(kind))};
    }
    std::shared_ptr<stream_sink> sink;
    {
      std::lock_guard lock(streams_mutex_);
      if (auto found = streams_.find(stream); found != streams_.end()) sink = found->second.lock();
    }
    if (options_.authority) {
      auto who = options_.authority->authenticate(bearer_of(context));
      if (!who) {
        options_.authority->audit("grpc", fmt::format("complete or abandon ({})", describe(kind)),
                                  task_hub_of(context), {}, nullptr, &who.error());
        // The worker's token expired or was revoked: its stream gets no more work.
        if (sink) sink->end(who.error().message);
        return who.error();
      }
      // The stream's hub; without a stream, the call's (the token is stale: said below).
      const auto hub = sink ? sink->hub() : task_hub_of(context);
      if (auto allowed = auth::authority::authorize(*who, auth::action::work, hub); !allowed) {
        options_.authority->audit("grpc", fmt::format("complete or abandon ({})", describe(kind)), hub, {}, &*who,
                                  &allowed.error());
        return allowed.error();
      }
    }
    std::optional<outstanding> item;
    if (sink) item = sink->take(token);
    if (!item) {
      return error{errc::stale_token,
                   fmt::format("completion token '{}' is not held by any connected worker (already completed, "
                               "abandoned, or its work stream ended)",
                               token)};
    }
    return std::pair{std::move(sink), std::move(*item)};
  }

  static service::callback<void> completion_answer(const unary_call::handle& call, std::shared_ptr<stream_sink> sink,
                                                  std::string token, outstanding item) {
    return [call, sink = std::move(sink), token = std::move(token), item = std::move(item)](expected<void> done) mutable {
      if (!done && done.error().code == errc::invalid_argument) sink->put_back(token, std::move(item));
      unary_call::finish(call, done ? Status::OK : to_status(done.error()));
    };
  }

  service::task_service& scheduler_;
  grpc_options options_;
  std::atomic<std::uint64_t> next_stream_{1};
  std::mutex streams_mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<stream_sink>> streams_;
};

grpc::ServerWriteReactor<WorkItem>* grpc_service::GetWorkItems(CallbackServerContext* context,
                                                               const GetWorkItemsRequest* request) {
  if (auto* refused = refuse_stream<WorkItem>(context, {auth::action::work}, "GetWorkItems")) return refused;
  std::optional<auth::grant> opened_by;  // Checked again each second (end_revoked_streams).
  auto held = hold_stream(context, &opened_by);
  if (!held) return new refused_stream<WorkItem>(to_status(held.error()));
  const auto id = next_stream_++;
  const auto& capabilities = request->capabilities();
  const bool history_streaming =
      std::find(capabilities.begin(), capabilities.end(), WORKER_CAPABILITY_HISTORY_STREAMING) != capabilities.end();
  auto sink = std::make_shared<stream_sink>(
      id, task_hub_of(context), history_streaming, [this](std::uint64_t session, core::orchestrator_completion completion) {
        scheduler_.complete_orchestrator(session, std::move(completion), [](expected<void> done) {
          if (!done) spdlog::warn("failing an undeliverable orchestration was refused: {}", done.error().message);
        });
      });
  auto* stream = new work_stream(sink, [this, id, held = std::move(*held)](std::uint64_t session) {
    forget_stream(id);
    if (session != 0) scheduler_.close_session(session);
  });
  auto slots = [this](std::int32_t asked) {
    return asked > 0 ? static_cast<std::uint32_t>(asked) : options_.default_concurrency;
  };
  if (opened_by) sink->set_grant(*opened_by);
  {
    std::lock_guard lock(streams_mutex_);
    streams_[id] = sink;
  }
  std::string worker;
  if (auto found = context->client_metadata().find("workerid"); found != context->client_metadata().end()) {
    worker.assign(found->second.data(), std::min<std::size_t>(found->second.size(), worker_name_bytes_max));
  }
  auto session = scheduler_.open_session(task_hub_of(context),
                                         {slots(request->max_concurrent_orchestration_work_items()),
                                          slots(request->max_concurrent_activity_work_items()),
                                          slots(request->max_concurrent_entity_work_items())},
                                         sink, read(request->work_item_filters()), std::move(worker));
  if (!session) {
    sink->close();
    stream->finish(to_status(session.error()));
    return stream;
  }
  stream->set_session(*session);
  sink->activate(stream, *session);
  spdlog::debug("gRPC work stream {} opened session {}", id, *session);
  return stream;
}

grpc::ServerUnaryReactor* grpc_service::CleanEntityStorage(CallbackServerContext* context,
                                                          const CleanEntityStorageRequest* request,
                                                          CleanEntityStorageResponse* response) {
  if (auto* refused = refuse(context, auth::action::write, "CleanEntityStorage")) return refused;
  auto* call = new unary_call();
  service::entity_clean_request clean;
  clean.remove_empty = request->remove_empty_entities();
  clean.release_orphaned_locks = request->release_orphaned_locks();
  if (request->has_continuation_token()) clean.continuation_token = request->continuation_token().value();
  scheduler_.clean_entity_storage(
      task_hub_of(context), std::move(clean),
      answer_with<service::entity_clean_result>(call->shared(), [response](const service::entity_clean_result& done) {
        response->set_empty_entities_removed(static_cast<std::int32_t>(done.removed));
        response->set_orphaned_locks_released(static_cast<std::int32_t>(done.released));
        if (!done.continuation_token.empty()) response->mutable_continuation_token()->set_value(done.continuation_token);
      }));
  return call;
}

grpc::ServerUnaryReactor* grpc_service::SkipGracefulOrchestrationTerminations(
    CallbackServerContext* context, const SkipGracefulOrchestrationTerminationsRequest* request,
    SkipGracefulOrchestrationTerminationsResponse* response) {
  if (auto* refused = refuse(context, auth::action::write, "SkipGracefulOrchestrationTerminations")) return refused;
  auto* call = new unary_call();
  const auto& ids = request->instance_batch().instance_ids();
  scheduler_.terminate_many(task_hub_of(context), {ids.begin(), ids.end()},
                            read_payload(request->reason(), request->has_reason()),
                            answer_with<std::vector<std::string>>(call->shared(), [response](const auto& unterminated) {
                              for (const auto& id : unterminated) response->add_unterminated_instance_ids(id);
                            }));
  return call;
}

// ------------------------------------------------------------------ the server

class grpc_server_impl final : public grpc_server {
 public:
  grpc_server_impl(service::task_service& scheduler, grpc_options options)
      : service_(scheduler, options), options_(std::move(options)) {
    if (options_.authority) options_.authority->on_reload([this] { service_.end_revoked_streams(); });
  }

  ~grpc_server_impl() override { stop(); }

  /// Plaintext, or TLS from the PEM files (mTLS when a client CA is given).
  std::shared_ptr<grpc::ServerCredentials> credentials() const {
    const auto& tls = options_.tls;
    if (!tls.enabled()) return grpc::InsecureServerCredentials();
    auto files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.key, tls.cert, tls.client_ca, tls_refresh_seconds);
    grpc::experimental::TlsServerCredentialsOptions settings(files);
    settings.watch_identity_key_cert_pairs();
    if (!tls.client_ca.empty()) {
      settings.watch_root_certs();
      settings.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    } else {
      settings.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    }
    return grpc::experimental::TlsServerCredentials(settings);
  }

  expected<void> run() {
    // gRPC's mutexes are abseil's, and Debian's abseil keeps a graph of every lock
    // order to report deadlocks (a debugging aid, ~2% of dtsd's CPU on the gRPC path).
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(options_.address, credentials(), &port);
    builder.RegisterService(&service_);
    // Our own limits (1 MiB payloads by default) answer oversize input with a clear
    // INVALID_ARGUMENT; gRPC's 4 MiB default would cut in first for large histories.
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.SetMaxSendMessageSize(-1);
    server_ = builder.BuildAndStart();
    if (!server_ || port == 0) {
      return error{errc::io, fmt::format("cannot serve gRPC on {}", options_.address)};
    }
    port_ = static_cast<std::uint16_t>(port);
    return {};
  }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    std::lock_guard lock(stop_mutex_);
    if (options_.authority) options_.authority->on_reload(nullptr);  // Waits for a tick under way.
    if (!server_) return;
    // Calls get up to 1 s to end on their own (a unary call waiting for its commit
    // usually does); then everything left, work streams and waits included, is
    // cancelled.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    server_.reset();
  }

 private:
  grpc_service service_;
  grpc_options options_;
  std::unique_ptr<grpc::Server> server_;
  std::uint16_t port_ = 0;
  std::mutex stop_mutex_;
};

}  // namespace

expected<std::unique_ptr<grpc_server>> grpc_server::start(service::task_service& scheduler, grpc_options options) {
  auto server = std::make_unique<grpc_server_impl>(scheduler, std::move(options));
  if (auto running = server->run(); !running) return running.error();
  return std::unique_ptr<grpc_server>(std::move(server));
}

}  // namespace dtsd::grpc_api
