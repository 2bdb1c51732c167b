#pragma once
// A simulated dtsd in one process: partition engines whose "disk" (a memory kv
// engine) survives their crashes, FIFO links between partitions that can break and
// are then resent from the outbox, and scripted workers. Used by the engine tests
// and the seeded simulation test.

#include <doctest/doctest.h>

#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/ids.hpp"
#include "engine/partition_engine.hpp"

namespace sim {

using namespace dtsd;

inline const std::vector<std::string> cities = {"Tokyo", "Seattle", "London", "Paris", "Cairo"};
inline constexpr std::int64_t second_ns = 1'000'000'000;

/// Forwards to a kv engine that outlives the partition store using it: the disk.
class shared_disk final : public store::kv_engine {
 public:
  explicit shared_disk(std::shared_ptr<store::kv_engine> disk) : disk_(std::move(disk)) {}
  expected<void> write(const std::function<void(store::kv_writer&)>& body) override {
    return disk_->write(body);
  }
  expected<void> read(const std::function<void(store::kv_reader&)>& body) override {
    return disk_->read(body);
  }

 private:
  std::shared_ptr<store::kv_engine> disk_;
};

/// What an orchestrator has seen, rebuilt from a work item as an SDK would.
struct seen {
  std::string name;
  std::string instance_id;
  std::int64_t started_ns = 0;
  std::set<std::int32_t> scheduled;  // Task, sub-orchestration and timer ids.
  std::map<std::int32_t, std::string> results;
  bool timer_fired = false;
};

inline seen replay_history(const core::orchestrator_work_item& item) {
  seen s;
  s.instance_id = item.instance_id;
  auto visit = [&](const core::history_event& event) {
    namespace ev = core::events;
    if (const auto* e = std::get_if<ev::execution_started>(&event.body)) {
      s.name = e->name;
      s.started_ns = event.timestamp_ns;
    } else if (std::holds_alternative<ev::task_scheduled>(event.body) ||
               std::holds_alternative<ev::sub_orchestration_created>(event.body) ||
               std::holds_alternative<ev::timer_created>(event.body)) {
      s.scheduled.insert(event.event_id);
    } else if (const auto* e = std::get_if<ev::task_completed>(&event.body)) {
      s.results[e->task_scheduled_id] = e->result.value_or("null");
    } else if (const auto* e = std::get_if<ev::sub_orchestration_completed>(&event.body)) {
      s.results[e->task_scheduled_id] = e->result.value_or("null");
    } else if (std::holds_alternative<ev::timer_fired>(event.body)) {
      s.timer_fired = true;
    }
  };
  for (const auto& event : item.past_events) visit(event);
  for (const auto& event : item.new_events) visit(event);
  return s;
}

inline std::string joined_results(const seen& s, std::int32_t count) {
  std::string out = "[";
  for (std::int32_t i = 0; i < count; ++i) out += (i ? "," : "") + s.results.at(i);
  return out + "]";
}

inline core::orchestrator_action complete_action(std::int32_t id, std::string output) {
  core::actions::complete_orchestration done;
  done.result = std::move(output);
  return {id, std::move(done)};
}

/// The orchestrator programs: deterministic functions of what they have seen.
inline std::vector<core::orchestrator_action> decide(const core::orchestrator_work_item& item) {
  auto s = replay_history(item);
  const auto done = static_cast<std::int32_t>(s.results.size());
  std::vector<core::orchestrator_action> actions;
  if (s.name == "HelloCities") {
    if (done == 5) {
      actions.push_back(complete_action(5, joined_results(s, 5)));
    } else if (!s.scheduled.count(done)) {
      core::actions::schedule_task task;
      task.name = "SayHello";
      task.input = "\"" + cities[static_cast<std::size_t>(done)] + "\"";
      actions.push_back({done, std::move(task)});
    }
  } else if (s.name == "FanOut") {
    if (done == 3) {
      actions.push_back(complete_action(3, joined_results(s, 3)));
    } else if (s.scheduled.empty()) {
      for (std::int32_t k = 0; k < 3; ++k) {
        core::actions::create_sub_orchestration child;
        child.instance_id = fmt::format("{}:child-{}", s.instance_id, k);
        child.name = "HelloCities";
        actions.push_back({k, std::move(child)});
      }
    }
  } else if (s.name == "Sleepy") {
    if (s.timer_fired) {
      actions.push_back(complete_action(1, "\"woke\""));
    } else if (!s.scheduled.count(0)) {
      actions.push_back({0, core::actions::create_timer{s.started_ns + second_ns}});
    }
  } else {
    FAIL("unknown orchestration " << s.name);
  }
  return actions;
}

inline std::string hello_output() {
  std::string out = "[";
  for (std::size_t i = 0; i < cities.size(); ++i) {
    out += (i ? "," : "") + std::string("\"Hello, ") + cities[i] + "!\"";
  }
  return out + "]";
}

inline std::string expected_output(const std::string& name) {
  if (name == "HelloCities") return hello_output();
  if (name == "FanOut") return "[" + hello_output() + "," + hello_output() + "," + hello_output() + "]";
  return "\"woke\"";
}

inline core::activity_result run_activity(const core::activity_work_item& item) {
  const auto& input = item.request.input.value_or("\"\"");
  return {item.request.instance_id, item.request.execution_id, item.request.task_id,
          item.completion_token, core::payload("\"Hello, " + input.substr(1, input.size() - 2) + "!\"")};
}

struct link {
  std::deque<store::outbox_entry> messages;
  std::deque<std::uint64_t> receipts;  // Flow from the destination back to the source.
  bool broken = false;
};

/// Runs each operation on its instance at once but holds the answers back, in
/// order per instance, until the world lets them through in a random
/// interleaving across instances: how instance actors on several threads answer.
class shuffling_host final : public engine::instance_host {
 public:
  void run(const std::string& id, std::uint64_t number, engine::instance_op op) override {
    held_[id].emplace_back(number, live_.perform(id, op, load_, limits_));
  }
  void evict(const std::string& id) override { live_.erase(id); }

