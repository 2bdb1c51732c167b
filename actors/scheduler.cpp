// One node's router over the actor system: a registry of task hubs (each a set of
// partition actors and a coordinator) that sends every call, as a typed request
// (actors/protocol.hpp), to the partition that owns the instance or to the hub's
// coordinator. Operations that span partitions are the service's.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>

#include "actors/internal.hpp"
#include "codec/codec.hpp"
#include "core/ids.hpp"

namespace dtsd::actors {
namespace {

namespace fs = std::filesystem;

struct hub {
  std::string name;
  std::uint32_t partition_count = 0;
  std::vector<caf::actor> partitions;  ///< Null where a partition is not served here.
  std::vector<std::shared_ptr<partition_health>> health;  ///< One per partition.
  caf::actor coordinator;
  /// The owner epoch of each partition served (0: a single node's, unfenced).
  std::vector<std::int64_t> epochs;
};

/// Draws 32-hex execution ids; each partition engine gets its own generator.
engine::execution_id_source random_execution_ids() {
  auto generator = std::make_shared<std::mt19937_64>(std::random_device{}());
  return [generator] { return fmt::format("{:016x}{:016x}", (*generator)(), (*generator)()); };
}

/// The partition count of a hub already on disk (its p<k> directories), or 0.
std::uint32_t partitions_on_disk(const std::string& data_dir, const std::string& name) {
  std::error_code failed;
  fs::path directory = fs::path(data_dir) / name;
  if (!fs::is_directory(directory, failed)) return 0;
  std::uint32_t count = 0;
  while (fs::is_directory(directory / ("p" + std::to_string(count)), failed)) ++count;
  return count;
}

/// How long deleting a hub waits for it to say whether it holds instances.
constexpr auto hub_check_timeout = std::chrono::seconds(30);

/// A callback answered exactly once: if it is destroyed unanswered (its message was
/// dropped because the hub's actors stopped: the hub was deleted, or dtsd is
/// stopping), it answers that the hub went away, so that no caller waits forever.
///
/// The code is `io` (a change may have been committed just before), or for what
/// only reads (a wait) UNAVAILABLE: waiting again is always safe, and a client
/// that does so finds the instance where its partition went.
template <class T>
class answer_once {
 public:
  explicit answer_once(callback<T> done, errc dropped = errc::io) : done_(std::move(done)), dropped_(dropped) {}
  answer_once(const answer_once&) = delete;
  answer_once& operator=(const answer_once&) = delete;
  ~answer_once() {
    if (auto done = take()) {
      done(dtsd::error{dropped_, "the partition stopped before answering (its task hub was deleted, dtsd is "
                                 "stopping, or the partition moved to another node)"});
    }
  }
  void operator()(expected<T> result) {
    if (auto done = take()) done(std::move(result));
  }
  /// The caller gave up: nothing is answered, now or when this goes.
  void disarm() { (void)take(); }

 private:
  /// Answering and disarming may race (a client cancels as the answer comes).
  callback<T> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(done_, nullptr);
  }
  std::mutex mutex_;
  callback<T> done_;
  errc dropped_;
};

template <class T>
std::shared_ptr<answer_once<T>> shared(callback<T> done, errc dropped = errc::io) {
  return std::make_shared<answer_once<T>>(std::move(done), dropped);
}

/// `done`, answered with "the hub went away" if its request is dropped unanswered.
template <class T>
callback<T> guarded(callback<T> done) {
  return [once = shared(std::move(done))](expected<T> result) { (*once)(std::move(result)); };
}

class actor_scheduler final : public service::router, public service::partition_host {
 public:
  actor_scheduler(const scheduler_config& config, int threads)
      : config_(config), commits_(config.commit_threads, *config.clock), system_(configure(threads)) {}
  // (system_ is declared last; its initializer runs last too.)

  ~actor_scheduler() override {
    std::lock_guard lock(mutex_);
    for (auto& [name, h] : hubs_) stop(h);
    hubs_.clear();
  }

