#pragma once
/// GetWorkItems streams: the sink the actors push a worker session's items into,
/// converted to protocol messages and written one at a time, and the completion
/// tokens it hands out ("<stream>.<kind><token>") with what each one names.

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth/token.hpp"
#include "core/overloaded.hpp"
#include "grpc/calls.hpp"
#include "grpc/proto_convert.hpp"

namespace dtsd::grpc_api {

/// A work item handed to a gRPC worker and not yet completed or abandoned.
/// The letter a completion token carries for its kind of work item.
enum class token_kind : char { orchestrator = 'o', activity = 'a', entity = 'e' };

inline const char* describe(token_kind kind) {
  switch (kind) {
    case token_kind::orchestrator: return "orchestrator";
    case token_kind::activity: return "activity";
    case token_kind::entity: return "entity";
  }
  return "work item";
}

struct outstanding {
  token_kind kind = token_kind::orchestrator;
  std::uint64_t token = 0;
  std::string instance_id;
  core::activity_request activity;  ///< For activities: what to give back on abandon.
  std::size_t new_events = 0;       ///< For orchestrators: new events the worker was given.
};

class work_stream;

/// New events of a work item other than the OrchestratorStarted dtsd puts first
/// (an SDK may or may not count that one in numEventsProcessed).
inline std::size_t inbox_events(const core::orchestrator_work_item& item) {
  const bool started_first = !item.new_events.empty() &&
                             std::holds_alternative<core::events::orchestrator_started>(item.new_events.front().body);
  return item.new_events.size() - (started_first ? 1 : 0);
}

/// What the actors hold of a GetWorkItems stream. push() and keep_alive() run on
/// actor threads and never block: items are queued, and written one at a time
/// (gRPC allows one write in flight); OnWriteDone writes the next.
class stream_sink final : public service::work_sink {
 public:
  /// Fails an orchestration whose work item this worker cannot receive.
  using fail_fn = std::function<void(std::uint64_t session, core::orchestrator_completion)>;

  stream_sink(std::uint64_t stream, std::string hub, bool history_streaming, fail_fn fail)
      : stream_(stream), hub_(std::move(hub)), history_streaming_(history_streaming), fail_(std::move(fail)) {}
  /// The task hub the stream was opened for.
  const std::string& hub() const { return hub_; }
  /// With --auth: the grant of the token that opened it (checked again each second).
  void set_grant(auth::grant who) {
    std::lock_guard lock(mutex_);
    grant_ = std::move(who);
  }
  std::optional<auth::grant> grant() const {
    std::lock_guard lock(mutex_);
    return grant_;
  }

  void push(std::vector<service::work_item> items) override {
    std::vector<WorkItem> converted;
    converted.reserve(items.size());
    std::lock_guard lock(mutex_);
    if (closed_) return;
    for (auto& item : items) {
      WorkItem message;
      std::string token;
      std::visit(overloaded{
                     [&](const core::orchestrator_work_item& orchestration) {
                       const auto kind = orchestration.entity ? token_kind::entity : token_kind::orchestrator;
                       token = fmt::format("{}.{}{}", stream_, static_cast<char>(kind), orchestration.completion_token);
                       if (orchestration.entity) {
                         write(message.mutable_entity_request_v2(), orchestration);
                         if (!fits_entity(message, orchestration)) {
                           token.clear();
                           return;
                         }
                       } else {
                         write(message.mutable_orchestrator_request(), orchestration);
                         if (!fits(message, orchestration)) {
                           token.clear();
                           return;
                         }
                       }
                       held_[token] = outstanding{kind, orchestration.completion_token, orchestration.instance_id, {},
                                                  inbox_events(orchestration)};
                     },
                     [&](const core::activity_work_item& activity) {
                       token = fmt::format("{}.a{}", stream_, activity.completion_token);
                       write(message.mutable_activity_request(), activity.request);
                       held_[token] = outstanding{token_kind::activity, activity.completion_token, activity.request.instance_id,
                                                  activity.request};
                     },
                 },
                 item);
      if (token.empty()) continue;  // Not deliverable: failed instead.
      message.set_completion_token(std::move(token));
      queue_.push_back(std::move(message));
    }
    write_next_locked();
  }

  /// Whether the orchestrator work item in `message` can go to this worker. Large
  /// ones go without their past events to a worker that streams history; one that
  /// cannot stream and would be handed more than a gRPC client takes gets nothing,
  /// and the orchestration fails with the reason (rather than being offered again
  /// and again, forever).
  bool fits(WorkItem& message, const core::orchestrator_work_item& item) {
    auto* request = message.mutable_orchestrator_request();
    const auto size = message.ByteSizeLong();
    if (history_streaming_ && size > history_streaming_bytes_min) {
      request->clear_past_events();
      request->set_requires_history_streaming(true);
      if (message.ByteSizeLong() <= work_item_bytes_max) return true;
    } else if (size <= work_item_bytes_max) {
      return true;
    }
    core::actions::complete_orchestration failed;
    failed.status = core::runtime_status::failed;
    failed.failure = core::failure_details{
        "WorkItemTooLarge",
        fmt::format("the work item of orchestration '{}' is {} bytes, more than the {} bytes a gRPC worker accepts by "
                    "default{}; its history (or its new events) grew too large",
                    item.instance_id, size, client_message_bytes_max,
                    history_streaming_ ? "" : ", and this worker does not stream history "
                                              "(WORKER_CAPABILITY_HISTORY_STREAMING)"),
        std::nullopt, nullptr, true};
    spdlog::warn("{}", failed.failure->error_message);
    send_failure({item.instance_id, item.completion_token, {{0, std::move(failed)}}, std::nullopt});
    return false;
  }