  /// Lets the oldest held answer of a random instance through; false if none is held.
  bool answer_one(std::mt19937_64& random) {
    if (held_.empty()) return false;
    auto it = std::next(held_.begin(), static_cast<long>(random() % held_.size()));
    auto [number, outcome] = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) held_.erase(it);
    answer_(number, std::move(outcome));
    return true;
  }

 private:
  engine::local_instances live_;
  // Ordered: the seed decides.
  std::map<std::string, std::deque<std::pair<std::uint64_t, engine::instance_outcome>>> held_;
};

/// Partitions, links and workers. Faults happen only when the test asks for them.
struct world {
  std::uint32_t partition_count;
  std::mt19937_64 random;
  std::int64_t now = 1'700'000'000 * second_ns;
  std::vector<std::shared_ptr<store::kv_engine>> disks;
  std::vector<std::unique_ptr<engine::partition_engine>> engines;
  std::map<std::pair<std::uint32_t, std::uint32_t>, link> links;
  std::vector<std::pair<std::uint32_t, core::orchestrator_work_item>> orchestrator_items;
  std::vector<std::pair<std::uint32_t, core::activity_work_item>> activity_items;
  struct counters {
    std::size_t partition_crashes = 0, links_broken = 0, worker_crashes = 0, refused_answers = 0,
                deliveries = 0, commits = 0, planned_moves = 0, takeovers = 0, fenced_commits = 0,
                node_changes = 0;
  } count;

  /// Nodes (with nodes_enabled): each partition is owned by one live node, chosen
  /// by rendezvous hashing; a move opens the partition again at its new owner under
  /// a higher epoch that fences its store. Without nodes, stores are never fenced.
  bool nodes_enabled = false;
  std::vector<std::string> nodes;
  std::vector<std::string> owners;      ///< Per partition.
  std::vector<std::int64_t> epochs;     ///< Per partition; 0: never fenced.
  std::int64_t revision = 0;            ///< etcd's: each claim takes the next.
  std::size_t nodes_made = 0;

  engine::engine_options options;
  /// With shuffled answers, instances answer late and out of order (shuffling_host);
  /// otherwise at once.
  bool shuffle_answers = false;
  std::vector<shuffling_host*> hosts;  ///< Owned by the engines; null without shuffling.

