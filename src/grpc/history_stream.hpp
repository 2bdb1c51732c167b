#pragma once
/// StreamInstanceHistory: an instance's history written in chunks bounded in
/// events and bytes, answered once the service has read it.

#include <grpcpp/grpcpp.h>

#include <mutex>
#include <vector>

#include "grpc/calls.hpp"
#include "grpc/proto_convert.hpp"

namespace dtsd::grpc_api {

class history_stream final : public grpc::ServerWriteReactor<HistoryChunk> {
 public:
  static constexpr std::size_t events_per_chunk = 200;

  /// Writes the chunks of `history`, or finishes with `status` when it is not OK.
  /// Runs on an actor thread; a client that cancelled first has been answered.
  void start(const Status& status, std::vector<core::history_event> history) {
    {
      std::lock_guard lock(mutex_);
      if (finished_) return;
      started_ = true;
    }
    if (!status.ok()) return Finish(status);
    // Chunks stay under a gRPC client's message limit: a bounded count of events
    // and of bytes (a single larger event goes alone).
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < history.size(); ++i) {
      if (chunks_.empty() || chunks_.back().events_size() >= static_cast<int>(events_per_chunk) ||
          bytes >= history_chunk_bytes_max) {
        chunks_.emplace_back();
        bytes = 0;
      }
      auto* event = chunks_.back().add_events();
      write(event, history[i]);
      bytes += event->ByteSizeLong();
    }
    next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(Status(StatusCode::CANCELLED, "the history stream broke"));
    next();
  }
  /// Before the answer arrived (it may never: its hub can be deleted meanwhile),
  /// the call ends here; once writing, OnWriteDone(false) ends it.
  void OnCancel() override {
    {
      std::lock_guard lock(mutex_);
      if (started_ || finished_) return;
      finished_ = true;
    }
    Finish(Status(StatusCode::CANCELLED, "the client cancelled the call"));
  }
  void OnDone() override { delete this; }

 private:
  std::mutex mutex_;
  bool started_ = false;
  bool finished_ = false;
  void next() {
    if (sent_ == chunks_.size()) return Finish(Status::OK);
    StartWrite(&chunks_[sent_++]);
  }
  std::vector<HistoryChunk> chunks_;
  std::size_t sent_ = 0;
};

}  // namespace dtsd::grpc_api
