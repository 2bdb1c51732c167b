#pragma once
/// Worker sessions, slots and leases of one hub, and the choice of who gets which
/// work item: the decisions of the coordinator, without CAF and without a clock of
/// their own (every call that needs the time is given it), so that the seeded
/// simulation drives them with a fake clock. The coordinator actor owns one and
/// carries out what it asks through a `dispatch_port`; the simulation does the same
/// in one thread.
///
/// The rules: partitions say which kinds of work they may have; the dispatcher asks
/// them for as many items as sessions have free slots, leases each item to the
/// session with the most free slots that accepts it (its work filters) and pushes
/// it. A session that closes, or a lease that expires, gives its items back. A
/// session whose lease expires is *suspect*: it gets no new work until it answers
/// something, and one that stays suspect for a lease period is closed.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "service/types.hpp"
#include "core/work_filter.hpp"
#include "engine/partition_engine.hpp"

namespace dtsd::actors {

using service::callback;
using service::work_item;
using service::worker_view;

/// The kinds of work, each with its own slots in a session.
enum class work_kind : std::uint8_t { orchestrator, activity, entity };
inline constexpr std::size_t work_kind_count = 3;
inline constexpr std::size_t kind_index(work_kind kind) { return static_cast<std::size_t>(kind); }
inline constexpr std::array<work_kind, work_kind_count> all_kinds = {work_kind::orchestrator, work_kind::activity,
                                                                     work_kind::entity};
/// A count per kind of work.
using per_kind = std::array<std::uint32_t, work_kind_count>;

/// Which kinds of work a partition may have: what it announces, and what it says
/// is left after handing work over.
struct work_kinds {
  std::array<bool, work_kind_count> has{};
  bool any() const { return has[0] || has[1] || has[2]; }
};

/// What the dispatcher asks a partition for: how many items of each kind, and
/// what the sessions with room for that kind accept (their filters together).
struct take_request {
  per_kind wanted{};
  std::array<core::kind_filter, work_kind_count> accept{};
};

/// Work handed from a partition to the dispatcher.
struct work_batch {
  std::uint32_t partition = 0;
  per_kind asked{};
  std::vector<core::orchestrator_work_item> orchestrators;
  std::vector<core::activity_work_item> activities;
  std::vector<core::orchestrator_work_item> entities;  ///< Entity batches.
  work_kinds left;  ///< What the partition may still have.
  /// Kinds of which the partition keeps items no session took (see
  /// partition_engine::take_work): worth asking again when sessions change.
  work_kinds parked;
};

/// One item leased to a session, by its completion token.
struct lease {
  std::uint64_t session = 0;
  std::uint32_t partition = 0;
  std::int64_t deadline_ns = 0;
  work_kind kind = work_kind::orchestrator;
  std::string instance_id;                         ///< Orchestrator and entity items.
  std::optional<core::activity_request> activity;  ///< Activity items.
};

/// What a partition's engine does for the dispatcher; the partition actor and the
/// simulation call these, so both take, announce and give back alike.
/// The kinds of work `engine` may have now.
work_kinds available_work(engine::partition_engine& engine);
/// The kinds of which `engine` keeps parked items (no session with room accepted them).
work_kinds parked_work(engine::partition_engine& engine);
/// Takes what `take` asks of partition `index` (filtered, parking what no session
/// accepts) and says what is left.
work_batch take_work(engine::partition_engine& engine, std::uint32_t index, const take_request& take,
                     std::int64_t now_ns);
/// Gives a leased item back to its partition unprocessed: it is dispatched again.
void give_back_work(engine::partition_engine& engine, std::uint64_t token, const lease& held);

/// A slot handed over at a partition: a worker's answer to `done_token` freed its
/// session's slot there, and the partition used it at once for `next` (pushed to
/// the same session without asking the coordinator), or gave it back (nothing).
struct slot_handover {
  std::uint64_t session = 0;
  std::uint64_t done_token = 0;
  struct next_item {
    std::uint64_t token = 0;
    lease held;  ///< Its deadline is set by the coordinator.
  };
  std::optional<next_item> next;
};

/// How many times in a row a slot is used again at the partition where it was
/// freed before it goes back to the coordinator, which gives it to whichever
/// partition has work: a busy partition cannot keep a session's slots forever.
inline constexpr std::uint32_t slot_reuses_max = 8;

/// The next item of `kind` partition `index` has for a session whose slot just
/// freed there, when the session takes any item of that kind (a session with a
/// filter goes through the coordinator, which knows every session's filter).
std::optional<std::pair<work_item, lease>> next_for_freed_slot(engine::partition_engine& engine, std::uint32_t index,
                                                               work_kind kind, const core::work_filters& filters,
                                                               std::int64_t now_ns);

/// A partition's side of push with credits: how many times in a row the slot of
/// each item it pushed was used again there, and what a freed slot does next.
class freed_slots {
 public:
  /// What to do with a freed slot: the handover to report to the coordinator and,
  /// when the slot was used again here, the item to push to the session.
  struct outcome {
    slot_handover handover;
    std::optional<work_item> push;
  };

  /// The answer to the item under `token` freed a slot of `session` at partition
  /// `index`. The slot is used again for the next item of `kind` there if
  /// `filters` (the session's, null when the partition does not know the session
  /// or hands out no work) take any item of that kind and it was not reused
  /// slot_reuses_max times in a row already; otherwise it goes back.
  outcome freed(engine::partition_engine& engine, std::uint32_t index, std::uint64_t session, work_kind kind,
                std::uint64_t token, const core::work_filters* filters, std::int64_t now_ns);
  /// The item under `token` was given back or its answer refused: its count goes.
  void forget(std::uint64_t token) { reuses_.erase(token); }