  world(std::uint32_t partitions, std::uint64_t seed, engine::engine_options engine_options = {},
        bool shuffled = false)
      : partition_count(partitions), random(seed), options(engine_options), shuffle_answers(shuffled) {
    for (std::uint32_t p = 0; p < partitions; ++p) {
      disks.push_back(store::open_memory());
      engines.emplace_back();
      hosts.push_back(nullptr);
      epochs.push_back(0);
      owners.emplace_back();
      open(p);
    }
  }

  /// Lets up to `count` held answers of partition p through.
  void answer(std::uint32_t p, std::size_t count) {
    for (std::size_t i = 0; i < count && hosts[p] && hosts[p]->answer_one(random); ++i) {
    }
  }

  void answer_all() {
    for (std::uint32_t p = 0; p < partition_count; ++p) answer(p, SIZE_MAX);
  }

  void open(std::uint32_t p) {
    auto made = store::partition_store::open(std::make_unique<shared_disk>(disks[p]),
                                             {"sim", p, partition_count});
    REQUIRE(made);
    if (epochs[p] > 0) {
      auto fenced = (*made)->fence(epochs[p]);
      REQUIRE_MESSAGE(fenced, (fenced ? "" : fenced.error().message));
    }
    auto draw = [this] { return fmt::format("{:016x}{:016x}", random(), random()); };
    std::unique_ptr<shuffling_host> host;
    if (shuffle_answers) host = std::make_unique<shuffling_host>();
    hosts[p] = host.get();
    auto opened = engine::partition_engine::open(std::move(*made), options, draw, now, std::move(host));
    REQUIRE_MESSAGE(opened, (opened ? "" : opened.error().message));
    engines[p] = std::move(*opened);
  }

  engine::partition_engine& owner(const std::string& id) {
    return *engines[core::partition_of(id, partition_count)];
  }

  /// Everything not committed is lost; connections to and from it reset.
  void crash(std::uint32_t p) {
    ++count.partition_crashes;
    hosts[p] = nullptr;
    engines[p].reset();  // Its held answers go with it.
    open(p);
    for (auto& [key, l] : links) {
      if (key.first == p || key.second == p) {
        l.messages.clear();
        l.receipts.clear();
        l.broken = true;
      }
    }
  }

  /// Partition p changes owner. Planned: the old owner commits what it holds
  /// first. Not planned (its node died, or lost its lease): the new owner fences the
  /// store while the old one still runs, and the old one's next commits must be
  /// refused, releasing nothing; what it had not committed is lost, as in a crash.
  void move(std::uint32_t p, bool planned) {
    if (planned) {
      commit(p);
      ++count.planned_moves;
    } else {
      ++count.takeovers;
    }
    hosts[p] = nullptr;
    auto old = std::move(engines[p]);
    epochs[p] = ++revision;
    open(p);
    while (auto batch = old->take_batch()) {
      auto written = old->store().commit(batch->second, now);
      REQUIRE_MESSAGE(!written, "partition " << p << ": a commit of a former owner went through after the new "
                                            << "owner fenced the store");
      CHECK(written.error().code == errc::failed_precondition);
      ++count.fenced_commits;
    }
    old.reset();
    for (auto& [key, l] : links) {
      if (key.first == p || key.second == p) {
        l.messages.clear();
        l.receipts.clear();
        l.broken = true;
      }
    }
  }

  /// The live node that should own partition p (rendezvous hashing).
  std::string wanted_owner(std::uint32_t p) const {
    std::string best;
    std::size_t best_score = 0;
    for (const auto& node : nodes) {
      const auto score = std::hash<std::string>{}(fmt::format("{}/{}", node, p));
      if (best.empty() || score > best_score) {
        best = node;
        best_score = score;
      }
    }
    return best;
  }

  /// Starts following nodes: `count` nodes, every partition claimed (and fenced).
  void enable_nodes(std::size_t count) {
    nodes_enabled = true;
    for (std::size_t i = 0; i < count; ++i) nodes.push_back(fmt::format("n{}", nodes_made++));
    rebalance(true);
  }

  /// Every partition whose wanted owner changed moves to it.
  void rebalance(bool planned) {
    for (std::uint32_t p = 0; p < partition_count; ++p) {
      const auto wanted = wanted_owner(p);
      if (owners[p] == wanted) continue;
      owners[p] = wanted;
      move(p, planned);
    }
  }