  /// Opens a hub: every partition served (`serve_all`, a single node), or none yet
  /// (a cluster node's, served as ownership comes: serve_partition).
  expected<void> open_hub(const std::string& name, std::uint32_t partition_count, bool serve_all) {
    if (auto valid = core::validate_task_hub_name(name); !valid) return valid;
    std::lock_guard lock(mutex_);
    if (hubs_.count(name)) return error{errc::already_exists, fmt::format("task hub '{}' already exists", name)};
    if (deleting_.count(name)) {
      return error{errc::io, fmt::format("task hub '{}' is being deleted; create it again once that is done", name)};
    }
    if (config_.durability != store::durability::memory && serve_all) {
      if (auto existing = partitions_on_disk(config_.data_dir, name)) partition_count = existing;
    }
    if (partition_count == 0 || partition_count > core::partition_count_max) {
      return error{errc::invalid_argument, fmt::format("partition count {} is not in 1..{}", partition_count,
                                                       core::partition_count_max)};
    }
    hub h{name, partition_count, std::vector<caf::actor>(partition_count), {},
          spawn_coordinator(system_, config_.lease_ms, config_.keep_alive_ms, *config_.clock),
          std::vector<std::int64_t>(partition_count, 0)};
    for (std::uint32_t p = 0; p < partition_count; ++p) h.health.push_back(std::make_shared<partition_health>());
    if (serve_all) {
      for (std::uint32_t p = 0; p < partition_count; ++p) {
        auto opened = open_partition(h, p, std::nullopt);
        if (!opened) return stop_failed(h, opened.error());
        h.partitions[p] = std::move(*opened);
      }
      spdlog::info("task hub '{}' open with {} partitions", name, partition_count);
    } else {
      spdlog::info("task hub '{}' known ({} partitions, served as this node comes to own them)", name,
                   partition_count);
    }
    wire(h);
    hubs_.emplace(name, std::move(h));
    return {};
  }

  /// Opens partition `p` of a hub from its data (fenced with `epoch`, if any) as an actor.
  expected<caf::actor> open_partition(const hub& h, std::uint32_t p, std::optional<std::int64_t> epoch) {
    const auto& clock = *config_.clock;
    store::partition_identity identity{h.name, p, h.partition_count};
    auto open_store = [&]() -> expected<std::unique_ptr<store::partition_store>> {
      std::unique_ptr<store::kv_engine> kv;
      if (config_.durability == store::durability::memory) {
        kv = store::open_memory();
      } else {
        auto opened = store::open_lmdb({store::partition_directory(config_.data_dir, identity), config_.durability});
        if (!opened) return opened.error();
        kv = std::move(*opened);
      }
      return store::partition_store::open(std::move(kv), identity);
    };
    if (epoch) {
      // Fenced first, read after: the previous owner (paused, or cut off) may have
      // committed after a first read; once the fence is written it cannot commit,
      // so the state read next is final.
      auto fencing = open_store();
      if (!fencing) return fencing.error();
      if (auto fenced = (*fencing)->fence(*epoch); !fenced) return fenced.error();
    }
    auto made = open_store();
    if (!made) return made.error();
    (*made)->set_log_retention(config_.log_retention_records);
    auto engine = engine::partition_engine::open(std::move(*made), engine_options(), random_execution_ids(),
                                                 clock.now_ns());
    if (!engine) return engine.error();
    return spawn_partition(system_, std::move(*engine), commits_, h.health[p], clock, &config_.remote);
  }

  /// Tells the coordinator and the partitions served who is served now. The
  /// coordinator first: a partition new here announces its work as soon as it is
  /// wired, and the coordinator must know it by then, or its take goes nowhere.
  static void wire(const hub& h) {
    caf::anon_send(h.coordinator, wire_atom::value, h.partitions);
    for (auto& partition : h.partitions) {
      if (partition) caf::anon_send(partition, wire_atom::value, h.partitions, h.coordinator);
    }
  }

  // ---- partition_host: a cluster node's partitions come and go

  expected<void> add_hub(const std::string& name, std::uint32_t partition_count) override {
    {
      std::lock_guard lock(mutex_);
      if (hubs_.count(name)) return {};
    }
    auto opened = open_hub(name, partition_count, false);
    if (!opened && opened.error().code == errc::already_exists) return {};
    return opened;
  }

