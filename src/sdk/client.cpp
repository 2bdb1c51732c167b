#include "sdk/client.hpp"

#include <kj/async-io.h>
#include <fmt/format.h>

#include <random>

#include "rpc.capnp.h"
#include "sdk/connection.hpp"
#include "rpc/work_filters_wire.hpp"
#include "sdk/authenticate.hpp"
#include "sdk/errors.hpp"
#include "codec/wire.hpp"

namespace dtsd::sdk {
namespace {

namespace s = dtsd::schema;
namespace wire = dtsd::codec::wire;

capnp::Text::Reader text(const std::string& value) { return {value.data(), value.size()}; }
std::string text(capnp::Text::Reader value) { return {value.cStr(), value.size()}; }

std::string random_instance_id() {
  thread_local std::mt19937_64 generator(std::random_device{}());
  return fmt::format("{:016x}{:016x}", generator(), generator());
}

}  // namespace

s::Scheduler::Client authenticated(s::Scheduler::Client server, const std::string& token) {
  if (token.empty()) return server;
  auto request = server.authenticateRequest();
  request.setToken(kj::StringPtr(token.c_str()));
  return request.send().getScheduler();
}

namespace {

class capnp_client final : public client {
 public:
  capnp_client(const std::string& address, std::string hub, const std::string& token, const tls_options& tls)
      : rpc_(address, tls), hub_(std::move(hub)), scheduler_(authenticated(rpc_.main<s::Scheduler>(), token)) {}
  ~capnp_client() noexcept override {}

  /// Runs `call` on this thread's loop and turns exceptions into errors.
  template <class Call>
  auto guarded(Call call) -> expected<decltype(call())> {
    try {
      if constexpr (std::is_void_v<decltype(call())>) {
        call();
        return {};
      } else {
        return call();
      }
    } catch (const kj::Exception& failure) {
      return error_of(failure);
    }
  }

  expected<std::string> start(const std::string& orchestrator, const json& input,
                              const start_options& options) override {
    return guarded([&] {
      auto request = scheduler_.startInstanceRequest();
      request.setTaskHub(text(hub_));
      core::start_request start;
      start.instance_id = options.instance_id.empty() ? random_instance_id() : options.instance_id;
      start.name = orchestrator;
      start.input = input.dump();
      start.version = options.version;
      start.tags = options.tags;
      if (options.start_at) {
        start.scheduled_start_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(options.start_at->time_since_epoch()).count();
      }
      start.replaceable_statuses = options.replaceable_statuses;
      wire::write(request.initRequest(), start);
      return text(request.send().wait(rpc_.wait_scope()).getInstanceId());
    });
  }

  expected<std::vector<std::string>> start_many(const std::string& orchestrator, const std::vector<json>& inputs,
                                                const std::vector<std::string>& ids) override {
    if (!ids.empty() && ids.size() != inputs.size()) {
      return error{errc::invalid_argument, "start_many: give one instance id per input, or none"};
    }
    return guarded([&] {
      auto promises = kj::heapArrayBuilder<kj::Promise<std::string>>(inputs.size());
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        const auto& input = inputs[i];
        auto request = scheduler_.startInstanceRequest();
        request.setTaskHub(text(hub_));
        core::start_request start;
        start.instance_id = ids.empty() ? random_instance_id() : ids[i];
        start.name = orchestrator;
        start.input = input.dump();
        wire::write(request.initRequest(), start);
        promises.add(request.send().then([](auto response) { return text(response.getInstanceId()); }));
      }
      auto ids = kj::joinPromises(promises.finish()).wait(rpc_.wait_scope());
      return std::vector<std::string>(ids.begin(), ids.end());
    });
  }

  expected<std::optional<core::instance_record>> get(const std::string& id) override {
    return guarded([&]() -> std::optional<core::instance_record> {
      auto request = scheduler_.getInstanceRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      auto response = request.send().wait(rpc_.wait_scope());
      if (!response.getFound()) return std::nullopt;
      return wire::read(response.getRecord());
    });
  }

  expected<std::vector<core::history_event>> history(const std::string& id) override {
    auto one = histories({id});
    if (!one) return one.error();
    if (!one->front()) return error{errc::not_found, "no instance with id '" + id + "'"};
    return std::move(*one->front());
  }

