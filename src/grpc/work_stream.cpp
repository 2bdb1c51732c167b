#include "grpc/work_stream.hpp"

namespace dtsd::grpc_api {

void stream_sink::write_next_locked() {
  if (writing_ || closed_ || stream_reactor_ == nullptr || queue_.empty()) return;
  writing_ = true;
  current_ = std::move(queue_.front());
  queue_.pop_front();
  stream_reactor_->start_write(&current_);
}

void stream_sink::end(const std::string& why) {
  work_stream* reactor = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    end_status_ = Status(StatusCode::UNAVAILABLE, why);
    queue_.clear();
    held_.clear();
    // With a write in flight, OnWriteDone finishes the stream.
    if (writing_ || finish_sent_ || stream_reactor_ == nullptr) return;
    finish_sent_ = true;
    reactor = stream_reactor_;
  }
  reactor->finish(Status(StatusCode::UNAVAILABLE, why));
}

bool stream_sink::write_done(bool ok) {
  std::lock_guard lock(mutex_);
  writing_ = false;
  if (!ok) {
    closed_ = true;
    queue_.clear();
  }
  if (closed_) return !std::exchange(finish_sent_, true);
  write_next_locked();
  return false;
}

}  // namespace dtsd::grpc_api