 private:
  std::unordered_map<std::uint64_t, std::uint32_t> reuses_;
};

/// What the dispatcher asks of the world; called from inside its methods, so an
/// implementation must not call back into the dispatcher (it queues or sends).
class dispatch_port {
 public:
  virtual ~dispatch_port() = default;
  virtual void take(std::uint32_t partition, take_request take) = 0;
  virtual void give_back(std::uint32_t partition, std::uint64_t token, const lease& held) = 0;
  virtual void push(std::uint64_t session, std::vector<work_item> items) = 0;
  virtual void keep_alive(std::uint64_t session) = 0;
  /// The dispatcher closed the session (its items are given back already).
  virtual void end(std::uint64_t session, const std::string& why) = 0;
};

/// A session as the dispatcher sees it.
struct session_spec {
  std::uint64_t id = 0;
  per_kind slots{};
  core::work_filters filters;
  std::string worker;
};

class dispatcher {
 public:
  /// Items asked of one partition at once, per kind.
  static constexpr std::uint32_t take_count_max = 256;
  /// A suspect session is closed after this many lease periods without an answer.
  static constexpr std::int64_t suspect_periods_max = 1;

  dispatcher(dispatch_port& port, std::int64_t lease_ns, std::int64_t keep_alive_ns)
      : port_(port), lease_ns_(lease_ns), keep_alive_ns_(keep_alive_ns) {}

  void open(session_spec session, std::int64_t now_ns);
  /// Everything the session holds goes back to its partitions.
  void close(std::uint64_t session);
  /// Partition `partition` may have these kinds of work.
  void note_work(std::uint32_t partition, work_kinds kinds);
  /// The partition is no longer served here (its ownership moved): what was asked
  /// of it and not answered is forgotten, and so is what it was known to have.
  /// Leases on its items stay until answered or expired (their answers are refused).
  void partition_gone(std::uint32_t partition);
  /// The partition is served here (again): what it announces counts.
  void partition_back(std::uint32_t partition);
  /// A partition's answer to a take: its items are leased and pushed.
  void on_work(work_batch work, std::int64_t now_ns);
  /// The session's answer for `token` was applied or finally refused: its slot is
  /// free, and the session is alive.
  void done(std::uint64_t token, std::uint64_t session);
  /// Slots handed over at a partition (see slot_handover): each done token is
  /// released, and each next item leased to its session, which has it already
  /// (even past its slots, after a late answer); one for a session that is gone
  /// goes back to its partition.
  void handover(const std::vector<slot_handover>& handovers, std::int64_t now_ns);
  /// The session answered something (a keep-alive, a refused answer).
  void alive(std::uint64_t session);
  /// The session gave an item back unprocessed.
  void abandon(std::uint64_t session, std::uint64_t token);
  /// Expires leases, closes hung sessions, sends keep-alives (about every second).
  void tick(std::int64_t now_ns);
  /// Asks partitions with work for as much as the sessions can take; call after
  /// every change.
  void pump();

  std::vector<worker_view> workers() const;
  bool has_session(std::uint64_t session) const { return sessions_.count(session) != 0; }
  bool suspect(std::uint64_t session) const;
  const std::map<std::uint64_t, lease>& leases() const { return leases_; }
  /// Forgets every session and lease (the hub is going away).
  std::vector<std::uint64_t> clear();

 private:
  struct session_state {
    session_spec spec;
    per_kind out{};
    std::int64_t last_push_ns = 0;
    /// Since when its leases expire unanswered (0: it is not suspect).
    std::int64_t suspect_since_ns = 0;
    bool suspect() const { return suspect_since_ns != 0; }
    std::int64_t free(work_kind kind) const {
      return std::int64_t{spec.slots[kind_index(kind)]} - out[kind_index(kind)];
    }
    bool accepts(work_kind kind, const std::string& name, const core::payload& version) const;
  };

  core::kind_filter acceptable(work_kind kind) const;
  void retry_parked(work_kind kind);
  std::int64_t free_slots(work_kind kind) const;
  session_state* pick(work_kind kind, const std::string& name, const core::payload& version);
  void give_back(std::uint32_t partition, std::uint64_t token, const lease& held);
  template <class Item>
  void place(work_kind kind, std::uint32_t partition, std::vector<Item>& items, std::int64_t now_ns,
             std::map<std::uint64_t, std::vector<work_item>>& pushes);
  void release(std::uint64_t token, bool give_back_to_partition);
  /// Leases `token` to `session`.
  void hold(session_state& session, std::uint64_t token, lease held);

  dispatch_port& port_;
  std::int64_t lease_ns_;
  std::int64_t keep_alive_ns_;
  std::map<std::uint64_t, session_state> sessions_;
  std::map<std::uint64_t, lease> leases_;  ///< By completion token.
  std::map<std::uint32_t, work_kinds> with_work_;
  /// Partitions keeping items of a kind that no session with room accepted.
  std::array<std::set<std::uint32_t>, work_kind_count> parked_;
  per_kind asked_{};  ///< Items asked of partitions and not yet handed over.
  std::map<std::uint32_t, per_kind> asked_of_;  ///< The same, by partition.
  /// Partitions no longer served here: late announcements, answers and give-backs
  /// of theirs are ignored (their next owner recovers their items).
  std::set<std::uint32_t> gone_;
};

}  // namespace dtsd::actors
