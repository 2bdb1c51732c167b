#pragma once
/// Orchestrators as C++20 coroutines. An orchestrator is replayed from the start
/// for every work item: each `co_await` of a durable call is answered from the
/// history when the history has the answer, and otherwise suspends; the calls the
/// code makes that the history does not hold yet become the work item's actions.
/// Code must be deterministic: use ctx.current_time() and ctx.new_guid(), never the
/// clock or randomness. A history that does not match the code fails the instance
/// with a NonDeterminismError instead of corrupting it.

#include <chrono>
#include <coroutine>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model.hpp"

namespace dtsd::sdk {

using json = nlohmann::json;

/// A durable call failed (an activity threw, a sub-orchestration failed).
class task_failed : public std::runtime_error {
 public:
  explicit task_failed(core::failure_details details)
      : std::runtime_error(details.error_type + ": " + details.error_message), details_(std::move(details)) {}
  const core::failure_details& details() const { return details_; }

 private:
  core::failure_details details_;
};

/// The answer slot of one durable call.
struct durable_slot {
  bool done = false;
  std::uint64_t order = 0;  ///< When it was answered, in history order (for when_any).
  std::optional<json> value;
  std::optional<core::failure_details> failure;
  std::coroutine_handle<> waiter;
  std::vector<std::function<void()>> listeners;  ///< Told when it is answered.
};

/// What `co_await ctx.call_activity(...)` and friends return.
class durable {
 public:
  explicit durable(std::shared_ptr<durable_slot> slot) : slot_(std::move(slot)) {}
  const std::shared_ptr<durable_slot>& slot() const { return slot_; }
  bool await_ready() const noexcept { return slot_->done; }
  void await_suspend(std::coroutine_handle<> waiter) noexcept { slot_->waiter = waiter; }
  json await_resume() const {
    if (slot_->failure) throw task_failed(*slot_->failure);
    return slot_->value.value_or(json());
  }

 private:
  std::shared_ptr<durable_slot> slot_;
};

/// A lazily started coroutine returning T; orchestrators return task<json>, and
/// helpers (when_all, retries) can be awaited from them.
template <class T>
class task {
 public:
  struct promise_type {
    std::optional<T> value;
    std::exception_ptr failure;
    std::coroutine_handle<> continuation;