  expected<void> serve_partition(const std::string& hub_name, std::uint32_t p, std::int64_t epoch) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    if (p >= found->partition_count) {
      return error{errc::invalid_argument, fmt::format("task hub '{}' has no partition {}", hub_name, p)};
    }
    if (found->partitions[p]) {
      if (found->epochs[p] == epoch) return {};
      return error{errc::failed_precondition,
                   fmt::format("partition {} of task hub '{}' is served under epoch {} already", p, hub_name,
                               found->epochs[p])};
    }
    // Opening reads the partition's data: done without the lock.
    auto opened = open_partition(*found, p, epoch);
    if (!opened) return opened.error();
    hub now;
    {
      std::lock_guard lock(mutex_);
      auto it = hubs_.find(hub_name);
      if (it == hubs_.end() || it->second.partitions[p]) {
        caf::anon_send_exit(*opened, caf::exit_reason::user_shutdown);
        return error{errc::failed_precondition,
                     fmt::format("partition {} of task hub '{}' changed while it was opened", p, hub_name)};
      }
      it->second.partitions[p] = *opened;
      it->second.epochs[p] = epoch;
      now = it->second;
    }
    wire(now);
    spdlog::info("partition {} of task hub '{}' served here (epoch {})", p, hub_name, epoch);
    return {};
  }

  void stop_partitions(const std::vector<std::pair<std::string, std::uint32_t>>& which, bool planned) override {
    std::vector<caf::actor> stopping;
    for (const auto& [hub_name, p] : which) {
      caf::actor partition;
      hub now;
      {
        std::lock_guard lock(mutex_);
        auto it = hubs_.find(hub_name);
        if (it == hubs_.end() || p >= it->second.partition_count || !it->second.partitions[p]) continue;
        partition = std::exchange(it->second.partitions[p], caf::actor());
        it->second.epochs[p] = 0;
        now = it->second;
      }
      // New calls are refused from here; the coordinator forgets what it asked of it.
      wire(now);
      caf::anon_send(now.coordinator, gone_atom::value, p);
      stopping.push_back(std::move(partition));
    }
    if (stopping.empty()) return;
    if (planned) drain_partitions(stopping);
    for (const auto& partition : stopping) caf::anon_send_exit(partition, caf::exit_reason::user_shutdown);
    // Their stores close as the actors end: only then may they be opened again.
    caf::scoped_actor waiter{system_};
    for (const auto& partition : stopping) waiter->wait_for(partition);
    for (const auto& [hub_name, p] : which) {
      spdlog::info("partition {} of task hub '{}' no longer served here ({})", p, hub_name,
                   planned ? "handed over after committing what it held" : "its ownership was lost");
    }
  }

  bool serves(const std::string& hub_name, std::uint32_t p) override {
    std::lock_guard lock(mutex_);
    auto found = hubs_.find(hub_name);
    return found != hubs_.end() && p < found->second.partition_count && found->second.partitions[p];
  }

  std::map<std::pair<std::string, std::uint32_t>, std::int64_t> served() override {
    std::lock_guard lock(mutex_);
    std::map<std::pair<std::string, std::uint32_t>, std::int64_t> out;
    for (const auto& [name, h] : hubs_) {
      for (std::uint32_t p = 0; p < h.partition_count; ++p) {
        if (h.partitions[p]) out[{name, p}] = h.epochs[p];
      }
    }
    return out;
  }

  void accept_delivery(const std::string& hub_name, std::uint32_t p, std::string entry) override {
    auto decoded = store::decode_outbox_entry(entry);
    if (!decoded) {
      spdlog::warn("cluster: a message for partition {} of '{}' cannot be read: {}", p, hub_name,
                   decoded.error().message);
      return;
    }
    to_served(hub_name, p, peer_message{peer::delivery{std::move(*decoded)}});
  }

