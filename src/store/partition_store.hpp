#pragma once
/// The store of one (task hub, partition): the partition log and the materialized
/// state beside it (instances, history, inbox, timers, activity queue, outbox,
/// dedup marks, query indexes), over a `kv_engine` (LMDB or memory).
///
/// History is stored in append order: each commit writes one chunk per instance it
/// appended to, keyed (segment sequence, instance id), and the instance row lists its
/// chunks. A commit's history therefore lands on a few neighbouring pages instead of
/// one page per instance. An instance with many chunks has them merged into one.
///
/// A `write_batch` is applied in ONE write transaction: the log record and every row
/// it changes become durable together or not at all. `commit` is called by one
/// thread at a time (the partition's writer); the read functions may be called from
/// any thread at any time and never block it.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/model.hpp"
#include "core/orchestration.hpp"
#include "core/query.hpp"
#include "codec/codec.hpp"
#include "store/catalog.hpp"
#include "store/kv.hpp"

namespace dtsd::store {

struct partition_identity {
  std::string task_hub;
  std::uint32_t partition_index = 0;
  std::uint32_t partition_count = 1;
};

/// Where a partition's LMDB environment lives: `<data_dir>/<hub>/p<index>`.
std::string partition_directory(std::string_view data_dir, const partition_identity& identity);

/// The rows of one instance that a batch writes.
struct instance_write {
  std::string instance_id;
  bool purged = false;  ///< Delete every row of the instance; nothing else applies.
  stored_instance row;
  bool reset = false;   ///< Delete all history and inbox rows before writing.
  std::uint32_t history_first_index = 0;
  std::vector<core::history_event> history_rows;
  std::uint64_t inbox_rows_first_sequence = 0;
  std::vector<core::history_event> inbox_rows;
};

/// Copies out of `state` exactly the rows `change` says are new. The batch owns
/// them, so the partition can keep changing `state` while the batch is written.
instance_write make_instance_write(std::string_view instance_id,
                                   const core::orchestration_state* state,
                                   const core::instance_change& change);

struct activity_key {
  std::string instance_id;
  std::string execution_id;
  std::int32_t task_id = -1;
};

struct write_batch {
  std::vector<partition_event> events;  ///< Logged as one record when non-empty.
  std::vector<instance_write> instances;  ///< At most one per instance id.
  std::vector<core::activity_request> activities_added;
  std::vector<activity_key> activities_removed;
  std::vector<core::timer_entry> timers_added;
  std::vector<core::timer_entry> timers_removed;
  std::vector<outbox_entry> outbox_added;
  std::vector<std::uint64_t> outbox_removed;  ///< Acknowledged by their receivers.
  /// Source partition -> highest outbox sequence of it applied here.
  std::map<std::uint32_t, std::uint64_t> dedup_marks;
  /// Set: the hub's retention policy as this partition keeps it becomes this JSON
  /// (core/retention.hpp); "": none of its own (dtsd's default applies).
  std::optional<std::string> retention;
  /// Schedule id -> the schedule's JSON (core/schedule.hpp) as it is now; "": deleted.
  std::map<std::string, std::string> schedules;

  bool empty() const;
};

struct commit_info {
  std::uint64_t log_sequence = 0;  ///< 0 when the batch logged no events.
};

/// What the engine needs to resume after a restart.
struct recovered_state {
  std::vector<std::string> instances_with_inbox;  ///< May have work to dispatch.
  std::vector<core::activity_request> activities;
  std::vector<core::timer_entry> timers;
  std::vector<outbox_entry> outbox;
  std::map<std::uint32_t, std::uint64_t> dedup_marks;
  std::uint64_t next_log_sequence = 1;
  std::uint64_t next_outbox_sequence = 1;
  std::size_t instance_count = 0;
  std::string retention;  ///< The stored retention policy's JSON; "": none.
  std::map<std::string, std::string> schedules;  ///< Schedule id -> its JSON.
};

/// Orchestrations per status (entities are not counted), by core::runtime_status.
using status_counts = std::array<std::uint64_t, core::runtime_status_count>;

/// Orchestrations that started (new, or replacing an ended one) and that ended, per
/// status, in the commits since the store opened.
struct lifecycle_counts {
  std::uint64_t started = 0;
  status_counts ended{};
};

class partition_store {
 public:
  /// Opens (or initializes) the store. A store made for another identity is refused.
  static expected<std::unique_ptr<partition_store>> open(std::unique_ptr<kv_engine> engine,
                                                         const partition_identity& identity);

