#pragma once
/// What every handler of the gRPC endpoint shares: the protocol's limits, errors
/// as gRPC statuses, the call's metadata (task hub, force), and unary calls
/// finished exactly once by the service's answer or the client's cancellation.

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/error.hpp"
#include "durabletask.grpc.pb.h"
#include "service/types.hpp"

namespace dtsd::grpc_api {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;
using grpc::Status;
using grpc::StatusCode;

// ------------------------------------------------------------------ limits

/// The page size of a query that names none.
inline constexpr std::size_t page_size_default = 100;
/// What of a worker's `workerid` header a listing keeps.
inline constexpr std::size_t worker_name_bytes_max = 256;
/// The largest message a gRPC client takes unless told otherwise (every official
/// SDK keeps the default): an orchestrator work item above it cannot be delivered.
inline constexpr std::size_t client_message_bytes_max = 4u << 20;
/// Room left under that limit for the message's own framing.
inline constexpr std::size_t work_item_bytes_max = client_message_bytes_max - (64u << 10);
/// A worker that can stream history (WORKER_CAPABILITY_HISTORY_STREAMING) gets a
/// work item without its past events once they are this big, and fetches them with
/// StreamInstanceHistory (as DTS sends them).
inline constexpr std::size_t history_streaming_bytes_min = 1u << 20;
/// PurgeInstanceFilter.timeout beyond this is taken as this (one hour).
inline constexpr std::int64_t purge_timeout_s_max = 3600;
/// The size of one HistoryChunk (a single larger event goes alone).
inline constexpr std::size_t history_chunk_bytes_max = 1u << 20;

// ------------------------------------------------------------------ errors and metadata

Status to_status(const error& failure);
/// The hub a call names in its `taskhub` header; without the header, `default`
/// (as the DTS emulator). An empty header names no hub: it is passed on as "" and
/// refused as an invalid hub name, the same on every call.
std::string task_hub_of(const CallbackServerContext* context);
/// The hub DeleteTaskHub names: no default applies to deleting.
std::optional<std::string> named_task_hub(const CallbackServerContext* context);
/// The call's `authorization` header ("Bearer <token>"), empty without one.
std::string bearer_of(const CallbackServerContext* context);
/// `dtsd-force-delete: true` deletes a hub that still holds instances.
bool force_delete(const CallbackServerContext* context);

// ------------------------------------------------------------------ unary calls

/// A unary call, finished exactly once: by the scheduler's answer (on an actor
/// thread) or by the client's cancellation, whichever comes first. The answer
/// may arrive after the call is gone; it then finds `finished` set and drops out.
class unary_call final : public ServerUnaryReactor {
 public:
  struct state {
    std::mutex mutex;
    bool finished = false;
    unary_call* call = nullptr;
  };
  using handle = std::shared_ptr<state>;

  unary_call() : state_(std::make_shared<state>()) { state_->call = this; }
  const handle& shared() const { return state_; }

  /// Runs `fill` (only when `status` is OK) and finishes, unless already finished.
  template <class Fill>
  static void finish(const handle& call, const Status& status, Fill&& fill) {
    unary_call* reactor = nullptr;
    {
      std::lock_guard lock(call->mutex);
      if (call->finished) return;
      call->finished = true;
      reactor = call->call;
      if (status.ok()) fill();
    }
    reactor->Finish(status);  // The reactor lives until OnDone, which follows this.
  }
  static void finish(const handle& call, const Status& status) {
    finish(call, status, [] {});
  }

  void OnCancel() override {
    if (on_cancel_) on_cancel_();
    finish(state_, Status(StatusCode::CANCELLED, "the client cancelled the call"));
  }
  /// Runs when the client cancels (set before the call is returned to gRPC).
  void on_cancel(std::function<void()> action) { on_cancel_ = std::move(action); }
  void OnDone() override { delete this; }
  /// Something that lives as long as the call (a token's count of open waits).
  void keep(std::shared_ptr<void> held) { held_ = std::move(held); }

 private:
  handle state_;
  std::shared_ptr<void> held_;
  std::function<void()> on_cancel_;
};

/// The callback for a scheduler call whose answer fills the response through `fill`.
template <class T, class Fill>
service::callback<T> answer_with(const unary_call::handle& call, Fill fill) {
  return [call, fill = std::move(fill)](expected<T> result) mutable {
    if (!result) return unary_call::finish(call, to_status(result.error()));
    unary_call::finish(call, Status::OK, [&] { fill(*result); });
  };
}

inline service::callback<void> answer_empty(const unary_call::handle& call) {
  return [call](expected<void> result) {
    unary_call::finish(call, result ? Status::OK : to_status(result.error()));
  };
}

}  // namespace dtsd::grpc_api
