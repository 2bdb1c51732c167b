#include "sdk/worker.hpp"

#include <kj/async-io.h>
#include <kj/async.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "core/ids.hpp"
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

constexpr auto health_interval = std::chrono::seconds(1);
constexpr auto health_timeout = std::chrono::seconds(5);
constexpr auto reconnect_delay_max = std::chrono::milliseconds(2000);

/// A fixed pool of threads running queued jobs.
class thread_pool {
 public:
  explicit thread_pool(std::size_t threads) {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& thread : threads_) thread.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

core::failure_details failure_of(const std::string& type, const std::string& message, bool non_retriable) {
  return core::failure_details{type, message, std::nullopt, nullptr, non_retriable};
}

}  // namespace

int compare_versions(std::string_view a, std::string_view b) {
  auto next = [](std::string_view& rest) {
    const auto dot = rest.find('.');
    auto part = rest.substr(0, dot);
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    return part;
  };
  // A missing part counts as 0, so "1" and "1.0" are the same version.
  auto number = [](std::string_view part) -> std::optional<long long> {
    if (part.empty()) return 0;
    if (part.size() > 18 || !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    return std::stoll(std::string(part));
  };
  while (!a.empty() || !b.empty()) {
    auto x = next(a);
    auto y = next(b);
    auto nx = number(x), ny = number(y);
    if (nx && ny) {
      if (*nx != *ny) return *nx < *ny ? -1 : 1;
    } else if (x != y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

std::string entity_context::key() const {
  const auto name = core::entity_name(entity_id_);
  return entity_id_.size() > name.size() + 2 ? entity_id_.substr(name.size() + 2) : std::string();
}

void entity_context::signal_entity(const std::string& entity_id, const std::string& operation, const json& input) {
  actions_.emplace_back(core::entity_actions::signal{entity_id, operation, input.dump(), 0});
}

void entity_context::start_orchestration(const std::string& name, const json& input, std::string instance_id) {
  actions_.emplace_back(core::entity_actions::start_orchestration{std::move(instance_id), name, std::nullopt, input.dump(), 0});
}

struct worker::impl {
  worker_options options;
  std::map<std::string, orchestrator_fn> orchestrators;
  std::map<std::string, activity_fn> activities;
  std::map<std::string, entity_fn> entities;
  std::atomic<bool> stopping{false};
  std::unique_ptr<thread_pool> pool;

  /// An answer serialized on the pool thread that produced it.
  struct prepared_answer {
    bool orchestrator = false;  ///< An orchestrator (or entity) completion; else an activity result.
    std::unique_ptr<capnp::MallocMessageBuilder> message;
    /// Set instead of a message: the orchestrator work item is given back unprocessed.
    std::optional<std::pair<std::string, std::uint64_t>> abandon = std::nullopt;
  };

  /// Answers on their way to the server, queued by pool threads and sent by the
  /// loop thread (a pool thread never waits for the loop: it queues and moves on).
  /// What is queued when the loop wakes goes out in as few calls as possible.
  struct outgoing {
    std::mutex mutex;
    std::vector<prepared_answer> queue;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake;
    bool closed = false;

    void add(prepared_answer answer) {
      std::lock_guard lock(mutex);
      if (closed) return;
      queue.push_back(std::move(answer));
      if (wake) {
        wake->fulfill();
        wake = nullptr;
      }
    }

    /// On the loop thread: sends everything queued, then waits for more.
    kj::Promise<void> drain(s::WorkerSession::Client& session, kj::TaskSet& tasks) {
      auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        std::lock_guard lock(mutex);
        if (closed) return kj::READY_NOW;
        if (queue.empty()) {
          wake = kj::mv(paf.fulfiller);
        } else {
          paf.fulfiller->fulfill();
        }
      }
      return paf.promise.then([this, &session, &tasks]() -> kj::Promise<void> {
        std::vector<prepared_answer> ready;
        {
          std::lock_guard lock(mutex);
          if (closed) return kj::READY_NOW;
          ready.swap(queue);
        }
        std::vector<prepared_answer> answers;
        for (auto& answer : ready) {
          if (!answer.abandon) {
            answers.push_back(std::move(answer));
            continue;
          }
          auto request = session.abandonOrchestratorRequest();
          request.setInstanceId(answer.abandon->first);
          request.setCompletionToken(answer.abandon->second);
          tasks.add(request.send().ignoreResult());
        }
        for (std::size_t at = 0; at < answers.size();) at = send_some(session, tasks, answers, at);
        return drain(session, tasks);
      });
    }

    /// Sends answers from `at` on in one call: up to 256 of them and about 16 MiB
    /// (an answer bigger than that goes alone). Returns where the next call starts.
    static std::size_t send_some(s::WorkerSession::Client& session, kj::TaskSet& tasks,
                                 std::vector<prepared_answer>& ready, std::size_t at) {
      constexpr std::size_t count_max = 256;
      constexpr std::size_t words_max = (std::size_t{16} << 20) / sizeof(capnp::word);
      std::size_t end = at, words = 0, orchestrators = 0;
      while (end < ready.size() && end - at < count_max) {
        const auto size = ready[end].message->sizeInWords();
        if (end > at && words + size > words_max) break;
        words += size;
        orchestrators += ready[end].orchestrator ? 1 : 0;
        ++end;
      }
      auto request = session.completeManyRequest();
      auto orchestrator_list = request.initOrchestrators(static_cast<unsigned>(orchestrators));
      auto activity_list = request.initActivities(static_cast<unsigned>(end - at - orchestrators));
      unsigned next_orchestrator = 0, next_activity = 0;
      for (std::size_t i = at; i < end; ++i) {
        auto& message = *ready[i].message;
        if (ready[i].orchestrator) {
          orchestrator_list.setWithCaveats(next_orchestrator++, message.getRoot<s::OrchestratorCompletion>().asReader());
        } else {
          activity_list.setWithCaveats(next_activity++, message.getRoot<s::ActivityCompletion>().asReader());
        }
      }
      tasks.add(request.send().then([](auto response) {
        for (auto refusal : response.getRefusals()) {
          auto why = error_of_text(refusal.getError().cStr());
          if (why.code == errc::stale_token || why.code == errc::duplicate) continue;  // Already handled.
          spdlog::warn("an answer for '{}' was refused: {}", refusal.getInstanceId().cStr(), why.message);
        }
      }));
      return end;
    }

    /// When the connection ends: later answers are dropped (the server dispatches
    /// their items again).
    void close() {
      std::lock_guard lock(mutex);
      closed = true;
      queue.clear();
      wake = nullptr;
    }
  };

  // The live connection's answer queue and stop signal, shared with pool threads
  // under the mutex.
  std::mutex mutex;
  std::uint64_t generation = 0;
  std::shared_ptr<outgoing> answers;
  std::shared_ptr<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop_signal;
  bool reconnect = false;  ///< The server ended the session (under `mutex`).

  /// Queues an answer for the connection `of_generation` if it is still live;
  /// otherwise the answer is dropped and the server dispatches the item again.
  void send(std::uint64_t of_generation, prepared_answer answer) {
    std::shared_ptr<outgoing> target;
    {
      std::lock_guard lock(mutex);
      if (!answers || generation != of_generation) return;
      target = answers;
    }
    target->add(std::move(answer));
  }

  void send(std::uint64_t of_generation, const core::orchestrator_completion& completion) {
    prepared_answer answer{true, std::make_unique<capnp::MallocMessageBuilder>()};
    wire::write(answer.message->initRoot<s::OrchestratorCompletion>(), completion);
    send(of_generation, std::move(answer));
  }

  void send(std::uint64_t of_generation, const core::activity_result& result) {
    prepared_answer answer{false, std::make_unique<capnp::MallocMessageBuilder>()};
    wire::write(answer.message->initRoot<s::ActivityCompletion>(), result);
    send(of_generation, std::move(answer));
  }

  /// Why this worker must not run the item's version, if it must not.
  std::optional<std::string> version_mismatch(const core::orchestrator_work_item& item) const {
    const auto& versioning = options.versioning;
    if (versioning.match == version_match::none) return std::nullopt;
    std::string version;
    for (const auto* events : {&item.past_events, &item.new_events}) {
      for (const auto& event : *events) {
        if (const auto* started = std::get_if<core::events::execution_started>(&event.body)) {
          version = started->version.value_or(std::string());
        }
      }
    }
    const int order = compare_versions(version, versioning.version);
    const bool fits = versioning.match == version_match::strict ? version == versioning.version : order <= 0;
    if (fits) return std::nullopt;
    return fmt::format("the orchestration's version '{}' does not match this worker's version '{}' ({})", version,
                       versioning.version, versioning.match == version_match::strict ? "strict" : "current or older");
  }

  /// Filters made of what is registered (sent when options.filter_work_items).
  core::work_filters filters() const {
    if (!options.filter_work_items) return {};
    std::vector<std::string> versions;
    if (options.versioning.match == version_match::strict) versions.push_back(options.versioning.version);
    auto names = [&](const auto& registered, bool versioned) {
      std::vector<core::name_filter> out;
      for (const auto& [name, fn] : registered) out.push_back({name, versioned ? versions : std::vector<std::string>{}});
      return out;
    };
    return {names(orchestrators, true), names(activities, true), names(entities, false)};
  }

  void run_orchestration(std::uint64_t of_generation, core::orchestrator_work_item item) {
    std::string name;
    for (const auto* events : {&item.past_events, &item.new_events}) {
      for (const auto& event : *events) {
        if (const auto* started = std::get_if<core::events::execution_started>(&event.body)) name = started->name;
      }
    }
    core::orchestrator_completion completion;
    auto found = orchestrators.find(name);
    if (auto mismatch = version_mismatch(item)) {
      if (options.versioning.on_mismatch == version_failure::reject) {
        send(of_generation, prepared_answer{true, nullptr, std::pair{item.instance_id, item.completion_token}});
        return;
      }
      core::actions::complete_orchestration failed;
      failed.status = core::runtime_status::failed;
      failed.failure = failure_of("VersionMismatch", *mismatch, true);
      completion = {item.instance_id, item.completion_token, {{0, std::move(failed)}}, std::nullopt};
    } else if (found == orchestrators.end()) {
      core::actions::complete_orchestration failed;
      failed.status = core::runtime_status::failed;
      failed.failure = failure_of("OrchestratorNotFound",
                                  "no orchestrator named '" + name + "' is registered on this worker", true);
      completion = {item.instance_id, item.completion_token, {{0, std::move(failed)}}, std::nullopt};
    } else {
      completion = run_orchestrator(found->second, item);
    }
    send(of_generation, completion);
  }

  /// Runs an entity batch: each operation in order over the state the ones before
  /// it left; a failed operation leaves no trace but its failure.
  void run_entity(std::uint64_t of_generation, core::orchestrator_work_item item) {
    core::entity_batch_result batch;
    std::optional<json> state;
    if (item.entity_state) {
      auto parsed = json::parse(*item.entity_state, nullptr, false);
      state = parsed.is_discarded() ? json(*item.entity_state) : parsed;
    }
    const auto name = core::entity_name(item.instance_id);
    auto found = entities.find(name);
    for (const auto& event : item.new_events) {
      std::string operation;
      core::payload input;
      if (const auto* signaled = std::get_if<core::events::entity_operation_signaled>(&event.body)) {
        operation = signaled->operation;
        input = signaled->input;
      } else if (const auto* called = std::get_if<core::events::entity_operation_called>(&event.body)) {
        operation = called->operation;
        input = called->input;
      } else {
        continue;  // Not an operation: nothing to run (the server sends none other).
      }
      if (found == entities.end()) {
        batch.results.emplace_back(
            failure_of("EntityNotFound", "no entity named '" + name + "' is registered on this worker", true));
        continue;
      }
      entity_context context(item.instance_id, state);
      try {
        json parsed_input = input ? json::parse(*input, nullptr, false) : json();
        if (parsed_input.is_discarded()) parsed_input = json(*input);
        auto result = found->second(context, operation, parsed_input);
        state = context.current_state();
        for (auto& action : context.actions()) batch.actions.push_back(std::move(action));
        batch.results.emplace_back(core::payload(result.dump()));
      } catch (const std::exception& failure) {
        batch.results.emplace_back(failure_of("EntityOperationFailed", failure.what(), false));
      }
    }
    if (state) batch.state = state->dump();
    core::orchestrator_completion completion{item.instance_id, item.completion_token, {}, std::nullopt, std::move(batch)};
    send(of_generation, completion);
  }

  void run_activity(std::uint64_t of_generation, core::activity_request request, std::uint64_t token) {
    core::activity_result result{request.instance_id, request.execution_id, request.task_id, token, core::payload()};
    auto found = activities.find(request.name);
    if (found == activities.end()) {
      result.outcome = failure_of("ActivityNotFound",
                                  "no activity named '" + request.name + "' is registered on this worker", true);
    } else {
      try {
        json input = request.input ? json::parse(*request.input, nullptr, false) : json();
        if (input.is_discarded()) input = json(*request.input);
        auto output = found->second(activity_context{request.instance_id, request.task_id, request.name}, input);
        result.outcome = core::payload(output.dump());
      } catch (const std::exception& failure) {
        result.outcome = failure_of("ActivityFailed", failure.what(), false);
      }
    }
    send(of_generation, result);
  }

  /// Receives pushed work on the loop thread and hands it to the pool.
  class sink final : public s::WorkSink::Server {
   public:
    sink(impl& owner, std::uint64_t of_generation) : owner_(owner), generation_(of_generation) {}

    kj::Promise<void> push(PushContext context) override {
      for (auto item : context.getParams().getItems()) {
        if (item.isOrchestrator()) {
          owner_.pool->post([this_impl = &owner_, g = generation_, work = wire::read(item.getOrchestrator())]() mutable {
            if (work.entity) {
              this_impl->run_entity(g, std::move(work));
            } else {
              this_impl->run_orchestration(g, std::move(work));
            }
          });
        } else {
          auto [request, token] = wire::read(item.getActivity());
          owner_.pool->post([this_impl = &owner_, g = generation_, request = std::move(request), token]() mutable {
            this_impl->run_activity(g, std::move(request), token);
          });
        }
      }
      return kj::READY_NOW;
    }

    kj::Promise<void> keepAlive(KeepAliveContext) override { return kj::READY_NOW; }

    /// dtsd closed the session: connect again (what this worker still runs is
    /// answered into a closed connection and dropped; dtsd gave it to others).
    kj::Promise<void> end(EndContext context) override {
      spdlog::warn("dtsd ended this worker's session: {}", context.getParams().getReason().cStr());
      owner_.reconnect_asked(generation_);
      return kj::READY_NOW;
    }

   private:
    impl& owner_;
    std::uint64_t generation_;
  };

  struct error_log final : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& failure) override {
      auto error = error_of(failure);
      if (error.code == errc::stale_token || error.code == errc::duplicate) return;  // Already handled.
      spdlog::warn("an answer was refused: {}", error.message);
    }
  };

  /// One connection: open a session, then check the server's health until it
  /// fails or stop() is called.
  void serve_once() {
    connection rpc(options.address, options.tls);
    auto& wait_scope = rpc.wait_scope();
    auto scheduler = authenticated(rpc.main<s::Scheduler>(), options.token);
    const std::uint64_t of_generation = ++generation;
    auto open = scheduler.openWorkerSessionRequest();
    open.setTaskHub(kj::StringPtr(options.task_hub.c_str()));
    open.setOrchestratorConcurrency(options.orchestrator_concurrency);
    open.setActivityConcurrency(options.activity_concurrency);
    open.setEntityConcurrency(entities.empty() ? 0 : options.entity_concurrency);
    open.setSink(kj::heap<sink>(*this, of_generation));
    rpc_wire::write(open.initFilters(), filters());
    open.setWorker(options.name);
    open.setThisNodeOnly(options.this_node_only);
    auto session_client = open.send().wait(wait_scope).getSession();
    auto queue = std::make_shared<outgoing>();  // Outlives the tasks that drain it.
    error_log errors;
    kj::TaskSet answer_tasks(errors);
    auto stopped = kj::newPromiseAndCrossThreadFulfiller<void>();
    auto stop_forked = stopped.promise.fork();
    answer_tasks.add(queue->drain(session_client, answer_tasks));
    {
      std::lock_guard lock(mutex);
      reconnect = false;  // An end asked of an earlier connection does not end this one.
      answers = queue;
      stop_signal = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(stopped.fulfiller));
    }
    spdlog::info("worker connected to {} (task hub '{}')", options.address, options.task_hub);
    auto& timer = rpc.timer();
    try {
      while (!stopping) {
        auto ping = scheduler.listTaskHubsRequest().send().ignoreResult().exclusiveJoin(
            timer.afterDelay(std::chrono::duration_cast<std::chrono::milliseconds>(health_timeout).count() * kj::MILLISECONDS).then([] {
              throw kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__, kj::str("no answer from dtsd"));
            }));
        ping.wait(wait_scope);
        stop_forked.addBranch()
            .exclusiveJoin(timer.afterDelay(std::chrono::duration_cast<std::chrono::milliseconds>(health_interval).count() * kj::MILLISECONDS))
            .wait(wait_scope);
        std::lock_guard lock(mutex);
        if (std::exchange(reconnect, false)) {
          throw kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                              kj::str("dtsd ended the session"));
        }
      }
    } catch (...) {
      forget_connection();
      throw;
    }
    forget_connection();
  }

  /// The server ended the session of `of_generation`: serve_once returns and run()
  /// connects again.
  void reconnect_asked(std::uint64_t of_generation) {
    std::lock_guard lock(mutex);
    if (generation != of_generation) return;
    reconnect = true;
    if (stop_signal) {
      (*stop_signal)->fulfill();
      stop_signal.reset();
    }
  }

  void forget_connection() {
    std::lock_guard lock(mutex);
    if (answers) answers->close();
    answers = nullptr;
    stop_signal.reset();
  }
};