  void accept_receipt(const std::string& hub_name, std::uint32_t p, std::uint32_t from,
                      std::uint64_t sequence) override {
    to_served(hub_name, p, peer_message{peer::receipt{from, sequence}});
  }

  /// A peer message for a partition, if it is served here (else its sender sends it again).
  void to_served(const std::string& hub_name, std::uint32_t p, peer_message message) {
    std::lock_guard lock(mutex_);
    auto found = hubs_.find(hub_name);
    if (found == hubs_.end() || p >= found->second.partition_count || !found->second.partitions[p]) return;
    caf::anon_send(found->second.partitions[p], std::move(message));
  }

  void describe_owner(std::function<std::string(const std::string&, std::uint32_t)> describe) override {
    std::lock_guard lock(mutex_);
    describe_ = std::move(describe);
  }

  void register_hubs_with(
      std::function<expected<std::uint32_t>(const std::string&, std::uint32_t)> registrar) override {
    std::lock_guard lock(mutex_);
    registrar_ = std::move(registrar);
  }

  expected<void> create_task_hub(const std::string& name, std::uint32_t partition_count) override {
    if (partition_count == 0) partition_count = config_.partition_count;
    if (auto registrar = cluster_registrar()) {
      if (auto valid = core::validate_task_hub_name(name); !valid) return valid;
      {
        std::lock_guard lock(mutex_);
        if (hubs_.count(name)) return error{errc::already_exists, fmt::format("task hub '{}' already exists", name)};
      }
      auto recorded = registrar(name, partition_count);
      if (!recorded) return recorded.error();
      // This call recorded it: the node's reconcile may have opened it here meanwhile.
      auto opened = open_hub(name, *recorded, false);
      if (!opened && opened.error().code == errc::already_exists) return {};
      return opened;
    }
    return open_hub(name, partition_count, true);
  }

  expected<void> delete_task_hub(const std::string& name, bool force) override {
    auto found = find(name);
    if (!found) return found.error();
    if (cluster_registrar()) {
      return error{errc::unimplemented, fmt::format("task hub '{}': deleting a task hub of a cluster is not built yet",
                                                    name)};
    }
    if (!force) {
      auto used = has_instances(*found);
      if (!used) return used.error();
      if (*used) {
        return error{errc::failed_precondition,
                     fmt::format("task hub '{}' still has instances: delete it with force to remove them too", name)};
      }
    }
    hub h;
    {
      std::lock_guard lock(mutex_);
      auto it = hubs_.find(name);
      if (it == hubs_.end()) return unknown_hub(name);
      h = it->second;
      hubs_.erase(it);  // New calls find no hub from here on.
      deleting_.insert(name);
    }
    // What the partitions hold is committed before they stop and their files go;
    // calls they never answer are answered by their callbacks' guards. Workers
    // connected to the hub are told it is gone (they connect again).
    drain_partitions(h.partitions);
    caf::anon_send(h.coordinator, end_atom::value, fmt::format("task hub '{}' was deleted", name));
    for (auto& partition : h.partitions) caf::anon_send_exit(partition, caf::exit_reason::user_shutdown);
    std::error_code failed;
    if (config_.durability != store::durability::memory) {
      // The partitions' environments close as their actors end; wait for that.
      for (auto& partition : h.partitions) {
        caf::scoped_actor waiter{system_};
        waiter->wait_for(partition);
      }
      fs::remove_all(fs::path(config_.data_dir) / name, failed);
    }
    {
      std::lock_guard lock(mutex_);
      deleting_.erase(name);
    }
    if (failed) return error{errc::io, fmt::format("cannot remove the data of task hub '{}': {}", name, failed.message())};
    return {};
  }