  /// A node joins, leaves (handing its partitions over) or dies (they are taken
  /// over after its lease); at least one node stays.
  void change_nodes() {
    if (!nodes_enabled) return;
    ++count.node_changes;
    const auto roll = random() % 3;
    if (roll == 0 || nodes.size() == 1) {
      nodes.push_back(fmt::format("n{}", nodes_made++));
      rebalance(true);  // Those it takes are handed over.
      return;
    }
    nodes.erase(nodes.begin() + static_cast<long>(random() % nodes.size()));
    rebalance(roll == 1);  // 1: a planned leave; 2: it died.
  }

  void commit(std::uint32_t p) {
    auto& engine = *engines[p];
    while (auto batch = engine.take_batch()) {
      ++count.commits;
      auto written = engine.store().commit(batch->second, now);
      REQUIRE_MESSAGE(written, (written ? "" : written.error().message));
      auto released = engine.batch_committed(batch->first);
      for (auto& entry : released.outbound) {
        auto& l = links[{p, entry.destination_partition}];
        if (!l.broken) l.messages.push_back(std::move(entry));
      }
      for (auto [source, sequence] : released.receipts) {
        auto& l = links[{source, p}];
        if (!l.broken) l.receipts.push_back(sequence);
      }
    }
  }

  void commit_all() {
    for (std::uint32_t p = 0; p < partition_count; ++p) commit(p);
  }

  /// Delivers one message or receipt on a link; `drop` loses it and breaks the link.
  void deliver(std::pair<std::uint32_t, std::uint32_t> key, bool drop) {
    auto& l = links[key];
    if (l.broken) return;
    if (drop && (!l.messages.empty() || !l.receipts.empty())) {
      ++count.links_broken;
      l.messages.clear();
      l.receipts.clear();
      l.broken = true;
      return;
    }
    if (!l.messages.empty()) {
      ++count.deliveries;
      auto entry = std::move(l.messages.front());
      l.messages.pop_front();
      engines[key.second]->receive(entry, now, [](expected<std::uint64_t> received) { REQUIRE(received); });
    } else if (!l.receipts.empty()) {
      engines[key.first]->outbound_acknowledged(key.second, l.receipts.front());
      l.receipts.pop_front();
    }
  }

  /// A new connection: the source resends everything unacknowledged, in order.
  void reconnect(std::pair<std::uint32_t, std::uint32_t> key) {
    auto& l = links[key];
    if (!l.broken) return;
    l = link{};
    for (auto& entry : engines[key.first]->unacknowledged_outbox()) {
      if (entry.destination_partition == key.second) l.messages.push_back(std::move(entry));
    }
  }

  void pull_work(std::uint32_t p) {
    if (auto item = engines[p]->next_orchestrator_item(now)) orchestrator_items.emplace_back(p, std::move(*item));
    if (auto item = engines[p]->next_activity_item()) activity_items.emplace_back(p, std::move(*item));
  }

  /// A worker finishes (or, crashing, gives back) one outstanding item. Answers to a
  /// partition that restarted since are refused as stale, as they must be.
  void work_one(bool crash_worker) {
    if (!orchestrator_items.empty() && (activity_items.empty() || random() % 2)) {
      auto index = random() % orchestrator_items.size();
      auto [p, item] = std::move(orchestrator_items[index]);
      orchestrator_items.erase(orchestrator_items.begin() + static_cast<long>(index));
      if (crash_worker) {
        ++count.worker_crashes;
        engines[p]->abandon_orchestrator(item.instance_id, item.completion_token, [](expected<void>) {});
        return;
      }
      engines[p]->complete_orchestrator({item.instance_id, item.completion_token, decide(item), {}}, now,
                                        [this](expected<std::uint64_t> answered) {
                                          if (!answered) ++count.refused_answers;
                                        });
    } else if (!activity_items.empty()) {
      auto index = random() % activity_items.size();
      auto [p, item] = std::move(activity_items[index]);
      activity_items.erase(activity_items.begin() + static_cast<long>(index));
      if (crash_worker) {
        ++count.worker_crashes;
        (void)engines[p]->abandon_activity(item.request, item.completion_token);
        return;
      }
      engines[p]->complete_activity(run_activity(item), now, [this](expected<std::uint64_t> answered) {
        if (!answered) ++count.refused_answers;
      });
    }
  }

