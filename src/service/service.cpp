// The service over a router: the simple calls pass through; what spans instances
// or partitions is composed here, once for every transport.

#include "service/service.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <random>

#include "core/ids.hpp"
#include "core/orchestration.hpp"
#include "service/query_merge.hpp"

namespace dtsd::service {

const std::string& target_of(const change& request) {
  return std::visit(
      [](const auto& c) -> const std::string& {
        if constexpr (requires { c.message; }) {
          return c.message.target_instance_id;
        } else {
          return c.instance_id;
        }
      },
      request);
}

std::string new_instance_id() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("{:016x}{:016x}", generator(), generator());
}

/// Counts a purge over all its branches (instances, children, partitions) and
/// answers once the last one is done. What went so far can be read meanwhile, and
/// waited for with a deadline.
class purge_tally {
 public:
  explicit purge_tally(callback<purge_result> done) : done_(std::move(done)) {}

  void begin() { ++pending_; }
  void purged() { ++purged_; }
  /// Some of what was asked was not looked at (a scan stopped at its page limit).
  void incomplete() { complete_ = false; }
  void fail(dtsd::error why) {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = std::move(why);
  }
  /// One branch ended; the last answers.
  void finish_one() {
    if (--pending_ != 0) return;
    std::optional<dtsd::error> failure;
    {
      std::lock_guard lock(mutex_);
      failure = failure_;
    }
    answer(failure ? expected<purge_result>(*failure)
                   : expected<purge_result>(purge_result{purged_.load(), complete_.load()}));
  }
  /// Answers with what went so far, unless the purge answered already; the rest
  /// goes on.
  void answer_now() { answer(purge_result{purged_.load(), false}); }

 private:
  void answer(expected<purge_result> result) {
    callback<purge_result> done;
    {
      std::lock_guard lock(mutex_);
      if (answered_) return;
      answered_ = true;
      done = std::move(done_);
    }
    done(std::move(result));
  }

  std::atomic<std::size_t> pending_{1};  ///< The caller's own branch, ended last.
  std::atomic<std::size_t> purged_{0};
  std::atomic<bool> complete_{true};
  std::mutex mutex_;
  bool answered_ = false;
  std::optional<dtsd::error> failure_;
  callback<purge_result> done_;
};

namespace {

/// A count answer from a purge answer.
callback<purge_result> counting(callback<std::size_t> done) {
  return [done = std::move(done)](expected<purge_result> result) {
    if (!result) return done(result.error());
    done(result->purged);
  };
}

/// Answers a worker whose oversize answer was applied as a failure: once that is
/// durable, with payload_too_large and the reason (it must not send it again).
callback<void> reported(callback<void> done, const dtsd::error& why, const char* outcome) {
  return [done = std::move(done), message = fmt::format("{}; {}", why.message, outcome)](expected<void> applied) {
    if (!applied) return done(applied);
    done(dtsd::error{errc::payload_too_large, message});
  };
}

}  // namespace

task_service::task_service(std::unique_ptr<router> routes, service_options options, const clock& time)
    : options_(std::move(options)), clock_(time), router_(std::move(routes)) {}

task_service::~task_service() = default;

// ------------------------------------------------------------------ hubs

expected<void> task_service::create_task_hub(const std::string& hub, std::uint32_t partition_count) {
  return router_->create_task_hub(hub, partition_count);
}

expected<void> task_service::delete_task_hub(const std::string& hub, bool force) {
  return router_->delete_task_hub(hub, force);
}

std::vector<std::string> task_service::task_hubs() { return router_->task_hubs(); }

expected<std::vector<partition_view>> task_service::partitions(const std::string& hub) {
  return router_->partitions(hub);
}

void task_service::workers(const std::string& hub, callback<std::vector<worker_view>> done) {
  router_->workers(hub, std::move(done));
}