  expected<std::vector<std::optional<std::vector<core::history_event>>>> histories(
      const std::vector<std::string>& ids) override {
    return guarded([&] {
      // Every request goes out before the first answer is awaited: one round trip
      // for the lot instead of one per instance.
      std::vector<decltype(scheduler_.getInstanceRequest().send())> pending;
      pending.reserve(ids.size());
      for (const auto& id : ids) {
        auto request = scheduler_.getInstanceRequest();
        request.setTaskHub(text(hub_));
        request.setInstanceId(text(id));
        request.setWithHistory(true);
        pending.push_back(request.send());
      }
      std::vector<std::optional<std::vector<core::history_event>>> out;
      out.reserve(ids.size());
      for (auto& promise : pending) {
        auto response = promise.wait(rpc_.wait_scope());
        if (!response.getFound()) {
          out.emplace_back();
          continue;
        }
        std::vector<core::history_event> events;
        for (auto event : response.getHistory()) events.push_back(wire::read(event));
        out.emplace_back(std::move(events));
      }
      return out;
    });
  }

  expected<core::instance_record> wait(const std::string& id, bool until_completed, std::chrono::milliseconds timeout) {
    return guarded([&] {
      auto request = scheduler_.waitForInstanceRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      request.setUntilCompleted(until_completed);
      auto& timer = rpc_.timer();
      auto expired = timer.afterDelay(timeout.count() * kj::MILLISECONDS).then([]() -> core::instance_record {
        throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                            kj::str("failed_precondition: timed out waiting for the instance"));
      });
      auto answered = request.send().then([](auto response) { return wire::read(response.getRecord()); });
      return answered.exclusiveJoin(kj::mv(expired)).wait(rpc_.wait_scope());
    });
  }

  expected<core::instance_record> wait_for_start(const std::string& id, std::chrono::milliseconds timeout) override {
    return wait(id, false, timeout);
  }
  expected<core::instance_record> wait_for_completion(const std::string& id, std::chrono::milliseconds timeout) override {
    return wait(id, true, timeout);
  }

  expected<void> raise_event(const std::string& id, const std::string& name, const json& data) override {
    return guarded([&] {
      auto request = scheduler_.raiseEventRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      request.setName(text(name));
      request.setInput(text(data.dump()));
      request.send().wait(rpc_.wait_scope());
    });
  }

  expected<void> terminate(const std::string& id, const json& reason, bool recurse) override {
    return guarded([&] {
      auto request = scheduler_.terminateRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      request.setReason(text(reason.dump()));
      request.setRecurse(recurse);
      request.send().wait(rpc_.wait_scope());
    });
  }

  expected<void> suspend(const std::string& id, const std::string& reason) override {
    return with_reason(scheduler_.suspendRequest(), id, reason);
  }

  expected<void> resume(const std::string& id, const std::string& reason) override {
    return with_reason(scheduler_.resumeRequest(), id, reason);
  }

  expected<void> rewind(const std::string& id, const std::string& reason) override {
    return with_reason(scheduler_.rewindRequest(), id, reason);
  }

  expected<std::string> restart(const std::string& id, bool new_id) override {
    return guarded([&] {
      auto request = scheduler_.restartRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      request.setNewId(new_id);
      return std::string(request.send().wait(rpc_.wait_scope()).getInstanceId().cStr());
    });
  }

  expected<std::size_t> purge(const std::string& id, bool recursive) override {
    return guarded([&] {
      auto request = scheduler_.purgeRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      request.setRecursive(recursive);
      return static_cast<std::size_t>(request.send().wait(rpc_.wait_scope()).getPurged());
    });
  }

  expected<std::size_t> purge_where(const query_options& filter, bool recursive) override {
    return guarded([&] {
      auto request = scheduler_.purgeWhereRequest();
      request.setTaskHub(text(hub_));
      write_query(request.initQuery(), filter);
      request.setRecursive(recursive);
      return static_cast<std::size_t>(request.send().wait(rpc_.wait_scope()).getPurged());
    });
  }

  static void write_query(s::InstanceQuery::Builder q, const query_options& options) {
    auto statuses = q.initStatuses(static_cast<unsigned>(options.statuses.size()));
    for (unsigned i = 0; i < options.statuses.size(); ++i) statuses.set(i, wire::write(options.statuses[i]));
    auto ns = [](std::chrono::system_clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    };
    if (options.created_from) q.setCreatedFromNs(ns(*options.created_from));
    if (options.created_to) q.setCreatedToNs(ns(*options.created_to));
    q.setNamePrefix(text(options.name_prefix));
    q.setInstanceIdPrefix(text(options.instance_id_prefix));
    if (options.version) q.setVersion(text(*options.version));
    q.setPageSize(options.page_size);
    q.setContinuationToken(text(options.continuation_token));
    q.setFetchPayloads(true);
    q.setEntities(options.entities);
  }