    task get_return_object() { return task(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> self) noexcept {
        auto next = self.promise().continuation;
        return next ? next : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_value(T result) { value = std::move(result); }
    void unhandled_exception() { failure = std::current_exception(); }
  };

  explicit task(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  task(task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  task& operator=(task&& other) noexcept {
    if (handle_) handle_.destroy();
    handle_ = std::exchange(other.handle_, {});
    return *this;
  }
  task(const task&) = delete;
  ~task() {
    if (handle_) handle_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> continuation) noexcept {
    handle_.promise().continuation = continuation;
    return handle_;
  }
  T await_resume() {
    if (handle_.promise().failure) std::rethrow_exception(handle_.promise().failure);
    return std::move(*handle_.promise().value);
  }

  /// For the replay driver: start, and inspect the outcome.
  void start() { handle_.resume(); }
  bool done() const { return handle_.done(); }
  std::exception_ptr failure() const { return handle_.promise().failure; }
  T& result() { return *handle_.promise().value; }

 private:
  std::coroutine_handle<promise_type> handle_;
};

struct retry_policy {
  int max_attempts = 3;
  std::chrono::milliseconds first_interval{1000};
  double backoff = 2.0;
  std::chrono::milliseconds max_interval{std::chrono::minutes(1)};
};

class orchestration_context;
using orchestrator_fn = std::function<task<json>(orchestration_context&, json)>;

class orchestration_context {
 public:
  orchestration_context(std::string instance_id, std::string name);

  const std::string& instance_id() const { return instance_id_; }
  const std::string& name() const { return name_; }
  /// The version this execution was started with (empty when none).
  const std::string& version() const { return version_; }
  /// True while the code runs through events it has seen before.
  bool is_replaying() const { return replaying_; }
  /// The time the current step started, the same on every replay.
  std::chrono::system_clock::time_point current_time() const;
  /// A GUID derived from the instance and a counter, the same on every replay.
  std::string new_guid();

  durable call_activity(const std::string& name, const json& input = json());
  /// A sub-orchestration; without `version` it runs at this orchestration's version.
  durable call_sub_orchestrator(const std::string& name, const json& input = json(),
                                std::string instance_id = {}, std::optional<std::string> version = std::nullopt);
  durable create_timer(std::chrono::milliseconds delay);
  durable create_timer_at(std::chrono::system_clock::time_point fire_at);
  /// Completes with the event's data when an event of this name is raised.
  durable wait_for_external_event(const std::string& name);
  /// The same with a limit: throws task_failed (TimeoutError) when the durable timer
  /// fires first; the wait is withdrawn, so a later event stays for the next wait.
  task<json> wait_for_external_event(std::string name, std::chrono::milliseconds timeout);
  /// Completes with the index of the first of `calls` to finish (in history order).
  durable when_any(const std::vector<durable>& calls);
  /// Completes with all results, in order; the first failure is thrown.
  task<json> when_all(std::vector<durable> calls);
  void set_custom_status(const json& status) { custom_status_ = status.dump(); }
  /// Ends this execution and starts a fresh one with `input`; with
  /// `keep_unprocessed_events`, events not yet handled carry over.
  void continue_as_new(const json& input, bool keep_unprocessed_events = true);

  /// Calls an operation of an entity ("@name@key") and completes with its result
  /// (or throws task_failed with the operation's error).
  durable call_entity(const std::string& entity_id, const std::string& operation, const json& input = json());
  /// Sends an operation to an entity without waiting for it.
  void signal_entity(const std::string& entity_id, const std::string& operation, const json& input = json());
  /// Enters a critical section: completes once this orchestration holds the lock of
  /// every entity named (granted in a fixed order, so two sections cannot
  /// deadlock). While it holds them, only its own calls reach those entities.
  durable lock_entities(std::vector<std::string> entity_ids);
  /// Leaves the critical section (the locks are also released if the execution
  /// ends while holding them).
  void unlock_entities();

  /// Calls an activity again after failures, waiting between attempts on durable timers.
  task<json> call_activity_with_retry(std::string name, json input, retry_policy policy);

 private:
  friend class replay;
  friend core::orchestrator_completion run_orchestrator(const orchestrator_fn&, const core::orchestrator_work_item&);
  struct scheduled_call {
    core::orchestrator_action action;
    std::shared_ptr<durable_slot> slot;
    bool in_history = false;
  };
  durable schedule(core::orchestrator_action action);
  void answer(durable_slot& slot, std::optional<json> value, std::optional<core::failure_details> failure);
  std::uint64_t answered_count_ = 0;

  std::string instance_id_;
  std::string execution_id_;
  std::string name_;
  std::string version_;
  bool replaying_ = true;
  std::int64_t current_time_ns_ = 0;
  std::int32_t next_id_ = 0;
  std::int32_t guid_counter_ = 0;
  std::map<std::int32_t, scheduled_call> calls_;
  std::map<std::string, std::vector<std::shared_ptr<durable_slot>>> event_waiters_;
  std::map<std::string, std::vector<core::history_event>> unclaimed_events_;
  std::optional<std::string> custom_status_;
  std::optional<json> continue_input_;
  bool keep_events_ = true;
  std::optional<std::string> nondeterminism_;
  std::string section_id_;                    ///< The critical section held, if any.
  std::vector<std::string> section_entities_;
};

/// Runs an orchestrator over a work item and returns the completion to send.
core::orchestrator_completion run_orchestrator(const orchestrator_fn& orchestrator,
                                               const core::orchestrator_work_item& item);

}  // namespace dtsd::sdk