void task_service::statistics(const std::string& hub, callback<hub_statistics> done) {
  auto parts = router_->partitions(hub);
  if (!parts) return done(parts.error());
  router_->workers(hub, [parts = std::move(*parts), done = std::move(done)](
                            expected<std::vector<worker_view>> workers) mutable {
    if (!workers) return done(workers.error());
    hub_statistics stats;
    for (const auto& w : *workers) {
      stats.slots.orchestrators += w.slots.orchestrators;
      stats.slots.activities += w.slots.activities;
      stats.slots.entities += w.slots.entities;
      stats.in_use.orchestrators += w.in_use.orchestrators;
      stats.in_use.activities += w.in_use.activities;
      stats.in_use.entities += w.in_use.entities;
    }
    stats.leases = std::uint64_t{stats.in_use.orchestrators} + stats.in_use.activities + stats.in_use.entities;
    std::uint64_t changes = 0;
    std::int64_t commit_ns = 0;
    for (const auto& p : parts) {
      stats.backlog.orchestrators += static_cast<std::uint32_t>(p.ready_orchestrators);
      stats.backlog.activities += static_cast<std::uint32_t>(p.ready_activities);
      stats.backlog.entities += static_cast<std::uint32_t>(p.ready_entities);
      stats.commits += p.commits;
      changes += p.committed_changes;
      commit_ns += p.commit_ns_total;
      stats.commit_ns_max = std::max(stats.commit_ns_max, p.commit_ns_max);
    }
    if (stats.commits > 0) {
      stats.commit_ms_mean = static_cast<double>(commit_ns) / 1e6 / static_cast<double>(stats.commits);
      stats.batch_changes_mean = static_cast<double>(changes) / static_cast<double>(stats.commits);
    }
    stats.workers = std::move(*workers);
    stats.partitions = std::move(parts);
    done(std::move(stats));
  });
}

// ------------------------------------------------------------------ instances

void task_service::start(const std::string& hub, core::start_request request, callback<started> done) {
  router_->start(hub, std::move(request), std::move(done));
}

void task_service::get(const std::string& hub, const std::string& instance_id, bool with_history,
                       callback<std::optional<instance_view>> done) {
  router_->get(hub, instance_id, with_history, std::move(done));
}

std::uint64_t task_service::wait(const std::string& hub, const std::string& instance_id, bool until_completed,
                                 callback<core::instance_record> done) {
  return router_->wait(hub, instance_id, until_completed, std::move(done));
}

void task_service::cancel_wait(const std::string& hub, const std::string& instance_id, std::uint64_t handle) {
  router_->cancel_wait(hub, instance_id, handle);
}

void task_service::raise_event(const std::string& hub, const std::string& instance_id, const std::string& name,
                               core::payload input, callback<void> done) {
  router_->change(hub, changes::raise_event{instance_id, name, std::move(input)}, std::move(done));
}

void task_service::terminate(const std::string& hub, const std::string& instance_id, core::terminate_request request,
                             callback<void> done) {
  router_->change(hub, changes::terminate{instance_id, std::move(request)}, std::move(done));
}

void task_service::suspend(const std::string& hub, const std::string& instance_id, core::payload reason,
                           callback<void> done) {
  router_->change(hub, changes::suspend{instance_id, std::move(reason)}, std::move(done));
}

void task_service::delete_entity(const std::string& hub, const std::string& entity_id, callback<void> done) {
  router_->change(hub, changes::delete_entity{entity_id}, std::move(done));
}

void task_service::resume(const std::string& hub, const std::string& instance_id, core::payload reason,
                          callback<void> done) {
  router_->change(hub, changes::resume{instance_id, std::move(reason)}, std::move(done));
}

void task_service::rewind(const std::string& hub, const std::string& instance_id, core::payload reason,
                          callback<void> done) {
  router_->change(hub, changes::rewind{instance_id, std::move(reason)}, std::move(done));
}

void task_service::deliver(const std::string& hub, core::instance_message message, callback<void> done) {
  router_->change(hub, changes::deliver{std::move(message)}, std::move(done));
}

void task_service::signal_entity(const std::string& hub, entity_signal signal, callback<void> done) {
  if (!core::is_entity_id(signal.entity_id) || core::entity_name(signal.entity_id).empty()) {
    return done(error{errc::invalid_argument, fmt::format("'{}' is not an entity id (@name@key)", signal.entity_id)});
  }
  if (signal.operation.empty()) return done(error{errc::invalid_argument, "a signal needs an operation name"});
  core::events::entity_operation_signaled event;
  event.request_id = signal.request_id.empty() ? new_instance_id() : std::move(signal.request_id);
  event.operation = std::move(signal.operation);
  event.scheduled_time_ns = signal.scheduled_ns;
  event.input = std::move(signal.input);
  event.target_instance_id = signal.entity_id;
  core::instance_message message{signal.entity_id, {}, core::history_event{-1, clock_.now_ns(), std::move(event)}};
  deliver(hub, std::move(message), std::move(done));
}