  expected<query_result> query(const query_options& options) override {
    return guarded([&] {
      auto request = scheduler_.queryRequest();
      request.setTaskHub(text(hub_));
      write_query(request.initQuery(), options);
      auto response = request.send().wait(rpc_.wait_scope());
      query_result result;
      for (auto record : response.getInstances()) result.instances.push_back(wire::read(record));
      result.continuation_token = text(response.getContinuationToken());
      return result;
    });
  }

  expected<std::vector<std::string>> task_hubs() override {
    return guarded([&] {
      auto response = scheduler_.listTaskHubsRequest().send().wait(rpc_.wait_scope());
      std::vector<std::string> names;
      for (auto name : response.getNames()) names.push_back(text(name));
      return names;
    });
  }

  expected<void> create_task_hub(const std::string& name, std::uint32_t partitions) override {
    return guarded([&] {
      auto request = scheduler_.createTaskHubRequest();
      request.setName(text(name));
      request.setPartitionCount(partitions);
      request.send().wait(rpc_.wait_scope());
    });
  }

  expected<void> delete_task_hub(const std::string& name, bool force) override {
    return guarded([&] {
      auto request = scheduler_.deleteTaskHubRequest();
      request.setName(text(name));
      request.setForce(force);
      request.send().wait(rpc_.wait_scope());
    });
  }

