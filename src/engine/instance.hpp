#pragma once
/// Live instances: one orchestration or entity each, with its whole state (cached
/// history, inbox, the work item in flight). The partition engine never touches an
/// instance's state itself: it sends operations to the instance's host, which runs
/// them on the instance, in the order sent, and hands back what they did. In dtsd
/// each live instance is an actor pinned to its partition's actor (actors/); the
/// tests, the simulation and log replay use `inline_host`, which runs each
/// operation at once.
///
/// An instance never writes storage: what an input changed goes back to the
/// partition as the rows to write in the batch the input belongs to.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/error.hpp"
#include "core/orchestration.hpp"
#include "store/partition_store.hpp"

namespace dtsd::engine {

class live_instance {
 public:
  using loader = std::function<expected<std::optional<core::orchestration_state>>(const std::string&)>;

  /// Makes `id` live from what `load` finds (the store, which holds all of its
  /// durable state). A failed load leaves `load_error` set and the state empty.
  live_instance(std::string id, const loader& load);

  const std::string& id() const { return id_; }

  std::optional<core::orchestration_state> state;
  std::optional<error> load_error;
  /// Inbox rows below this sequence are on disk and may be given to a worker.
  std::uint64_t durable_inbox_end = 0;

  /// Folds `change` into what batch `batch` writes for this instance and returns
  /// those rows (every change of the batch so far, as the state is now).
  store::instance_write note(std::uint64_t batch, const core::instance_change& change);

  /// No work item out and none to give: nothing is lost if it stops being live.
  bool idle() const;

 private:
  std::string id_;
  std::uint64_t change_batch_ = 0;
  core::instance_change change_;
};

/// Where live instances are, and how an operation reaches one.
class instance_host {
 public:
  virtual ~instance_host() = default;

  void set_loader(live_instance::loader load) { load_ = std::move(load); }

  /// Runs `on_instance` on live instance `id` (made live first if it is not), then
  /// `then` on the partition. Operations on one instance run in the order given;
  /// `on_instance` may run on another thread and must use only what it carries.
  virtual void run(const std::string& id, std::function<void(live_instance&)> on_instance,
                   std::function<void()> then) = 0;
  /// Ends live instance `id`; the caller knows no operation is outstanding on it.
  virtual void evict(const std::string& id) = 0;

 protected:
  live_instance::loader load_;
};

/// Runs every operation at once on the calling thread.
class inline_host final : public instance_host {
 public:
  void run(const std::string& id, std::function<void(live_instance&)> on_instance,
           std::function<void()> then) override;
  void evict(const std::string& id) override { live_.erase(id); }

 private:
  std::unordered_map<std::string, std::unique_ptr<live_instance>> live_;
};

}  // namespace dtsd::engine