void task_service::restart(const std::string& hub, const std::string& instance_id, bool new_id,
                           callback<std::string> done) {
  router_->get(hub, instance_id, false, [this, hub, instance_id, new_id, done = std::move(done)](
                                            expected<std::optional<instance_view>> found) {
    if (!found) return done(found.error());
    if (!*found) return done(error{errc::not_found, fmt::format("no instance with id '{}'", instance_id)});
    const auto& record = (*found)->record;
    if (core::is_entity_id(instance_id)) {
      return done(error{errc::invalid_argument, fmt::format("'{}' is an entity: only orchestrations restart", instance_id)});
    }
    // Under a new id the original is untouched, so it may still run (as in DTS).
    if (!new_id && !core::is_terminal(record.status)) {
      return done(error{errc::failed_precondition,
                        fmt::format("instance '{}' is {}: only a finished instance can be restarted under its own id",
                                    instance_id, core::to_string(record.status))});
    }
    core::start_request start;
    start.instance_id = new_id ? new_instance_id() : instance_id;
    start.name = record.name;
    start.version = record.version;
    start.input = record.input;
    start.tags = record.tags;
    start.replaceable_statuses = core::terminal_statuses();
    router_->start(hub, std::move(start), [done](expected<started> s) {
      if (!s) return done(s.error());
      done(s->instance_id);
    });
  });
}

void task_service::terminate_many(const std::string& hub, std::vector<std::string> ids, core::payload reason,
                                  callback<std::vector<std::string>> done) {
  if (ids.size() > batch_ids_max) {
    return done(error{errc::invalid_argument, fmt::format("{} instance ids: at most {} at a time", ids.size(), batch_ids_max)});
  }
  if (ids.empty()) return done(std::vector<std::string>{});
  if (auto known = router_->partition_count(hub); !known) return done(known.error());
  struct tally {
    std::mutex mutex;
    std::size_t left = 0;
    std::vector<std::string> unterminated;
    callback<std::vector<std::string>> done;
  };
  auto state = std::make_shared<tally>();
  state->left = ids.size();
  state->done = std::move(done);
  for (auto& id : ids) {
    terminate(hub, id, core::terminate_request{reason, false}, [state, id](expected<void> ended) {
      std::unique_lock lock(state->mutex);
      if (!ended) state->unterminated.push_back(id);
      if (--state->left != 0) return;
      auto unterminated = std::move(state->unterminated);
      lock.unlock();
      state->done(std::move(unterminated));
    });
  }
}

void task_service::query(const std::string& hub, core::instance_query query, callback<core::query_page> done) {
  auto count = router_->partition_count(hub);
  if (!count) return done(count.error());
  struct gather {
    explicit gather(std::size_t page_size) : merge(page_size) {}
    std::mutex mutex;
    std::size_t left = 0;
    query_merge merge;
    callback<core::query_page> done;
  };
  auto state = std::make_shared<gather>(query.page_size);
  state->left = *count;
  state->done = std::move(done);
  for (std::uint32_t p = 0; p < *count; ++p) {
    router_->query_partition(hub, p, query, [state](expected<core::query_page> page) {
      std::unique_lock lock(state->mutex);
      if (page) {
        state->merge.add(std::move(*page));
      } else {
        state->merge.fail(page.error());
      }
      if (--state->left != 0) return;
      auto merged = state->merge.finish();
      lock.unlock();
      state->done(std::move(merged));
    });
  }
}

void task_service::list(const std::string& hub, core::list_query query, std::size_t start, std::size_t count,
                        callback<core::list_page> done) {
  if (query.sort.empty()) query.sort.push_back({core::list_column::created_at, true});  // Newest first.
  if (count == 0) return done(error{errc::invalid_argument, "a list page holds at least one row"});
  if (start > core::list_rows_max) {
    return done(error{errc::invalid_argument,
                      fmt::format("a list page starts at row {}; it may start up to row {} (narrow the filter to "
                                  "page further)",
                                  start, core::list_rows_max)});
  }
  query.rows = start + count;
  if (auto valid = core::validate(query); !valid) return done(valid.error());
  auto partitions = router_->partition_count(hub);
  if (!partitions) return done(partitions.error());
  struct gather {
    std::mutex mutex;
    std::size_t left = 0;
    std::vector<core::list_page> pages;
    std::optional<error> failed;
    callback<core::list_page> done;
  };
  auto state = std::make_shared<gather>();
  state->left = *partitions;
  state->done = std::move(done);
  const auto sort = query.sort;
  for (std::uint32_t p = 0; p < *partitions; ++p) {
    router_->list_partition(hub, p, query, [state, sort, start, count](expected<core::list_page> page) {
      std::unique_lock lock(state->mutex);
      if (page) {
        state->pages.push_back(std::move(*page));
      } else if (!state->failed) {
        state->failed = page.error();
      }
      if (--state->left != 0) return;
      lock.unlock();
      if (state->failed) return state->done(*state->failed);
      state->done(core::merge_list_pages(std::move(state->pages), sort, start, count));
    });
  }
}