  expected<void> signal_entity(const std::string& entity_id, const std::string& operation, const json& input,
                               std::optional<std::chrono::system_clock::time_point> at) override {
    return guarded([&] {
      auto request = scheduler_.signalEntityRequest();
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(entity_id));
      request.setOperation(text(operation));
      const auto encoded = input.dump();
      if (!input.is_null()) request.setInput(text(encoded));
      if (at) request.setScheduledNs(std::chrono::duration_cast<std::chrono::nanoseconds>(at->time_since_epoch()).count());
      request.send().wait(rpc_.wait_scope());
    });
  }

  expected<std::optional<core::instance_record>> get_entity(const std::string& entity_id) override {
    auto record = get(entity_id);
    if (!record) return record.error();
    if (*record && !(*record)->entity_state) return std::optional<core::instance_record>();
    return record;
  }

  expected<std::vector<worker_info>> workers() override {
    return guarded([&] {
      auto request = scheduler_.listWorkersRequest();
      request.setTaskHub(text(hub_));
      auto response = request.send().wait(rpc_.wait_scope());
      std::vector<worker_info> out;
      for (auto w : response.getWorkers()) {
        out.push_back(worker_info{w.getSession(), w.getWorker().cStr(), w.getOrchestratorSlots(), w.getActivitySlots(),
                                  w.getEntitySlots(), w.getOrchestratorsInUse(), w.getActivitiesInUse(),
                                  w.getEntitiesInUse(), rpc_wire::read(w.getFilters())});
      }
      return out;
    });
  }

  expected<std::vector<partition_info>> partitions(const std::string& name) override {
    return guarded([&] {
      auto request = scheduler_.listPartitionsRequest();
      request.setTaskHub(text(name));
      auto response = request.send().wait(rpc_.wait_scope());
      std::vector<partition_info> out;
      for (auto p : response.getPartitions()) {
        auto& info = out.emplace_back();
        info.index = p.getIndex();
        info.stalled = p.getStalled().cStr();
        info.stalled_since_ns = p.getStalledSinceNs();
        info.failed_commits = p.getFailedCommits();
        info.commits = p.getCommits();
        info.committed_changes = p.getCommittedChanges();
        info.commit_ns_total = p.getCommitNsTotal();
        info.commit_ns_max = p.getCommitNsMax();
        info.ready_orchestrators = p.getReadyOrchestrators();
        info.ready_activities = p.getReadyActivities();
        info.ready_entities = p.getReadyEntities();
        info.live_instances = p.getLiveInstances();
        info.oldest_ready_wait_ns = p.getOldestReadyWaitNs();
        info.unacknowledged_messages = p.getUnacknowledgedMessages();
      }
      return out;
    });
  }

  expected<retention_info> retention() override {
    return guarded([&] {
      auto request = scheduler_.getRetentionRequest();
      request.setTaskHub(text(hub_));
      return retention_of(request.send().wait(rpc_.wait_scope()));
    });
  }

  expected<retention_info> set_retention(const std::optional<core::retention_policy>& policy) override {
    return guarded([&] {
      auto request = scheduler_.setRetentionRequest();
      request.setTaskHub(text(hub_));
      request.setHasPolicy(policy.has_value());
      if (policy) request.setPolicy(text(core::to_json(*policy)));
      return retention_of(request.send().wait(rpc_.wait_scope()));
    });
  }

  expected<std::vector<core::schedule>> schedule(const core::schedule_command& command) override {
    return guarded([&] {
      auto request = scheduler_.scheduleRequest();
      request.setTaskHub(text(hub_));
      request.setCommand(text(core::to_json(command)));
      auto response = request.send().wait(rpc_.wait_scope());
      auto schedules = core::schedules_from_json(response.getSchedules().cStr());
      if (!schedules) {
        throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                            kj::str("corrupt: dtsd's schedules cannot be read: ", schedules.error().message.c_str()));
      }
      return std::move(*schedules);
    });
  }

  template <class Response>
  static retention_info retention_of(const Response& response) {
    auto policy = core::retention_from_json(response.getPolicy().cStr());
    if (!policy) {
      throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                          kj::str("corrupt: dtsd's retention policy cannot be read: ", policy.error().message.c_str()));
    }
    return retention_info{std::move(*policy), response.getOwn()};
  }

  expected<entity_clean_summary> clean_entity_storage(bool remove_empty, bool release_orphaned_locks) override {
    return guarded([&] {
      entity_clean_summary summary;
      std::string token;
      do {
        auto request = scheduler_.cleanEntityStorageRequest();
        request.setTaskHub(text(hub_));
        request.setContinuationToken(text(token));
        request.setRemoveEmpty(remove_empty);
        request.setReleaseOrphanedLocks(release_orphaned_locks);
        auto response = request.send().wait(rpc_.wait_scope());
        summary.removed += response.getRemoved();
        summary.released += response.getReleased();
        token = std::string(response.getContinuationToken().cStr());
      } while (!token.empty());
      return summary;
    });
  }

 private:
  /// Suspend, resume and rewind: (hub, instance id, optional reason) -> ().
  template <class Request>
  expected<void> with_reason(Request request, const std::string& id, const std::string& reason) {
    return guarded([&] {
      request.setTaskHub(text(hub_));
      request.setInstanceId(text(id));
      if (!reason.empty()) request.setReason(text(reason));
      request.send().wait(rpc_.wait_scope());
    });
  }

  connection rpc_;
  std::string hub_;
  s::Scheduler::Client scheduler_;
};

}  // namespace

json output_of(const core::instance_record& record) {
  if (!record.output) return json();
  auto parsed = json::parse(*record.output, nullptr, false);
  return parsed.is_discarded() ? json(*record.output) : parsed;
}

expected<std::unique_ptr<client>> client::connect(const std::string& address, const std::string& task_hub,
                                                  const std::string& token, const tls_options& tls) {
  try {
    auto made = std::make_unique<capnp_client>(address, task_hub, token, tls);
    // A first call proves the server is there and the hub exists.
    auto hubs = made->task_hubs();
    if (!hubs) {
      bool tls_requested = false;
      rpc::without_scheme(address, tls_requested);
      auto failure = hubs.error();
      const auto dropped = [&](const char* what) { return failure.message.find(what) != std::string::npos; };
      if (failure.code == errc::io && !tls_requested && !tls.enabled() &&
          (dropped("isconnected") || dropped("reset by peer") || dropped("Broken pipe"))) {
        failure.message = fmt::format("{} closed the connection at once ({}); if its native API serves TLS "
                                      "(--tls-cert), give the CA to trust (--tls-ca) or the address tls://HOST:PORT",
                                      address, failure.message);
      }
      return failure;
    }
    if (!task_hub.empty() && std::find(hubs->begin(), hubs->end(), task_hub) == hubs->end()) {
      return error{errc::unknown_task_hub, fmt::format("task hub '{}' does not exist", task_hub)};
    }
    return std::unique_ptr<client>(std::move(made));
  } catch (const kj::Exception& failure) {
    return error_of(failure);
  }
}

}  // namespace dtsd::sdk