  void tick(std::int64_t advance_ns) {
    now += advance_ns;
    for (auto& engine : engines) engine->fire_due_timers(now);
  }

  expected<std::optional<core::orchestration_state>> stored(const std::string& id) {
    return owner(id).store().load_instance(id);
  }
};

/// Replays partition p's log into a fresh engine over an empty store and checks that
/// every instance comes out the same. Returns how many instances were compared.
inline std::size_t replay_matches(world& w, std::uint32_t p) {
  auto& live = w.engines[p]->store();
  auto made = store::partition_store::open(store::open_memory(), live.identity());
  REQUIRE(made);
  auto replica = engine::partition_engine::open(std::move(*made), {}, [] { return std::string(); }, 0);
  REQUIRE(replica);
  auto log = live.read_log(1, 10'000'000);
  REQUIRE(log);
  for (const auto& record : *log) {
    for (const auto& event : record.events) {
      auto replayed = (*replica)->replay(event);
      REQUIRE_MESSAGE(replayed, (replayed ? "" : replayed.error().message));
    }
    if (auto batch = (*replica)->take_batch()) {
      REQUIRE((*replica)->store().commit(batch->second, record.committed_at_ns));
      (*replica)->batch_committed(batch->first);
    }
  }
  std::size_t compared = 0;
  core::instance_query all;
  all.page_size = core::query_page_size_max;
  for (;;) {
    auto page = live.query(all);
    REQUIRE(page);
    for (const auto& record : page->instances) {
      auto original = live.load_instance(record.instance_id);
      auto rebuilt = (*replica)->store().load_instance(record.instance_id);
      REQUIRE(original);
      REQUIRE(rebuilt);
      REQUIRE_MESSAGE(rebuilt->has_value(), record.instance_id);
      CHECK_MESSAGE((*rebuilt)->record == (*original)->record, record.instance_id);
      CHECK_MESSAGE((*rebuilt)->history == (*original)->history, record.instance_id);
      CHECK_MESSAGE((*rebuilt)->inbox == (*original)->inbox, record.instance_id);
      ++compared;
    }
    if (page->continuation_token.empty()) break;
    all.continuation_token = page->continuation_token;
  }
  return compared;
}

/// Each task, sub-orchestration and timer was scheduled once and answered once, and
/// the execution started and completed once.
inline void check_well_formed(const core::orchestration_state& state) {
  namespace ev = core::events;
  INFO("instance " << state.record.instance_id);
  std::map<std::int32_t, int> scheduled, answered;
  int starts = 0, completions = 0;
  for (const auto& event : state.history) {
    if (std::holds_alternative<ev::execution_started>(event.body)) ++starts;
    if (std::holds_alternative<ev::execution_completed>(event.body)) ++completions;
    if (std::holds_alternative<ev::task_scheduled>(event.body) ||
        std::holds_alternative<ev::sub_orchestration_created>(event.body) ||
        std::holds_alternative<ev::timer_created>(event.body)) {
      ++scheduled[event.event_id];
    }
    std::optional<std::int32_t> answer;
    if (const auto* e = std::get_if<ev::task_completed>(&event.body)) answer = e->task_scheduled_id;
    if (const auto* e = std::get_if<ev::task_failed>(&event.body)) answer = e->task_scheduled_id;
    if (const auto* e = std::get_if<ev::sub_orchestration_completed>(&event.body)) answer = e->task_scheduled_id;
    if (const auto* e = std::get_if<ev::sub_orchestration_failed>(&event.body)) answer = e->task_scheduled_id;
    if (const auto* e = std::get_if<ev::timer_fired>(&event.body)) answer = e->timer_id;
    if (answer) ++answered[*answer];
  }
  CHECK(starts == 1);
  CHECK(completions == 1);
  CHECK(scheduled == answered);
  for (const auto& [id, count] : scheduled) CHECK_MESSAGE(count == 1, "task " << id);
}

}  // namespace sim