// ------------------------------------------------------------------ retention

void task_service::retention(const std::string& hub, bool set, std::optional<core::retention_policy> policy,
                             callback<retention_view> done) {
  auto partitions = router_->partition_count(hub);
  if (!partitions) return done(partitions.error());
  struct gather {
    std::mutex mutex;
    std::size_t left = 0;
    std::size_t failures = 0;
    std::optional<error> failed;
    std::vector<retention_view> views;
    callback<retention_view> done;
  };
  auto state = std::make_shared<gather>();
  state->left = *partitions;
  state->done = std::move(done);
  const auto count = *partitions;
  for (std::uint32_t p = 0; p < count; ++p) {
    router_->retention_partition(hub, p, set, policy, [state, set, count, hub](expected<retention_view> view) {
      std::unique_lock lock(state->mutex);
      if (view) {
        state->views.push_back(std::move(*view));
      } else {
        ++state->failures;
        if (!state->failed) state->failed = view.error();
      }
      if (--state->left != 0) return;
      lock.unlock();
      if (state->failed && set) {
        return state->done(error{state->failed->code,
                                 fmt::format("the retention policy of task hub '{}' was set at {} of its {} partitions "
                                             "({}): set it again",
                                             hub, count - state->failures, count, state->failed->message)});
      }
      if (state->failed) return state->done(*state->failed);
      for (const auto& other : state->views) {
        if (other.own != state->views.front().own || !(other.policy == state->views.front().policy)) {
          return state->done(error{errc::failed_precondition,
                                   fmt::format("the partitions of task hub '{}' keep different retention policies "
                                               "(a change reached only some of them): set it again",
                                               hub)});
        }
      }
      state->done(std::move(state->views.front()));
    });
  }
}

// ------------------------------------------------------------------ schedules

void task_service::schedule(const std::string& hub, core::schedule_command command,
                            callback<std::vector<core::schedule>> done) {
  auto partitions = router_->partition_count(hub);
  if (!partitions) return done(partitions.error());
  if (command.what != core::schedule_command::verb::list) {
    if (auto valid = core::validate_schedule_id(command.id); !valid) return done(valid.error());
    const auto home = core::partition_of(core::schedule_address(command.id), *partitions);
    return router_->schedule_partition(hub, home, std::move(command), std::move(done));
  }
  struct gather {
    std::mutex mutex;
    std::size_t left = 0;
    std::optional<error> failed;
    std::vector<core::schedule> schedules;
    callback<std::vector<core::schedule>> done;
  };
  auto state = std::make_shared<gather>();
  state->left = *partitions;
  state->done = std::move(done);
  for (std::uint32_t p = 0; p < *partitions; ++p) {
    router_->schedule_partition(hub, p, command, [state](expected<std::vector<core::schedule>> some) {
      std::unique_lock lock(state->mutex);
      if (some) {
        for (auto& s : *some) state->schedules.push_back(std::move(s));
      } else if (!state->failed) {
        state->failed = some.error();
      }
      if (--state->left != 0) return;
      lock.unlock();
      if (state->failed) return state->done(*state->failed);
      std::sort(state->schedules.begin(), state->schedules.end(),
                [](const auto& a, const auto& b) { return a.spec.id < b.spec.id; });
      state->done(std::move(state->schedules));
    });
  }
}

// ------------------------------------------------------------------ purges