worker::worker(worker_options options) : impl_(std::make_unique<impl>()) {
  impl_->options = std::move(options);
}

worker::~worker() = default;

worker& worker::add_orchestrator(const std::string& name, orchestrator_fn orchestrator) {
  impl_->orchestrators[name] = std::move(orchestrator);
  return *this;
}

worker& worker::add_activity(const std::string& name, activity_fn activity) {
  impl_->activities[name] = std::move(activity);
  return *this;
}

worker& worker::add_entity(const std::string& name, entity_fn entity) {
  impl_->entities[name] = std::move(entity);
  return *this;
}

void worker::run() {
  const auto threads = impl_->options.threads != 0 ? impl_->options.threads : impl_->options.activity_concurrency;
  impl_->pool = std::make_unique<thread_pool>(std::max<std::uint32_t>(1, threads));
  auto delay = std::chrono::milliseconds(100);
  while (!impl_->stopping) {
    try {
      impl_->serve_once();
      delay = std::chrono::milliseconds(100);
    } catch (const kj::Exception& failure) {
      if (impl_->stopping) break;
      spdlog::warn("worker connection to {} failed ({}); reconnecting in {} ms", impl_->options.address,
                   error_of(failure).message, delay.count());
      std::this_thread::sleep_for(delay);
      delay = std::min(reconnect_delay_max, delay * 2);
    }
  }
  impl_->pool.reset();  // Finishes what was queued; its answers are dropped with the connection.
}

void worker::stop() {
  impl_->stopping = true;
  std::lock_guard lock(impl_->mutex);
  if (impl_->stop_signal) {
    (*impl_->stop_signal)->fulfill();
    impl_->stop_signal.reset();
  }
}

}  // namespace dtsd::sdk
