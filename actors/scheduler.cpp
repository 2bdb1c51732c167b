// The scheduler over the actor system: a registry of task hubs (each a set of
// partition actors and a coordinator) that routes every call to the partition that
// owns the instance, as a command run on that partition's actor.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>

#include "actors/internal.hpp"
#include "core/ids.hpp"

namespace dtsd::actors {
namespace {

namespace fs = std::filesystem;

struct hub {
  std::string name;
  std::uint32_t partition_count = 0;
  std::vector<caf::actor> partitions;
  std::vector<std::shared_ptr<write_health>> health;  ///< One per partition.
  caf::actor coordinator;
};

/// Draws 32-hex execution ids; each partition engine gets its own generator.
engine::execution_id_source random_execution_ids() {
  auto generator = std::make_shared<std::mt19937_64>(std::random_device{}());
  return [generator] { return fmt::format("{:016x}{:016x}", (*generator)(), (*generator)()); };
}

/// The (created time, instance id) position a page token names, or nothing for
/// "no more".
std::optional<std::pair<std::int64_t, std::string>> token_position(const std::string& token) {
  const auto dot = token.find('.');
  if (token.empty() || dot == std::string::npos) return std::nullopt;
  std::int64_t created = 0;
  if (std::from_chars(token.data(), token.data() + dot, created).ec != std::errc()) return std::nullopt;
  return std::make_pair(created, token.substr(dot + 1));
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
template <class T>
class answer_once {
 public:
  explicit answer_once(callback<T> done) : done_(std::move(done)) {}
  answer_once(const answer_once&) = delete;
  answer_once& operator=(const answer_once&) = delete;
  ~answer_once() {
    if (auto done = take()) done(dtsd::error{errc::io, "the task hub went away (deleted, or dtsd is stopping) before answering"});
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
};

template <class T>
std::shared_ptr<answer_once<T>> shared(callback<T> done) {
  return std::make_shared<answer_once<T>>(std::move(done));
}

class actor_scheduler final : public scheduler {
 public:
  actor_scheduler(const scheduler_config& config, int threads)
      : config_(config), commits_(config.commit_threads), system_(configure(threads)) {}
  // (system_ is declared last; its initializer runs last too.)

  ~actor_scheduler() override {
    std::lock_guard lock(mutex_);
    for (auto& [name, h] : hubs_) stop(h);
    hubs_.clear();
  }

  expected<void> open_hub(const std::string& name, std::uint32_t partition_count) {
    if (auto valid = core::validate_task_hub_name(name); !valid) return valid;
    std::lock_guard lock(mutex_);
    if (hubs_.count(name)) return error{errc::already_exists, fmt::format("task hub '{}' already exists", name)};
    if (deleting_.count(name)) {
      return error{errc::io, fmt::format("task hub '{}' is being deleted; create it again once that is done", name)};
    }
    if (config_.durability != store::durability::memory) {
      if (auto existing = partitions_on_disk(config_.data_dir, name)) partition_count = existing;
    }
    if (partition_count == 0 || partition_count > core::partition_count_max) {
      return error{errc::invalid_argument, fmt::format("partition count {} is not in 1..{}", partition_count,
                                                       core::partition_count_max)};
    }
    hub h{name, partition_count, {}, {}, spawn_coordinator(system_, config_.lease_ms, config_.keep_alive_ms)};
    for (std::uint32_t p = 0; p < partition_count; ++p) {
      store::partition_identity identity{name, p, partition_count};
      std::unique_ptr<store::kv_engine> kv;
      if (config_.durability == store::durability::memory) {
        kv = store::open_memory();
      } else {
        auto opened = store::open_lmdb({store::partition_directory(config_.data_dir, identity), config_.durability});
        if (!opened) return stop_failed(h, opened.error());
        kv = std::move(*opened);
      }
      auto made = store::partition_store::open(std::move(kv), identity);
      if (!made) return stop_failed(h, made.error());
      (*made)->set_log_retention(config_.log_retention_records);
      auto engine = engine::partition_engine::open(std::move(*made), {config_.limits, 10000},
                                                   random_execution_ids(), wall_clock_ns());
      if (!engine) return stop_failed(h, engine.error());
      h.health.push_back(std::make_shared<write_health>());
      h.partitions.push_back(spawn_partition(system_, std::move(*engine), commits_, h.health.back()));
    }
    for (auto& partition : h.partitions) caf::anon_send(partition, wire_atom::value, h.partitions, h.coordinator);
    caf::anon_send(h.coordinator, wire_atom::value, h.partitions);
    spdlog::info("task hub '{}' open with {} partitions", name, partition_count);
    hubs_.emplace(name, std::move(h));
    return {};
  }

  expected<void> create_task_hub(const std::string& name, std::uint32_t partition_count) override {
    return open_hub(name, partition_count == 0 ? config_.partition_count : partition_count);
  }

  expected<void> delete_task_hub(const std::string& name, bool force) override {
    auto found = find(name);
    if (!found) return found.error();
    if (!force) {
      auto used = has_instances(name);
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

  void start(const std::string& hub_name, core::start_request request, callback<engine::started> done) override {
    auto id = request.instance_id;
    auto once = shared(std::move(done));
    on_partition(hub_name, id, *once, [request = std::move(request), done = once](partition_context& ctx) mutable {
      if (const auto& refused = ctx.write_refusal()) return (*done)(*refused);
      ctx.engine().start(std::move(request), ctx.now_ns(), [&ctx, done](expected<engine::started> started) {
        if (!started) return (*done)(started.error());
        ctx.after_commit(started->batch, [done, started = *started] { (*done)(started); });
      });
    });
  }

  void get(const std::string& hub_name, const std::string& id, bool with_history,
           callback<std::optional<instance_view>> done) override {
    // Durable state only, record and history from one read of the store: the
    // engine's memory may hold a batch that is not committed yet, which a crash
    // would undo (and whose history rows are not on disk).
    auto once = shared(std::move(done));
    on_partition(hub_name, id, *once, [id, with_history, done = once](partition_context& ctx) {
      if (!with_history) {
        auto record = ctx.engine().store().get_instance(id);
        if (!record) return (*done)(record.error());
        if (!*record) return (*done)(std::optional<instance_view>());
        return (*done)(std::optional<instance_view>(instance_view{std::move(**record), {}}));
      }
      auto state = ctx.engine().store().load_instance(id);
      if (!state) return (*done)(state.error());
      if (!*state) return (*done)(std::optional<instance_view>());
      (*done)(std::optional<instance_view>(instance_view{std::move((*state)->record), std::move((*state)->history)}));
    });
  }

  std::uint64_t wait(const std::string& hub_name, const std::string& id, bool until_completed,
                     callback<core::instance_record> done) override {
    const auto handle = next_wait_++;
    auto once = shared(std::move(done));
    {
      std::lock_guard lock(mutex_);
      waits_[handle] = once;
    }
    auto forget = [this, handle] {
      std::lock_guard lock(mutex_);
      waits_.erase(handle);
    };
    auto answer = [once, forget](const expected<core::instance_record>& record) {
      forget();
      (*once)(record);
    };
    on_partition(hub_name, id, answer, [id, until_completed, handle, answer](partition_context& ctx) {
      ctx.add_waiter(id, until_completed, handle, answer);
    });
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
    callback<void> ignore = [](expected<void>) {};
    on_partition(hub_name, id, ignore, [id, handle](partition_context& ctx) { ctx.remove_waiter(id, handle); });
  }

  void raise_event(const std::string& hub_name, const std::string& id, const std::string& name, core::payload input,
                   callback<void> done) override {
    mutate(hub_name, id, std::move(done), [id, name, input](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().raise_event(id, name, input, ctx.now_ns(), std::move(applied));
    });
  }

  void terminate(const std::string& hub_name, const std::string& id, core::terminate_request request,
                 callback<void> done) override {
    mutate(hub_name, id, std::move(done), [id, request](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().terminate(id, request, ctx.now_ns(), std::move(applied));
    });
  }

  void suspend(const std::string& hub_name, const std::string& id, core::payload reason, callback<void> done) override {
    mutate(hub_name, id, std::move(done), [id, reason](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().suspend(id, reason, ctx.now_ns(), std::move(applied));
    });
  }

  void deliver(const std::string& hub_name, core::instance_message message, callback<void> done) override {
    auto id = message.target_instance_id;
    mutate(hub_name, id, std::move(done), [message = std::move(message)](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().deliver(message, ctx.now_ns(), std::move(applied));
    });
  }

  void clean_entity_storage(const std::string& hub_name, entity_clean_request request,
                            callback<entity_clean_result> done) override {
    store::instance_query query;
    query.entities = true;
    query.page_size = 100;
    query.continuation_token = request.continuation_token;
    // One page per call; its token continues (the SDKs loop until it is empty).
    this->query(hub_name, std::move(query), [this, hub_name, request, done](expected<store::query_page> page) {
      if (!page) return done(page.error());
      struct tally {
        std::mutex mutex;
        std::size_t left = 1;  // One for this loop, released at its end.
        entity_clean_result result;
      };
      auto counts = std::make_shared<tally>();
      counts->result.continuation_token = page->continuation_token;
      auto settle = [counts, done] {
        std::unique_lock lock(counts->mutex);
        if (--counts->left != 0) return;
        auto result = counts->result;
        lock.unlock();
        done(std::move(result));
      };
      auto one_more = [counts] {
        std::lock_guard lock(counts->mutex);
        ++counts->left;
      };
      for (const auto& record : page->instances) {
        const auto id = record.instance_id;
        if (request.remove_empty && !record.entity_state && record.entity_locked_by.empty() &&
            record.entity_deferred.empty()) {
          one_more();
          purge(hub_name, id, false, [counts, settle](expected<std::size_t> purged) {
            if (purged && *purged > 0) {
              std::lock_guard lock(counts->mutex);
              counts->result.removed += 1;
            }
            settle();
          });
        }
        if (request.release_orphaned_locks && !record.entity_locked_by.empty()) {
          one_more();
          const auto holder = record.entity_locked_by;
          const auto lock_id = record.entity_lock_id;
          get(hub_name, holder, false,
              [this, hub_name, id, holder, lock_id, counts, settle](expected<std::optional<instance_view>> found) {
                const bool orphaned = found && (!*found || core::is_terminal((*found)->record.status));
                if (!orphaned) return settle();
                core::instance_message unlock{
                    id, {}, core::history_event{-1, wall_clock_ns(), core::events::entity_unlock_sent{lock_id, holder, id}}};
                deliver(hub_name, std::move(unlock), [counts, settle](expected<void> released) {
                  if (released) {
                    std::lock_guard lock(counts->mutex);
                    counts->result.released += 1;
                  }
                  settle();
                });
              });
        }
      }
      settle();
    });
  }

  void rewind(const std::string& hub_name, const std::string& id, core::payload reason, callback<void> done) override {
    mutate(hub_name, id, std::move(done), [id, reason](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().rewind(id, reason, ctx.now_ns(), std::move(applied));
    });
  }

  void resume(const std::string& hub_name, const std::string& id, core::payload reason, callback<void> done) override {
    mutate(hub_name, id, std::move(done), [id, reason](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().resume(id, reason, ctx.now_ns(), std::move(applied));
    });
  }

  /// Counts purges across partitions and answers once every branch is done.
  struct purge_tracker {
    explicit purge_tracker(callback<std::size_t> finished) : done(std::move(finished)) {}
    std::atomic<std::size_t> purged{0};
    std::atomic<std::size_t> pending{1};
    std::shared_ptr<std::atomic<std::size_t>> progress;  ///< Also counts, when set.
    std::mutex mutex;
    std::optional<dtsd::error> failure;
    answer_once<std::size_t> done;
    void fail(dtsd::error failed) {
      std::lock_guard lock(mutex);
      if (!failure) failure = std::move(failed);
    }
    void finish_one() {
      if (--pending != 0) return;
      if (failure) return done(*failure);
      done(purged.load());
    }
  };

  /// Purges `id`; with `recursive`, its sub-orchestrations once its purge is durable.
  /// Only the top instance's refusal is an error: children that are still running
  /// are left in place.
  void purge_branch(const hub& h, const std::string& id, bool recursive, std::shared_ptr<purge_tracker> tracker,
                    bool top) {
    send_to(h, id, [this, h, id, recursive, tracker, top](partition_context& ctx) {
      if (const auto& refused = ctx.write_refusal()) {
        tracker->fail(*refused);  // Even for a child: what was asked is not all done.
        return tracker->finish_one();
      }
      auto purge_with = [this, &ctx, h, id, tracker, top](std::vector<std::string> children) {
        ctx.engine().purge(id, ctx.now_ns(), [this, &ctx, h, children, tracker, top](expected<std::uint64_t> batch) {
          if (!batch) {
            if (top) tracker->fail(batch.error());
            return tracker->finish_one();
          }
          ctx.after_commit(*batch, [this, h, children, tracker] {
            ++tracker->purged;
            if (tracker->progress) ++*tracker->progress;
            for (const auto& child : children) {
              ++tracker->pending;
              purge_branch(h, child, true, tracker, false);
            }
            tracker->finish_one();
          });
        });
      };
      if (!recursive) return purge_with({});
      ctx.engine().sub_orchestrations_of(id, std::move(purge_with));
    });
  }

  void purge(const std::string& hub_name, const std::string& id, bool recursive, callback<std::size_t> done) override {
    if (auto valid = core::validate_instance_id(id); !valid) return done(valid.error());
    auto found = find(hub_name);
    if (!found) return done(found.error());
    purge_branch(*found, id, recursive, std::make_shared<purge_tracker>(std::move(done)), true);
  }

  void purge_where(const std::string& hub_name, store::instance_query filter, bool recursive,
                   callback<std::size_t> done, std::shared_ptr<std::atomic<std::size_t>> progress) override {
    auto found = find(hub_name);
    if (!found) return done(found.error());
    if (filter.statuses.empty()) filter.statuses = core::terminal_statuses();
    for (auto status : filter.statuses) {
      if (!core::is_terminal(status)) {
        return done(error{errc::invalid_argument,
                          fmt::format("status {} cannot be purged: only completed, failed, canceled or terminated "
                                      "instances can",
                                      core::to_string(status))});
      }
    }
    filter.page_size = store::query_page_size_max;
    filter.fetch_payloads = false;
    auto tracker = std::make_shared<purge_tracker>(std::move(done));
    tracker->progress = std::move(progress);
    tracker->pending += found->partitions.size();
    for (auto& partition : found->partitions) {
      caf::anon_send(partition, run_atom::value,
                     std::make_shared<std::function<void(partition_context&)>>(
                         [this, h = *found, filter, recursive, tracker](partition_context& ctx) mutable {
                           std::vector<std::string> ids;
                           for (int pages = 0; pages < 10000; ++pages) {
                             auto page = ctx.engine().store().query(filter);
                             if (!page) {
                               tracker->fail(page.error());
                               break;
                             }
                             for (auto& record : page->instances) ids.push_back(std::move(record.instance_id));
                             if (page->continuation_token.empty()) break;
                             filter.continuation_token = page->continuation_token;
                           }
                           for (const auto& id : ids) {
                             ++tracker->pending;
                             purge_branch(h, id, recursive, tracker, false);
                           }
                           tracker->finish_one();
                         }));
    }
    tracker->finish_one();
  }

  void query(const std::string& hub_name, store::instance_query query, callback<store::query_page> done) override {
    auto found = find(hub_name);
    if (!found) return done(found.error());
    // Every partition answers one page; the merged page keeps the global (created,
    // id) order, and its token is the last item returned. A partition that has more
    // has looked only up to its token: nothing past the lowest such token may be
    // returned yet, or the next page (which starts after the last item) would skip
    // that partition's rows in between.
    struct gather {
      std::mutex mutex;
      std::size_t left;
      std::vector<core::instance_record> records;
      std::optional<std::pair<std::int64_t, std::string>> horizon;
      std::optional<dtsd::error> failure;
    };
    auto state = std::make_shared<gather>();
    state->left = found->partitions.size();
    auto finish = shared(std::move(done));
    const auto page_size = query.page_size;
    for (auto& partition : found->partitions) {
      caf::anon_send(partition, run_atom::value,
                     std::make_shared<std::function<void(partition_context&)>>([state, finish, query, page_size](partition_context& ctx) {
                       auto page = ctx.engine().store().query(query);
                       std::lock_guard lock(state->mutex);
                       if (!page) {
                         state->failure = page.error();
                       } else {
                         if (auto reached = token_position(page->continuation_token)) {
                           if (!state->horizon || *reached < *state->horizon) state->horizon = std::move(*reached);
                         }
                         std::move(page->instances.begin(), page->instances.end(), std::back_inserter(state->records));
                       }
                       if (--state->left != 0) return;
                       if (state->failure) return (*finish)(*state->failure);
                       auto& records = state->records;
                       std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
                         return std::tie(a.created_at_ns, a.instance_id) < std::tie(b.created_at_ns, b.instance_id);
                       });
                       store::query_page merged;
                       const auto& horizon = state->horizon;
                       if (horizon) {
                         std::erase_if(records, [&](const core::instance_record& r) {
                           return std::make_pair(r.created_at_ns, r.instance_id) > *horizon;
                         });
                       }
                       bool more = horizon.has_value() || records.size() > page_size;
                       if (records.size() > page_size) records.resize(page_size);
                       if (more && !records.empty()) {
                         merged.continuation_token = fmt::format("{}.{}", records.back().created_at_ns, records.back().instance_id);
                       } else if (more) {
                         // Every partition stopped at its scan budget before finding a match.
                         merged.continuation_token = fmt::format("{}.{}", horizon->first, horizon->second);
                       }
                       merged.instances = std::move(records);
                       (*finish)(std::move(merged));
                     }));
    }
  }

  expected<std::uint64_t> open_session(const std::string& hub_name, session_slots slots,
                                       std::shared_ptr<work_sink> sink, core::work_filters filters,
                                       std::string worker) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    if (slots.orchestrators == 0 && slots.activities == 0 && slots.entities == 0) {
      return error{errc::invalid_argument, "a worker session must take at least one orchestrator, activity or entity item"};
    }
    if (auto valid = core::validate(filters); !valid) return valid.error();
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

  void workers(const std::string& hub_name, callback<std::vector<worker_view>> done) override {
    auto found = find(hub_name);
    if (!found) return done(found.error());
    auto once = shared(std::move(done));
    caf::anon_send(found->coordinator, workers_atom::value,
                   std::make_shared<callback<std::vector<worker_view>>>(
                       [once](expected<std::vector<worker_view>> views) { (*once)(std::move(views)); }));
  }

  expected<std::vector<partition_view>> partitions(const std::string& hub_name) override {
    auto found = find(hub_name);
    if (!found) return found.error();
    std::vector<partition_view> views;
    for (std::uint32_t p = 0; p < found->health.size(); ++p) {
      auto& health = *found->health[p];
      std::lock_guard lock(health.mutex);
      views.push_back({p, health.stalled.value_or(""), health.stalled ? health.since_ns : 0, health.failed_commits});
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

  void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion, callback<void> done) override {
    if (auto why = core::fail_oversize(completion, config_.limits)) {
      spdlog::warn("orchestration '{}' failed: its worker's answer is too large ({})", completion.instance_id,
                   why->message);
      done = reported(std::move(done), *why, "the orchestration was failed with this reason");
    }
    auto id = completion.instance_id;
    const auto token = completion.completion_token;
    complete(session, id, token, std::move(done), [completion = std::move(completion)](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().complete_orchestrator(completion, ctx.now_ns(), std::move(applied));
    });
  }

  void complete_activity(std::uint64_t session, core::activity_result result, callback<void> done) override {
    if (auto why = core::fail_oversize(result, config_.limits)) {
      spdlog::warn("task {} of '{}' failed: its result is too large ({})", result.task_id, result.instance_id,
                   why->message);
      done = reported(std::move(done), *why, "the task was failed with this reason");
    }
    auto id = result.instance_id;
    const auto token = result.completion_token;
    complete(session, id, token, std::move(done), [result = std::move(result)](partition_context& ctx, engine::reply<std::uint64_t> applied) {
      ctx.engine().complete_activity(result, ctx.now_ns(), std::move(applied));
    });
  }

  // The coordinator holds the lease: it gives the item back to its partition and
  // tells the partition's work announcement, so the item is pushed again at once.
  void abandon_orchestrator(std::uint64_t session, const std::string&, std::uint64_t token) override {
    auto found = hub_of_session(session, false);
    if (found) caf::anon_send(found->coordinator, abandon_atom::value, session, token);
  }

  void abandon_activity(std::uint64_t session, core::activity_request, std::uint64_t token) override {
    auto found = hub_of_session(session, false);
    if (found) caf::anon_send(found->coordinator, abandon_atom::value, session, token);
  }

  void drain() override {
    std::vector<caf::actor> partitions;
    {
      std::lock_guard lock(mutex_);
      for (auto& [name, h] : hubs_) partitions.insert(partitions.end(), h.partitions.begin(), h.partitions.end());
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

  /// Whether the hub holds any orchestration or entity (one query page of one row each).
  expected<bool> has_instances(const std::string& name) {
    for (bool entities : {false, true}) {
      store::instance_query any;
      any.page_size = 1;
      any.fetch_payloads = false;
      any.entities = entities;
      auto answer = std::make_shared<std::promise<expected<bool>>>();
      auto future = answer->get_future();
      query(name, std::move(any), [answer](expected<store::query_page> page) {
        answer->set_value(page ? expected<bool>(!page->instances.empty()) : expected<bool>(page.error()));
      });
      if (future.wait_for(hub_check_timeout) != std::future_status::ready) {
        return error{errc::io, fmt::format("task hub '{}' did not answer whether it holds instances", name)};
      }
      auto used = future.get();
      if (!used || *used) return used;
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
    for (auto& partition : h.partitions) caf::anon_send_exit(partition, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(h.coordinator, caf::exit_reason::user_shutdown);
  }

  static dtsd::error unknown_hub(const std::string& name) {
    return {errc::not_found, fmt::format("task hub '{}' does not exist", name)};
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

  template <class Command>
  void send_to(const hub& h, const std::string& id, Command command) {
    auto partition = core::partition_of(id, h.partition_count);
    caf::anon_send(h.partitions[partition], run_atom::value,
                   std::make_shared<std::function<void(partition_context&)>>(std::move(command)));
  }

  /// Runs `command` on the partition owning `id`, or answers `done` with why not.
  template <class Done, class Command>
  void on_partition(const std::string& hub_name, const std::string& id, Done& done, Command command) {
    if (auto valid = core::validate_instance_id(id); !valid) return done(valid.error());
    auto found = find(hub_name);
    if (!found) return done(found.error());
    send_to(*found, id, std::move(command));
  }

  /// A worker's answer: the coordinator frees the item's slot once the partition has
  /// taken or finally refused it, and the worker hears the verdict once it is
  /// durable. An invalid answer leaves the item leased (the engine keeps it in
  /// flight for a corrected answer), so its lease still expires, and an abandon or
  /// a closed session still gives it back.
  template <class Apply>
  void complete(std::uint64_t session, const std::string& id, std::uint64_t token, callback<void> done, Apply apply) {
    auto found = hub_of_session(session, false);
    if (!found) return done(found.error());
    auto on_done = [coordinator = found->coordinator, token, session, done = std::move(done)](expected<void> outcome) {
      if (!outcome && outcome.error().code == errc::resource_exhausted) {
        // The partition cannot write: the item goes back, to run again once it can.
        caf::anon_send(coordinator, abandon_atom::value, session, token);
      } else if (outcome || outcome.error().code != errc::invalid_argument) {
        caf::anon_send(coordinator, done_atom::value, token, session);
      } else {
        caf::anon_send(coordinator, alive_atom::value, session);  // It answers, if wrongly.
      }
      done(std::move(outcome));
    };
    mutate(found->name, id, std::move(on_done), std::move(apply));
  }

  /// Answers a worker whose oversize answer was applied as a failure: once that is
  /// durable, with payload_too_large and the reason (it must not send it again).
  static callback<void> reported(callback<void> done, const dtsd::error& why, const char* outcome) {
    return [done = std::move(done), message = fmt::format("{}; {}", why.message, outcome)](expected<void> applied) {
      if (!applied) return done(applied);
      done(dtsd::error{errc::payload_too_large, message});
    };
  }

  /// A change: answered once the batch holding it is durable. `apply(ctx, applied)`
  /// hands the change to the engine, which answers `applied` with that batch.
  template <class Apply>
  void mutate(const std::string& hub_name, const std::string& id, callback<void> done, Apply apply) {
    auto finish = shared(std::move(done));
    on_partition(hub_name, id, *finish, [apply = std::move(apply), finish](partition_context& ctx) {
      if (const auto& refused = ctx.write_refusal()) return (*finish)(*refused);
      apply(ctx, [&ctx, finish](expected<std::uint64_t> batch) {
        if (!batch) return (*finish)(batch.error());
        ctx.after_commit(*batch, [finish] { (*finish)(expected<void>()); });
      });
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
  std::atomic<std::uint64_t> next_session_{1};
  std::atomic<std::uint64_t> next_wait_{1};
  /// Last, so that it goes first: actors finishing during its shutdown may still
  /// use the members above.
  caf::actor_system system_;
};

}  // namespace

expected<std::unique_ptr<scheduler>> make_scheduler(const scheduler_config& config, const std::vector<std::string>& hubs,
                                                    int scheduler_threads) {
  auto made = std::make_unique<actor_scheduler>(config, scheduler_threads);
  for (const auto& name : hubs) {
    if (auto opened = made->open_hub(name, config.partition_count); !opened) return opened.error();
  }
  return std::unique_ptr<scheduler>(std::move(made));
}

}  // namespace dtsd::actors
