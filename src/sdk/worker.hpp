#pragma once
/// The C++ worker: registers orchestrators and activities by name, opens a session
/// with dtsd, runs what the server pushes on a pool of threads and answers. It
/// reconnects by itself when the server goes away and comes back.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sdk/client.hpp"
#include "sdk/orchestration.hpp"

namespace dtsd::sdk {

struct activity_context {
  std::string instance_id;
  std::int32_t task_id = -1;
  std::string name;
};

using activity_fn = std::function<json(const activity_context&, const json& input)>;

/// What an entity operation sees: the entity's state (as of the operations before
/// it in the batch) and what it may send. An operation that throws fails alone:
/// its state change and messages are dropped, and a caller gets the error.
class entity_context {
 public:
  entity_context(std::string entity_id, std::optional<json> state)
      : entity_id_(std::move(entity_id)), state_(std::move(state)) {}
  const std::string& entity_id() const { return entity_id_; }
  /// "key" of "@name@key".
  std::string key() const;
  bool has_state() const { return state_.has_value(); }
  /// The state, or `fallback` while there is none.
  json state(const json& fallback = json()) const { return state_.value_or(fallback); }
  void set_state(json state) { state_ = std::move(state); }
  /// The entity has no state afterwards (and may be cleaned away).
  void delete_state() { state_.reset(); }
  void signal_entity(const std::string& entity_id, const std::string& operation, const json& input = json());
  void start_orchestration(const std::string& name, const json& input = json(), std::string instance_id = {});

  const std::optional<json>& current_state() const { return state_; }
  std::vector<core::entity_action>& actions() { return actions_; }

 private:
  std::string entity_id_;
  std::optional<json> state_;
  std::vector<core::entity_action> actions_;
};

/// An entity's operations: answers `operation` with `input` (the result goes to a
/// caller; signals have none).
using entity_fn = std::function<json(entity_context&, const std::string& operation, const json& input)>;

/// How a worker compares an orchestration's version with its own (as the official
/// SDKs do): not at all, equal only, or equal or older (dotted numbers compare
/// numerically, anything else as text).
enum class version_match { none, strict, current_or_older };
/// What a worker does with an orchestration whose version does not match: give it
/// back for another worker (reject), or fail it with a VersionMismatch failure.
enum class version_failure { reject, fail };

struct versioning_options {
  std::string version;  ///< This worker's version.
  version_match match = version_match::none;
  version_failure on_mismatch = version_failure::reject;
};

/// <0, 0 or >0 as version `a` is older than, equal to or newer than `b`.
int compare_versions(std::string_view a, std::string_view b);

struct worker_options {
  std::string address = "127.0.0.1:8081";
  std::string task_hub = "default";
  std::uint32_t orchestrator_concurrency = 64;
  std::uint32_t activity_concurrency = 8;
  /// Threads that run orchestrators, activities and entities; 0: as many as
  /// activity_concurrency, so that every activity taken can block at once.
  std::uint32_t threads = 0;
  std::uint32_t entity_concurrency = 16;   ///< Declared only when entities are registered.
  versioning_options versioning = {};
  /// Sends the server work item filters made of the registered names (with this
  /// worker's version when matching is strict), so that only work this worker
  /// runs reaches it: apps (or versions) that share a task hub keep apart.
  bool filter_work_items = false;
  std::string name = {};  ///< What `dtsctl worker list` shows for this worker.
  /// In a cluster: take only the work of the partitions the node at `address`
  /// serves (no relay through it from the other nodes). For a worker process per
  /// node, or workers that connect to every node: each step then stays on the node
  /// that owns its instance. A node with no such worker of its own relies on
  /// workers connected elsewhere without this option.
  bool this_node_only = false;
  /// For a dtsd run with --auth: a worker (or contributor) token for the hub.
  std::string token{};
  /// For a dtsd whose native API serves TLS (or an address "tls://host:port").
  tls_options tls{};
};

class worker {
 public:
  explicit worker(worker_options options);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  worker& add_orchestrator(const std::string& name, orchestrator_fn orchestrator);
  worker& add_activity(const std::string& name, activity_fn activity);
  /// Registers an entity by name: it serves every "@name@key".
  worker& add_entity(const std::string& name, entity_fn entity);

  /// Serves until stop(); reconnects when the connection breaks.
  void run();
  /// Makes run() return. Safe from any thread (and from a signal-watching thread).
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace dtsd::sdk