  std::vector<std::string> task_hubs() override {
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, h] : hubs_) names.push_back(name);
    return names;
  }

  expected<std::uint32_t> partition_count(const std::string& hub_name) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    return found->partition_count;
  }

  void start(const std::string& hub_name, core::start_request request, callback<service::started> done) override {
    auto id = request.instance_id;
    to_instance(hub_name, id, requests::start{std::move(request), guarded(std::move(done))});
  }

  void get(const std::string& hub_name, const std::string& id, bool with_history,
           callback<std::optional<service::instance_view>> done) override {
    to_instance(hub_name, id, requests::read{id, with_history, guarded(std::move(done))});
  }

  std::uint64_t wait(const std::string& hub_name, const std::string& id, bool until_completed,
                     callback<core::instance_record> done) override {
    const auto handle = next_wait_++;
    auto once = shared(std::move(done), errc::unavailable);
    {
      std::lock_guard lock(mutex_);
      waits_[handle] = once;
    }
    // The entry goes with the last copy of the answer, answered or dropped unanswered
    // (a hub deleted under the wait).
    auto forget = std::shared_ptr<void>(nullptr, [this, handle](void*) {
      std::lock_guard lock(mutex_);
      waits_.erase(handle);
    });
    callback<core::instance_record> answer = [once, forget](expected<core::instance_record> record) {
      (*once)(std::move(record));
    };
    to_instance(hub_name, id, requests::await{id, until_completed, handle, std::move(answer)});
    return handle;
  }

  void cancel_wait(const std::string& hub_name, const std::string& id, std::uint64_t handle) override {
    // Its callback never runs, not even when the waiter is dropped unanswered.
    std::shared_ptr<answer_once<core::instance_record>> waiting;
    {
      std::lock_guard lock(mutex_);
      if (auto found = waits_.find(handle); found != waits_.end()) {
        waiting = found->second.lock();
        waits_.erase(found);
      }
    }
    if (waiting) waiting->disarm();
    if (core::validate_instance_id(id)) {
      if (auto found = find(hub_name)) send_to(*found, id, requests::forget_wait{id, handle});
    }
  }

  void change(const std::string& hub_name, service::change request, callback<void> done) override {
    const auto id = service::target_of(request);
    to_instance(hub_name, id, requests::apply{std::move(request), guarded(std::move(done))});
  }

  void purge_one(const std::string& hub_name, const std::string& id, bool children,
                 callback<service::purge_step> done) override {
    to_instance(hub_name, id, requests::purge{id, children, guarded(std::move(done))});
  }

  void query_partition(const std::string& hub_name, std::uint32_t partition, core::instance_query query,
                       callback<core::query_page> done) override {
    to_partition(hub_name, partition, requests::query{std::move(query), {}}, std::move(done));
  }

  void list_partition(const std::string& hub_name, std::uint32_t partition, core::list_query query,
                      callback<core::list_page> done) override {
    to_partition(hub_name, partition, requests::list{std::move(query), {}}, std::move(done));
  }

  void retention_partition(const std::string& hub_name, std::uint32_t partition, bool set,
                           std::optional<core::retention_policy> policy,
                           callback<service::retention_view> done) override {
    to_partition(hub_name, partition, requests::retention{set, std::move(policy), {}}, std::move(done));
  }

  void schedule_partition(const std::string& hub_name, std::uint32_t partition, core::schedule_command command,
                          callback<std::vector<core::schedule>> done) override {
    to_partition(hub_name, partition, requests::schedule{std::move(command), {}}, std::move(done));
  }

  engine::engine_options engine_options() const {
    engine::engine_options options;
    options.limits = config_.limits;
    options.timers_per_tick_max = 10000;
    options.default_retention = config_.default_retention;
    options.retention_purges_max = config_.retention_purges_max;
    return options;
  }

  /// Sends a request to one partition of a hub, its answer guarded.
  template <class Request, class T>
  void to_partition(const std::string& hub_name, std::uint32_t partition, Request request, callback<T> done) {
    auto found = find(hub_name);
    if (!found) return done(found.error());
    if (partition >= found->partition_count) {
      return done(error{errc::invalid_argument, fmt::format("task hub '{}' has no partition {}", hub_name, partition)});
    }
    if (!found->partitions[partition]) return done(not_served(*found, partition));
    request.done = guarded(std::move(done));
    caf::anon_send(found->partitions[partition], partition_request{std::move(request)});
  }

  expected<std::uint64_t> open_session(const std::string& hub_name, service::session_slots slots,
                                       std::shared_ptr<service::work_sink> sink, core::work_filters filters,
                                       std::string worker) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    const auto id = next_session_++;
    {
      std::lock_guard lock(mutex_);
      sessions_[id] = hub_name;
    }
    spdlog::info("worker session {} opened on hub '{}' ({} orchestrator, {} activity, {} entity slots; takes "
                 "orchestrations {}, activities {}, entities {})",
                 id, hub_name, slots.orchestrators, slots.activities, slots.entities,
                 core::describe(filters.orchestrations), core::describe(filters.activities),
                 core::describe(filters.entities));
    caf::anon_send(found->coordinator, open_atom::value,
                   session_info{id, {slots.orchestrators, slots.activities, slots.entities}, std::move(sink),
                                std::move(filters), std::move(worker)});
    return id;
  }

  void workers(const std::string& hub_name, callback<std::vector<service::worker_view>> done) override {
    auto found = find(hub_name);
    if (!found) return done(found.error());
    caf::anon_send(found->coordinator, workers_atom::value,
                   std::make_shared<callback<std::vector<service::worker_view>>>(guarded(std::move(done))));
  }

  expected<std::vector<service::partition_view>> partitions(const std::string& hub_name) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    std::vector<service::partition_view> views;
    const auto now = config_.clock->now_ns();
    for (std::uint32_t p = 0; p < found->health.size(); ++p) {
      auto& health = *found->health[p];
      std::lock_guard lock(health.mutex);
      auto& view = views.emplace_back();
      view.index = p;
      view.stalled = health.stalled.value_or("");
      view.stalled_since_ns = health.stalled ? health.since_ns : 0;
      view.failed_commits = health.failed_commits;
      view.commits = health.commits;
      view.committed_changes = health.committed_changes;
      view.commit_ns_total = health.commit_ns_total;
      view.commit_ns_max = health.commit_ns_max;
      view.commit_seconds_buckets = health.commit_seconds_buckets;
      view.batch_changes_buckets = health.batch_changes_buckets;
      view.orchestrations_by_status = health.orchestrations_by_status;
      view.disk_bytes = health.disk_bytes;
      view.retention_purged = health.retention_purged;
      view.oldest_ended_ns = health.oldest_ended_ns;
      view.ready_orchestrators = health.ready_orchestrators;
      view.ready_activities = health.ready_activities;
      view.ready_entities = health.ready_entities;
      view.live_instances = health.live_instances;
      view.waiting_since_ns = health.waiting_since_ns;
      view.unacknowledged_messages = health.unacknowledged_messages;
      for (auto since : view.waiting_since_ns) {
        if (since != 0) view.oldest_wait_ns = std::max(view.oldest_wait_ns, now - since);
      }
      view.orchestrations_started = health.lifecycle.started;
      view.orchestrations_ended = health.lifecycle.ended;
    }
    return views;
  }

  void session_alive(std::uint64_t session) override {
    auto found = hub_of_session(session, false);
    if (found) caf::anon_send(found->coordinator, alive_atom::value, session);
  }

  void close_session(std::uint64_t session) override {
    auto found = hub_of_session(session, true);
    if (found) caf::anon_send(found->coordinator, close_atom::value, session);
  }

  void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion,
                             callback<void> done) override {
    auto found = hub_of_session(session, false);
    if (!found) return done(found.error());
    const auto id = completion.instance_id;
    const auto token = completion.completion_token;
    to_instance(found->name, id,
                requests::complete_orchestrator{std::move(completion), verdict(*found, session, token, std::move(done)),
                                                session});
  }

  void complete_activity(std::uint64_t session, core::activity_result result, callback<void> done) override {
    auto found = hub_of_session(session, false);
    if (!found) return done(found.error());
    const auto id = result.instance_id;
    const auto token = result.completion_token;
    to_instance(found->name, id,
                requests::complete_activity{std::move(result), verdict(*found, session, token, std::move(done)), session});
  }

  // The coordinator holds the lease: it gives the item back to its partition and
  // tells the partition's work announcement, so the item is pushed again at once.
  void abandon(std::uint64_t session, std::uint64_t token) override {
    auto found = hub_of_session(session, false);
    if (found) caf::anon_send(found->coordinator, abandon_atom::value, session, token);
  }

  void drain() override {
    std::vector<caf::actor> partitions;
    {
      std::lock_guard lock(mutex_);
      for (auto& [name, h] : hubs_) {
        for (auto& partition : h.partitions) {
          if (partition) partitions.push_back(partition);
        }
      }
    }
    drain_partitions(partitions);
  }

 private:
  /// Waits until every partition has committed what it holds (they take no new work).
  static void drain_partitions(const std::vector<caf::actor>& partitions) {
    std::vector<std::future<void>> pending;
    for (const auto& partition : partitions) {
      auto signal = std::make_shared<std::promise<void>>();
      pending.push_back(signal->get_future());
      caf::anon_send(partition, drain_atom::value, signal);
    }
    for (auto& done : pending) done.wait();
  }

  /// Whether the hub holds any orchestration or entity (one row of one page of
  /// each partition, orchestrations and entities).
  expected<bool> has_instances(const hub& h) {
    for (bool entities : {false, true}) {
      for (std::uint32_t p = 0; p < h.partition_count; ++p) {
        core::instance_query any;
        any.page_size = 1;
        any.fetch_payloads = false;
        any.entities = entities;
        auto answer = std::make_shared<std::promise<expected<bool>>>();
        auto future = answer->get_future();
        query_partition(h.name, p, std::move(any), [answer](expected<core::query_page> page) {
          answer->set_value(page ? expected<bool>(!page->instances.empty() || !page->continuation_token.empty())
                                 : expected<bool>(page.error()));
        });
        if (future.wait_for(hub_check_timeout) != std::future_status::ready) {
          return error{errc::io, fmt::format("task hub '{}' did not answer whether it holds instances", h.name)};
        }
        auto used = future.get();
        if (!used || *used) return used;
      }
    }
    return false;
  }

  static caf::actor_system_config& configure(int threads) {
    static caf::actor_system_config config;
    config.set("scheduler.max-threads", threads);
    // The work-stealing policy polls and then sleeps when idle, which adds
    // milliseconds to every hop of a quiet orchestration; the sharing policy wakes
    // a thread through a condition variable as soon as a message arrives.
    config.set("scheduler.policy", caf::atom("sharing"));
    return config;
  }

  expected<void> stop_failed(hub& h, dtsd::error failure) {
    stop(h);
    return failure;
  }

  void stop(hub& h) {
    for (auto& partition : h.partitions) {
      if (partition) caf::anon_send_exit(partition, caf::exit_reason::user_shutdown);
    }
    caf::anon_send_exit(h.coordinator, caf::exit_reason::user_shutdown);
  }

  static dtsd::error unknown_hub(const std::string& name) {
    return {errc::unknown_task_hub, fmt::format("task hub '{}' does not exist", name)};
  }

  expected<hub> find(const std::string& name) {
    // A name that cannot be a hub is the caller's mistake, not a missing hub.
    if (auto valid = core::validate_task_hub_name(name); !valid) return valid.error();
    std::lock_guard lock(mutex_);
    auto found = hubs_.find(name);
    if (found == hubs_.end()) return unknown_hub(name);
    return found->second;
  }

  expected<hub> hub_of_session(std::uint64_t session, bool forget) {
    std::string name;
    {
      std::lock_guard lock(mutex_);
      auto found = sessions_.find(session);
      if (found == sessions_.end()) {
        return error{errc::not_found, fmt::format("worker session {} is not open", session)};
      }
      name = found->second;
      if (forget) sessions_.erase(found);
    }
    return find(name);
  }

  /// Sends to the partition of `id` if it is served here; answers whether it was.
  static bool send_to(const hub& h, const std::string& id, partition_request request) {
    const auto& partition = h.partitions[core::partition_of(id, h.partition_count)];
    if (!partition) return false;
    caf::anon_send(partition, std::move(request));
    return true;
  }

  /// Why a call for partition `p` of `h` is not answered here.
  dtsd::error not_served(const hub& h, std::uint32_t p) {
    std::function<std::string(const std::string&, std::uint32_t)> describe;
    {
      std::lock_guard lock(mutex_);
      describe = describe_;
    }
    return {errc::unavailable, fmt::format("partition {} of task hub '{}' is not served by this node{}{}", p, h.name,
                                           describe ? ": " : "", describe ? describe(h.name, p) : "")};
  }

  std::function<expected<std::uint32_t>(const std::string&, std::uint32_t)> cluster_registrar() {
    std::lock_guard lock(mutex_);
    return registrar_;
  }

  /// Sends `request` to the partition owning `id`, or answers it with why not.
  template <class Request>
  void to_instance(const std::string& hub_name, const std::string& id, Request request) {
    auto refuse = [&](const dtsd::error& why) { request.done(why); };
    if (auto valid = core::validate_instance_id(id); !valid) return refuse(valid.error());
    auto found = find(hub_name);
    if (!found) return refuse(found.error());
    const auto p = core::partition_of(id, found->partition_count);
    if (!found->partitions[p]) return refuse(not_served(*found, p));
    send_to(*found, id, partition_request{std::move(request)});
  }

  /// A worker's answer: the worker hears the verdict once it is durable. An
  /// applied answer frees its slot at the partition (which uses it again or hands
  /// it to the coordinator: slot_handover); a final refusal frees it at the
  /// coordinator. An invalid answer leaves the item leased (the engine keeps it in
  /// flight for a corrected answer), so its lease still expires, and an abandon or
  /// a closed session still gives it back.
  static callback<void> verdict(const hub& h, std::uint64_t session, std::uint64_t token, callback<void> done) {
    return guarded<void>([coordinator = h.coordinator, token, session, done = std::move(done)](expected<void> outcome) {
      if (outcome) {
        // The partition has freed the slot already.
      } else if (outcome.error().code == errc::resource_exhausted) {
        // The partition cannot write: the item goes back, to run again once it can.
        caf::anon_send(coordinator, abandon_atom::value, session, token);
      } else if (outcome.error().code != errc::invalid_argument) {
        caf::anon_send(coordinator, done_atom::value, token, session);
      } else {
        caf::anon_send(coordinator, alive_atom::value, session);  // It answers, if wrongly.
      }
      done(std::move(outcome));
    });
  }

  scheduler_config config_;
  commit_pool commits_;  ///< Outlives the actor system, whose partitions commit through it.
  std::mutex mutex_;
  std::map<std::string, hub> hubs_;
  /// Hubs between their removal from hubs_ and the end of their files: not created again meanwhile.
  std::set<std::string> deleting_;
  std::map<std::uint64_t, std::string> sessions_;
  /// Waits not yet answered, so that a cancelled one can be disarmed.
  std::map<std::uint64_t, std::weak_ptr<answer_once<core::instance_record>>> waits_;
  /// A cluster node's: who serves a partition not served here, and where new hubs are recorded.
  std::function<std::string(const std::string&, std::uint32_t)> describe_;
  std::function<expected<std::uint32_t>(const std::string&, std::uint32_t)> registrar_;
  std::atomic<std::uint64_t> next_session_{1};
  std::atomic<std::uint64_t> next_wait_{1};
  /// Last, so that it goes first: actors finishing during its shutdown may still
  /// use the members above.
  caf::actor_system system_;
};

}  // namespace

expected<std::unique_ptr<service::router>> make_scheduler(const scheduler_config& config,
                                                          const std::vector<std::string>& hubs,
                                                          int scheduler_threads) {
  auto made = std::make_unique<actor_scheduler>(config, scheduler_threads);
  for (const auto& name : hubs) {
    if (auto opened = made->open_hub(name, config.partition_count, true); !opened) return opened.error();
  }
  return std::unique_ptr<service::router>(std::move(made));
}

node_scheduler make_node_scheduler(const scheduler_config& config, int scheduler_threads) {
  auto made = std::make_unique<actor_scheduler>(config, scheduler_threads);
  auto* host = made.get();
  return {std::move(made), host};
}

}  // namespace dtsd::actors
