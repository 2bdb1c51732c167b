#pragma once
/// The C++ worker: registers orchestrators and activities by name, opens a session
/// with dtsd, runs what the server pushes on a pool of threads and answers. It
/// reconnects by itself when the server goes away and comes back.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "sdk/orchestration.hpp"

namespace dtsd::sdk {

struct activity_context {
  std::string instance_id;
  std::int32_t task_id = -1;
  std::string name;
};

using activity_fn = std::function<json(const activity_context&, const json& input)>;

struct worker_options {
  std::string address = "127.0.0.1:8081";
  std::string task_hub = "default";
  std::uint32_t orchestrator_concurrency = 64;
  std::uint32_t activity_concurrency = 8;  ///< Also the number of pool threads.
};

class worker {
 public:
  explicit worker(worker_options options);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  worker& add_orchestrator(const std::string& name, orchestrator_fn orchestrator);
  worker& add_activity(const std::string& name, activity_fn activity);

  /// Serves until stop(); reconnects when the connection breaks.
  void run();
  /// Makes run() return. Safe from any thread (and from a signal-watching thread).
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace dtsd::sdk