void task_service::purge_walk(const std::string& hub, const std::string& id, bool recursive,
                              std::shared_ptr<purge_tally> tally, bool top) {
  // The top instance's refusal (missing, still running) is the answer; children
  // that still run are left in place. A partition that cannot write, or a hub that
  // went away, fails the whole purge, child or not: what was asked is not all done.
  router_->purge_one(hub, id, recursive, [this, hub, recursive, tally, top](expected<purge_step> step) {
    if (!step) {
      const auto code = step.error().code;
      if (top || code == errc::resource_exhausted || code == errc::unknown_task_hub || code == errc::io ||
          code == errc::unavailable) {
        tally->fail(step.error());
      }
      return tally->finish_one();
    }
    if (step->purged) tally->purged();
    for (const auto& child : step->children) {
      tally->begin();
      purge_walk(hub, child, recursive, tally, false);
    }
    tally->finish_one();
  });
}

void task_service::purge(const std::string& hub, const std::string& instance_id, bool recursive,
                         callback<std::size_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  purge_walk(hub, instance_id, recursive, std::make_shared<purge_tally>(counting(std::move(done))), true);
}

void task_service::purge_many(const std::string& hub, std::vector<std::string> ids, bool recursive,
                              callback<std::size_t> done) {
  // One at a time: a large batch holds no more than one purge in flight.
  struct walk {
    std::vector<std::string> ids;
    std::size_t next = 0;
    std::size_t purged = 0;
    callback<std::size_t> done;
  };
  auto state = std::make_shared<walk>(walk{std::move(ids), 0, 0, std::move(done)});
  auto step = std::make_shared<std::function<void()>>();
  *step = [this, hub, recursive, state, step] {
    if (state->next == state->ids.size()) {
      state->done(state->purged);
      *step = nullptr;  // Breaks the self-reference.
      return;
    }
    const auto id = state->ids[state->next++];
    purge(hub, id, recursive, [state, step](expected<std::size_t> count) {
      if (count) {
        state->purged += *count;
      } else if (count.error().code != errc::not_found) {
        state->done(count.error());
        *step = nullptr;
        return;
      }
      (*step)();
    });
  };
  (*step)();
}

/// One partition of a purge-where, read page by page: what a page matched is
/// purged before the next page is asked for (positions behind the token stay
/// valid as rows go). It lives as long as a callback of its holds it.
class task_service::partition_scan : public std::enable_shared_from_this<partition_scan> {
 public:
  partition_scan(task_service& service, std::string hub, std::uint32_t partition, core::instance_query filter,
                 bool recursive, std::shared_ptr<purge_tally> tally)
      : service_(service), hub_(std::move(hub)), partition_(partition), filter_(std::move(filter)),
        recursive_(recursive), tally_(std::move(tally)) {}

  void next() {
    service_.router_->query_partition(hub_, partition_, filter_, [self = shared_from_this()](
                                                                      expected<core::query_page> page) {
      self->on_page(std::move(page));
    });
  }

 private:
  void on_page(expected<core::query_page> page) {
    if (!page) {
      tally_->fail(page.error());
      return tally_->finish_one();
    }
    for (const auto& record : page->instances) {
      tally_->begin();
      service_.purge_walk(hub_, record.instance_id, recursive_, tally_, false);
    }
    if (!page->continuation_token.empty()) {
      if (++pages_ < purge_scan_pages_max) {
        filter_.continuation_token = page->continuation_token;
        return next();
      }
      tally_->incomplete();  // The caller purges again for the rest.
    }
    tally_->finish_one();
  }

  task_service& service_;
  std::string hub_;
  std::uint32_t partition_;
  core::instance_query filter_;
  bool recursive_;
  std::shared_ptr<purge_tally> tally_;
  std::size_t pages_ = 0;
};

void task_service::purge_where(const std::string& hub, core::instance_query filter, bool recursive,
                               std::optional<std::chrono::nanoseconds> answer_within, callback<purge_result> done) {
  auto count = router_->partition_count(hub);
  if (!count) return done(count.error());
  if (filter.statuses.empty()) filter.statuses = core::terminal_statuses();
  for (auto status : filter.statuses) {
    if (!core::is_terminal(status)) {
      return done(error{errc::invalid_argument,
                        fmt::format("status {} cannot be purged: only completed, failed, canceled or terminated "
                                    "instances can",
                                    core::to_string(status))});
    }
  }
  filter.page_size = core::query_page_size_max;
  filter.fetch_payloads = false;
  auto tally = std::make_shared<purge_tally>(std::move(done));
  for (std::uint32_t p = 0; p < *count; ++p) {
    tally->begin();
    std::make_shared<partition_scan>(*this, hub, p, filter, recursive, tally)->next();
  }
  tally->finish_one();
  if (answer_within && !deadlines_.after(*answer_within, [tally] { tally->answer_now(); })) {
    spdlog::warn("purge-where in task hub '{}' answers when it ends: {} deadlines wait already", hub,
                 deadlines::pending_max);
  }
}