  const partition_identity& identity() const { return identity_; }

  /// The log keeps the newest `records` records; each commit drops what falls out
  /// of that window (the first one after opening drops the whole backlog). The
  /// materialized tables are the state; the log is for replay and inspection.
  /// 0 keeps everything.
  void set_log_retention(std::uint64_t records) { log_retention_ = records; }

  expected<commit_info> commit(const write_batch& batch, std::int64_t now_ns);

  /// In a cluster: this store writes for the owner of `epoch` from now on. Refused
  /// when a newer owner already fenced it; afterwards every commit checks, in its
  /// own transaction, that no newer owner fenced it since, and writes nothing if
  /// one did (errc::failed_precondition). A store never fenced checks nothing.
  /// Only a store that no other owner fenced since it was opened can be fenced
  /// again (its memory would be stale otherwise: open it again). Call it while no
  /// commit runs.
  expected<void> fence(std::int64_t epoch);
  std::int64_t epoch() const { return epoch_.load(); }

  expected<std::optional<core::instance_record>> get_instance(std::string_view instance_id);
  /// Record, history and inbox of one instance.
  expected<std::optional<core::orchestration_state>> load_instance(std::string_view instance_id);
  expected<std::vector<core::history_event>> history(std::string_view instance_id);
  expected<core::query_page> query(const core::instance_query& query);
  /// A list's top rows and counts, from the summaries kept in memory (store/catalog.hpp):
  /// no read of the store, whatever the filter.
  expected<core::list_page> list(const core::list_query& query) const;
  /// Orchestrations per status as of the last commit: kept with every commit (in the
  /// same transaction), so that a count never scans the partition.
  const status_counts& counts() const { return counts_; }
  /// The in-memory summaries of the instances as of the last commit (lists, and
  /// the ended orchestrations that retention purges).
  const instance_catalog& catalog() const { return catalog_; }
  const lifecycle_counts& lifecycle() const { return lifecycle_; }
  /// Bytes its data takes on disk (0 in memory).
  std::uint64_t disk_bytes() const { return engine_->disk_bytes(); }
  /// Timers due at or before `now_ns`, earliest first.
  expected<std::vector<core::timer_entry>> due_timers(std::int64_t now_ns, std::size_t count_max);
  expected<std::vector<core::activity_request>> queued_activities(std::size_t count_max);
  expected<std::vector<log_record>> read_log(std::uint64_t from_sequence, std::size_t count_max);
  expected<recovered_state> recover();

  /// Checks that every index agrees with the records and every per-instance row
  /// belongs to an instance whose counts match. Returns `corrupt` listing problems.
  expected<void> check_consistency();

 private:
  partition_store(std::unique_ptr<kv_engine> engine, partition_identity identity)
      : engine_(std::move(engine)), identity_(std::move(identity)) {}

  expected<void> initialize();
  void check_epoch(kv_writer& writer) const;
  expected<void> load_catalog();

  std::unique_ptr<kv_engine> engine_;
  partition_identity identity_;
  std::uint64_t next_log_sequence_ = 1;
  std::uint64_t next_segment_sequence_ = 1;
  std::uint64_t log_retention_ = 0;
  std::uint64_t log_trimmed_below_ = 0;  ///< Every record below this sequence is gone.
  status_counts counts_{};
  bool counts_unwritten_ = false;  ///< Counted at open (a store from before counts): written with the next commit.
  instance_catalog catalog_;
  lifecycle_counts lifecycle_;
  /// The owner epoch this store writes under (0: never in a cluster); read by commits.
  std::atomic<std::int64_t> epoch_{0};
};

}  // namespace dtsd::store