  /// An entity batch this worker cannot receive fails as a whole (its operations
  /// fail, the state stays), like an orchestrator item it cannot receive.
  bool fits_entity(const WorkItem& message, const core::orchestrator_work_item& item) {
    const auto size = message.ByteSizeLong();
    if (size <= work_item_bytes_max) return true;
    core::entity_batch_result batch;
    batch.failure = core::failure_details{
        "WorkItemTooLarge",
        fmt::format("the operation batch of entity '{}' is {} bytes, more than the {} bytes a gRPC worker accepts by "
                    "default",
                    item.instance_id, size, client_message_bytes_max),
        std::nullopt, nullptr, true};
    spdlog::warn("{}", batch.failure->error_message);
    send_failure({item.instance_id, item.completion_token, {}, std::nullopt, std::move(batch)});
    return false;
  }

  /// Fails an item this worker cannot receive; before the session id is known
  /// (activate), the failure waits for it.
  void send_failure(core::orchestrator_completion completion) {
    if (session_ == 0) {
      unsent_failures_.push_back(std::move(completion));
    } else {
      fail_(session_, std::move(completion));
    }
  }

  void keep_alive() override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    WorkItem ping;
    ping.mutable_health_ping();
    queue_.push_back(std::move(ping));
    write_next_locked();
  }

  /// Called once the scheduler has opened the session: writes may start.
  void activate(work_stream* stream, std::uint64_t session) {
    std::lock_guard lock(mutex_);
    stream_reactor_ = stream;
    session_ = session;
    for (auto& failure : std::exchange(unsent_failures_, {})) fail_(session_, std::move(failure));
    write_next_locked();
  }

  /// How the stream ends once its last write is done.
  Status final_status() {
    std::lock_guard lock(mutex_);
    return end_status_.value_or(Status(StatusCode::CANCELLED, "the work stream ended"));
  }

  /// dtsd closed the session: the stream ends (UNAVAILABLE, with why) and what it
  /// held is forgotten (its tokens are stale from now on).
  void end(const std::string& why) override;

  /// The item a completion token names, taken out of the held set.
  std::optional<outstanding> take(const std::string& token) {
    std::lock_guard lock(mutex_);
    auto found = held_.find(token);
    if (found == held_.end()) return std::nullopt;
    auto item = std::move(found->second);
    held_.erase(found);
    return item;
  }

  /// Puts an item back after a completion the scheduler refused for a reason the
  /// worker may fix (say, an invalid action list); stale tokens stay out.
  void put_back(const std::string& token, outstanding item) {
    std::lock_guard lock(mutex_);
    if (!closed_) held_[token] = std::move(item);
  }

  std::uint64_t session() {
    std::lock_guard lock(mutex_);
    return session_;
  }

  /// OnWriteDone: the write finished (ok) or the stream broke. Returns whether
  /// the stream must now be finished.
  bool write_done(bool ok);
  /// OnCancel: returns whether the stream must now be finished (no write in flight).
  bool cancel() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    queue_.clear();
    return !writing_ && !std::exchange(finish_sent_, true);
  }
  /// The stream is over (OnDone), or its caller finishes it at once (the session
  /// could not open): nothing is written, and OnCancel does not finish it again.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    finish_sent_ = true;
    queue_.clear();
    held_.clear();
    stream_reactor_ = nullptr;
  }

 private:
  void write_next_locked();

  const std::uint64_t stream_;
  const std::string hub_;
  std::optional<auth::grant> grant_;  ///< Under mutex_.
  const bool history_streaming_;
  const fail_fn fail_;
  mutable std::mutex mutex_;
  std::vector<core::orchestrator_completion> unsent_failures_;
  std::optional<Status> end_status_;  ///< Set by end().
  std::deque<WorkItem> queue_;
  WorkItem current_;
  bool writing_ = false;
  bool closed_ = false;
  bool finish_sent_ = false;
  work_stream* stream_reactor_ = nullptr;
  std::uint64_t session_ = 0;
  std::unordered_map<std::string, outstanding> held_;
};

/// One GetWorkItems call: a scheduler session for as long as the stream lives.
class work_stream final : public grpc::ServerWriteReactor<WorkItem> {
 public:
  /// `ended(session)` runs once the call is over (session 0: none was opened).
  work_stream(std::shared_ptr<stream_sink> sink, std::function<void(std::uint64_t session)> ended)
      : sink_(std::move(sink)), ended_(std::move(ended)) {}

  void start_write(const WorkItem* item) { StartWrite(item); }
  void finish(const Status& status) { Finish(status); }

  void OnWriteDone(bool ok) override {
    if (sink_->write_done(ok)) Finish(sink_->final_status());
  }
  void OnCancel() override {
    if (sink_->cancel()) Finish(Status(StatusCode::CANCELLED, "the work stream ended"));
  }
  void OnDone() override {
    sink_->close();
    ended_(session_);
    delete this;
  }

  void set_session(std::uint64_t session) { session_ = session; }

 private:
  std::uint64_t session_ = 0;
  std::shared_ptr<stream_sink> sink_;
  std::function<void(std::uint64_t)> ended_;
};

}  // namespace dtsd::grpc_api