void task_service::clean_entity_storage(const std::string& hub, entity_clean_request request,
                                        callback<entity_clean_result> done) {
  core::instance_query entities;
  entities.entities = true;
  entities.page_size = clean_page_size;
  entities.continuation_token = request.continuation_token;
  // One page per call; its token continues (the SDKs loop until it is empty).
  query(hub, std::move(entities), [this, hub, request, done = std::move(done)](expected<core::query_page> page) {
    if (!page) return done(page.error());
    struct tally {
      std::mutex mutex;
      std::size_t left = 1;  // One for this loop, released at its end.
      entity_clean_result result;
      callback<entity_clean_result> done;
    };
    auto counts = std::make_shared<tally>();
    counts->result.continuation_token = page->continuation_token;
    counts->done = done;
    auto settle = [counts](bool removed, bool released) {
      std::unique_lock lock(counts->mutex);
      counts->result.removed += removed ? 1 : 0;
      counts->result.released += released ? 1 : 0;
      if (--counts->left != 0) return;
      auto result = counts->result;
      lock.unlock();
      counts->done(std::move(result));
    };
    auto one_more = [counts] {
      std::lock_guard lock(counts->mutex);
      ++counts->left;
    };
    for (const auto& record : page->instances) {
      auto verdict = judge_entity(record, request.remove_empty, request.release_orphaned_locks);
      if (request.idle_ns != 0 && record.last_updated_at_ns > clock_.now_ns() - request.idle_ns) verdict.remove = false;
      const auto id = record.instance_id;
      if (verdict.remove) {
        one_more();
        purge(hub, id, false, [settle](expected<std::size_t> purged) { settle(purged && *purged > 0, false); });
      }
      if (verdict.check_lock) {
        one_more();
        const auto holder = record.entity_locked_by;
        const auto lock_id = record.entity_lock_id;
        get(hub, holder, false,
            [this, hub, id, holder, lock_id, settle](expected<std::optional<instance_view>> found) {
              if (!found) return settle(false, false);
              std::optional<core::instance_record> state;
              if (*found) state = (*found)->record;
              if (!lock_orphaned(state)) return settle(false, false);
              core::instance_message unlock{
                  id, {}, core::history_event{-1, clock_.now_ns(), core::events::entity_unlock_sent{lock_id, holder, id}}};
              deliver(hub, std::move(unlock), [settle](expected<void> released) { settle(false, bool(released)); });
            });
      }
    }
    settle(false, false);
  });
}

// ------------------------------------------------------------------ worker sessions

expected<std::uint64_t> task_service::open_session(const std::string& hub, session_slots slots,
                                                   std::shared_ptr<work_sink> sink, core::work_filters filters,
                                                   std::string worker) {
  if (slots.orchestrators == 0 && slots.activities == 0 && slots.entities == 0) {
    return error{errc::invalid_argument, "a worker session must take at least one orchestrator, activity or entity item"};
  }
  if (auto valid = core::validate(filters); !valid) return valid.error();
  return router_->open_session(hub, slots, std::move(sink), std::move(filters), std::move(worker));
}

void task_service::close_session(std::uint64_t session) { router_->close_session(session); }

void task_service::session_alive(std::uint64_t session) { router_->session_alive(session); }

void task_service::complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion,
                                         callback<void> done) {
  if (auto why = core::fail_oversize(completion, options_.limits)) {
    spdlog::warn("orchestration '{}' failed: its worker's answer is too large ({})", completion.instance_id,
                 why->message);
    done = reported(std::move(done), *why, "the orchestration was failed with this reason");
  }
  router_->complete_orchestrator(session, std::move(completion), std::move(done));
}

void task_service::complete_activity(std::uint64_t session, core::activity_result result, callback<void> done) {
  if (auto why = core::fail_oversize(result, options_.limits)) {
    spdlog::warn("task {} of '{}' failed: its result is too large ({})", result.task_id, result.instance_id,
                 why->message);
    done = reported(std::move(done), *why, "the task was failed with this reason");
  }
  router_->complete_activity(session, std::move(result), std::move(done));
}

void task_service::abandon(std::uint64_t session, std::uint64_t token) { router_->abandon(session, token); }

void task_service::drain() { router_->drain(); }

}  // namespace dtsd::service
