#include <doctest/doctest.h>

#include "sim_world.hpp"

using namespace dtsd;
using namespace sim;

namespace {

core::start_request request(std::string id, std::string name = "HelloCities") {
  core::start_request r;
  r.instance_id = std::move(id);
  r.name = std::move(name);
  r.replaceable_statuses = core::terminal_statuses();
  return r;
}

/// Commits, pulls and works until nothing moves (no faults).
void run_to_quiet(world& w, int rounds_max = 1000) {
  for (int round = 0; round < rounds_max; ++round) {
    w.commit_all();
    for (auto& [key, l] : w.links) {
      while (!l.messages.empty() || !l.receipts.empty()) w.deliver(key, false);
    }
    for (std::uint32_t p = 0; p < w.partition_count; ++p) w.pull_work(p);
    if (w.orchestrator_items.empty() && w.activity_items.empty()) {
      bool open = false;
      for (auto& engine : w.engines) open = open || engine->has_open_batch();
      if (!open) return;
    }
    while (!w.orchestrator_items.empty() || !w.activity_items.empty()) w.work_one(false);
  }
  FAIL("the world did not come to rest");
}

}  // namespace

TEST_CASE("engine: a start is acknowledged with its batch and its work appears only once that batch is durable") {
  world w(1, 1);
  auto& engine = *w.engines[0];
  auto started = engine.start(request("order-1"), w.now);
  REQUIRE(started);
  CHECK(started->execution_id.size() == 32);
  CHECK(started->batch == engine.open_batch_number());
  CHECK_FALSE(engine.next_orchestrator_item(w.now));  // Not durable yet.
  auto batch = engine.take_batch();
  REQUIRE(batch);
  CHECK(batch->first == started->batch);
  CHECK_FALSE(engine.next_orchestrator_item(w.now));  // Being written, still not durable.
  REQUIRE(engine.store().commit(batch->second, w.now));
  engine.batch_committed(batch->first);
  auto item = engine.next_orchestrator_item(w.now);
  REQUIRE(item);
  // OrchestratorStarted (the orchestrator's current time), then ExecutionStarted.
  REQUIRE(item->new_events.size() == 2);
  CHECK(std::holds_alternative<core::events::orchestrator_started>(item->new_events[0].body));
  CHECK(item->new_events[0].timestamp_ns == w.now);
  CHECK(std::holds_alternative<core::events::execution_started>(item->new_events[1].body));
}

TEST_CASE("engine: an event that is not yet durable is held back from the work item") {
  world w(1, 2);
  auto& engine = *w.engines[0];
  REQUIRE(engine.start(request("order-1"), w.now));
  w.commit(0);
  REQUIRE(engine.raise_event("order-1", "Approval", std::string("true"), w.now));
  auto item = engine.next_orchestrator_item(w.now);
  REQUIRE(item);
  CHECK(item->new_events.size() == 2);  // OrchestratorStarted, ExecutionStarted: the event is not on disk.
  REQUIRE(engine.complete_orchestrator({"order-1", item->completion_token, {}, {}}, w.now));
  CHECK_FALSE(engine.next_orchestrator_item(w.now));
  w.commit(0);
  auto next = engine.next_orchestrator_item(w.now);
  REQUIRE(next);
  REQUIRE(next->new_events.size() == 2);
  CHECK(std::holds_alternative<core::events::event_raised>(next->new_events[1].body));
}

TEST_CASE("engine: hello cities, a fan-out across partitions and a durable timer complete with exact output") {
  world w(4, 3);
  std::vector<std::pair<std::string, std::string>> runs = {
      {"hello-1", "HelloCities"}, {"fan-1", "FanOut"}, {"fan-2", "FanOut"}, {"sleepy-1", "Sleepy"}};
  for (auto& [id, name] : runs) REQUIRE(w.owner(id).start(request(id, name), w.now));
  run_to_quiet(w);
  w.tick(2 * second_ns);
  run_to_quiet(w);
  for (auto& [id, name] : runs) {
    auto state = w.stored(id);
    REQUIRE(state);
    REQUIRE(state->has_value());
    CHECK_MESSAGE((*state)->record.status == core::runtime_status::completed, id);
    CHECK((*state)->record.output == core::payload(expected_output(name)));
  }
  // The children of the fan-outs live in their own partitions and are done too.
  auto child = w.stored("fan-1:child-2");
  REQUIRE(child);
  REQUIRE(child->has_value());
  CHECK((*child)->record.parent->instance.instance_id == "fan-1");
  CHECK((*child)->record.output == core::payload(hello_output()));
}

TEST_CASE("engine: partitions opened at the same moment never give the same token, nor does a restarted one") {
  // The coordinator holds leases by token for the whole hub.
  world w(4, 1);
  std::set<std::uint64_t> tokens;
  auto take_all = [&] {
    for (std::uint32_t p = 0; p < 4; ++p) {
      while (auto item = w.engines[p]->next_orchestrator_item(w.now)) {
        CHECK(tokens.insert(item->completion_token).second);
        REQUIRE(w.engines[p]->abandon_orchestrator(item->instance_id, item->completion_token));
        break;
      }
    }
  };
  for (int i = 0; i < 40; ++i) REQUIRE(w.owner(fmt::format("t-{}", i)).start(request(fmt::format("t-{}", i)), w.now));
  w.commit_all();
  for (int round = 0; round < 5; ++round) take_all();
  w.tick(1'000'000);  // A millisecond later, partition 0 restarts.
  w.crash(0);
  w.commit_all();
  for (int round = 0; round < 5; ++round) take_all();
  CHECK(tokens.size() >= 40);
}

TEST_CASE("engine: the longest wait for a worker is known per kind and ends when the work is handed out") {
  world w(1, 4);
  auto& engine = *w.engines[0];
  CHECK_FALSE(engine.backlog().orchestrators_since_ns);
  const auto started_at = w.now;
  REQUIRE(engine.start(request("order-1"), w.now));
  w.commit(0);
  CHECK(engine.backlog().orchestrators_since_ns == started_at);
  w.now += 5'000'000;
  auto item = engine.next_orchestrator_item(w.now);
  REQUIRE(item);
  CHECK_FALSE(engine.backlog().orchestrators_since_ns);
  REQUIRE(engine.complete_orchestrator({"order-1", item->completion_token, decide(*item), {}}, w.now));
  CHECK_FALSE(engine.backlog().activities_since_ns);  // Not durable yet: not waiting.
  w.commit(0);
  CHECK(engine.backlog().activities_since_ns == w.now);
  auto activity = engine.next_activity_item();
  REQUIRE(activity);
  CHECK_FALSE(engine.backlog().activities_since_ns);
  // Given back, it waits again, from then.
  w.now += 1'000'000;
  engine.prepare(w.now);
  REQUIRE(engine.abandon_activity(activity->request, activity->completion_token));
  CHECK(engine.backlog().activities_since_ns == w.now);
  CHECK_FALSE(engine.backlog().entities_since_ns);
}

TEST_CASE("engine: a stale activity token is refused and an abandoned activity is offered again") {
  world w(1, 4);
  auto& engine = *w.engines[0];
  REQUIRE(engine.start(request("order-1"), w.now));
  w.commit(0);
  auto item = engine.next_orchestrator_item(w.now);
  REQUIRE(item);
  REQUIRE(engine.complete_orchestrator({"order-1", item->completion_token, decide(*item), {}}, w.now));
  w.commit(0);
  auto activity = engine.next_activity_item();
  REQUIRE(activity);
  auto stale = run_activity(*activity);
  stale.completion_token += 1;
  auto refused = engine.complete_activity(stale, w.now);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::stale_token);
  CHECK_FALSE(engine.has_open_batch());  // Nothing changed.

  REQUIRE(engine.abandon_activity(activity->request, activity->completion_token));
  auto again = engine.next_activity_item();
  REQUIRE(again);
  CHECK(again->request == activity->request);
  CHECK(again->completion_token != activity->completion_token);
  CHECK_FALSE(engine.complete_activity(run_activity(*activity), w.now));  // The old lease is gone.
  REQUIRE(engine.complete_activity(run_activity(*again), w.now));
}

TEST_CASE("engine: after a crash only what was never committed is lost, and the work finishes") {
  world w(2, 5);
  REQUIRE(w.owner("hello-1").start(request("hello-1"), w.now));
  REQUIRE(w.owner("fan-1").start(request("fan-1", "FanOut"), w.now));
  w.commit_all();
  for (int round = 0; round < 3; ++round) {
    for (std::uint32_t p = 0; p < 2; ++p) w.pull_work(p);
    while (!w.orchestrator_items.empty() || !w.activity_items.empty()) w.work_one(false);
  }
  // Uncommitted progress and the work items in flight die with the partitions.
  for (std::uint32_t p = 0; p < 2; ++p) w.pull_work(p);
  w.crash(0);
  w.crash(1);
  while (!w.orchestrator_items.empty() || !w.activity_items.empty()) w.work_one(false);
  for (auto& [key, l] : w.links) w.reconnect(key);
  run_to_quiet(w);
  for (const char* id : {"hello-1", "fan-1"}) {
    auto state = w.stored(id);
    REQUIRE(state);
    REQUIRE(state->has_value());
    CHECK_MESSAGE((*state)->record.status == core::runtime_status::completed, id);
  }
}

/// A fan-out started in partition 0 of `w` and run one step: the messages its
/// commit sent to partition 1 (messages to its own partition go through the
/// outbox too; these tests are about the other one).
std::vector<store::outbox_entry> fan_out_from_partition_0(world& w) {
  std::string parent = "fan-0";
  for (int i = 0; core::partition_of(parent, 2) != 0; ++i) parent = "fan-" + std::to_string(i);
  REQUIRE(w.owner(parent).start(request(parent, "FanOut"), w.now));
  w.commit_all();
  w.pull_work(0);
  REQUIRE(w.orchestrator_items.size() == 1);
  w.work_one(false);
  w.commit(0);
  auto outbox = w.engines[0]->unacknowledged_outbox();
  std::erase_if(outbox, [](const store::outbox_entry& entry) { return entry.destination_partition != 1; });
  return outbox;
}

TEST_CASE("engine: a message resent to another partition is applied once") {
  world w(2, 6);
  auto outbox = fan_out_from_partition_0(w);
  REQUIRE_FALSE(outbox.empty());
  for (const auto& entry : outbox) {
    REQUIRE(w.engines[1]->receive(entry, w.now));
    REQUIRE(w.engines[1]->receive(entry, w.now));  // The resend changes nothing more.
  }
  w.commit(1);
  auto child = w.engines[1]->store().load_instance(std::get<core::start_request>(outbox[0].message.body).instance_id);
  REQUIRE(child);
  REQUIRE(child->has_value());
  CHECK((*child)->inbox.size() == 1);  // One ExecutionStarted, not two.
  // Receipts trim the sender's outbox.
  w.engines[0]->outbound_acknowledged(1, outbox.back().sequence);
  w.commit(0);
  auto to_partition_1 = [](const store::outbox_entry& entry) { return entry.destination_partition == 1; };
  const auto left = w.engines[0]->unacknowledged_outbox();
  CHECK(std::none_of(left.begin(), left.end(), to_partition_1));
  auto recovered = w.engines[0]->store().recover();
  REQUIRE(recovered);
  CHECK(std::none_of(recovered->outbox.begin(), recovered->outbox.end(), to_partition_1));
}

TEST_CASE("engine: a message that overtook an earlier one of its source waits for it (a link between nodes lost it)") {
  world w(2, 6);
  auto outbox = fan_out_from_partition_0(w);
  REQUIRE(outbox.size() >= 2);
  CHECK(outbox[1].previous == outbox[0].sequence);  // Each names the one before it.
  auto child_of = [&](const store::outbox_entry& entry) {
    auto child = w.engines[1]->store().load_instance(std::get<core::start_request>(entry.message.body).instance_id);
    REQUIRE(child);
    return child->has_value();
  };
  // The second arrives first: not applied (applying it would hide the first as a
  // duplicate), and not acknowledged.
  REQUIRE(w.engines[1]->receive(outbox[1], w.now));
  w.commit(1);
  CHECK_FALSE(child_of(outbox[1]));
  // Sent again in order, both are applied, once.
  for (const auto& entry : outbox) REQUIRE(w.engines[1]->receive(entry, w.now));
  w.commit(1);
  for (const auto& entry : outbox) CHECK(child_of(entry));
}

TEST_CASE("engine: replaying a partition's log rebuilds the same instances") {
  world w(2, 7);
  for (const char* id : {"hello-1", "hello-2", "fan-1"}) {
    REQUIRE(w.owner(id).start(request(id, std::string(id).starts_with("fan") ? "FanOut" : "HelloCities"), w.now));
  }
  run_to_quiet(w);
  REQUIRE(w.owner("hello-2").terminate("hello-2", {std::string("late"), false}, w.now).error().code ==
          errc::failed_precondition);
  for (std::uint32_t p = 0; p < 2; ++p) CHECK(replay_matches(w, p) > 0);
}

TEST_CASE("engine: idle instances are evicted past the cache limit and reload whole when touched") {
  engine::engine_options small;
  small.instance_cache_count_max = 4;
  world w(1, 8, small);
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back("hello-" + std::to_string(i));
    REQUIRE(w.engines[0]->start(request(ids.back()), w.now));
  }
  run_to_quiet(w);
  CHECK(w.engines[0]->cached_instance_count() <= 4);
  for (const auto& id : ids) {
    auto state = w.stored(id);
    REQUIRE(state);
    REQUIRE(state->has_value());
    CHECK_MESSAGE((*state)->record.output == core::payload(hello_output()), id);
  }
  // An evicted instance still answers from the engine's view.
  auto record = w.engines[0]->get_instance(ids.front());
  REQUIRE(record);
  REQUIRE(record->has_value());
  CHECK((*record)->status == core::runtime_status::completed);
}

TEST_CASE("engine: an instance leaves memory once its end is durable; one still running stays") {
  world w(1, 9);
  REQUIRE(w.engines[0]->start(request("ends"), w.now));
  REQUIRE(w.engines[0]->start(request("waits", "Sleepy"), w.now));  // Waits for a timer.
  run_to_quiet(w);
  auto ended = w.stored("ends");
  REQUIRE(ended);
  REQUIRE(ended->has_value());
  CHECK((*ended)->record.status == core::runtime_status::completed);
  CHECK(w.engines[0]->cached_instance_count() == 1);  // "waits" only.
  // Read again whole from the store when asked.
  auto record = w.engines[0]->get_instance("ends");
  REQUIRE(record);
  REQUIRE(record->has_value());
  CHECK((*record)->output == core::payload(hello_output()));
}

TEST_CASE("engine: instances idle for a whole sweep period stop being live; busy ones stay") {
  world w(1, 9);
  // Waiting for their timers: idle, not ended.
  for (const char* id : {"idle-1", "idle-2"}) REQUIRE(w.engines[0]->start(request(id, "Sleepy"), w.now));
  run_to_quiet(w);
  REQUIRE(w.engines[0]->cached_instance_count() == 2);
  // A third one is started but its work never taken: it has work to give.
  REQUIRE(w.engines[0]->start(request("busy-1"), w.now));
  w.commit_all();
  REQUIRE(w.engines[0]->cached_instance_count() == 3);
  w.engines[0]->evict_untouched();  // Everything was touched in this period.
  CHECK(w.engines[0]->cached_instance_count() == 3);
  w.engines[0]->evict_untouched();  // The idle ones were not touched since.
  CHECK(w.engines[0]->cached_instance_count() == 1);
  // Made live again from the store when asked, whole.
  auto record = w.engines[0]->get_instance("idle-1");
  REQUIRE(record);
  REQUIRE(record->has_value());
  CHECK((*record)->status == core::runtime_status::running);
  CHECK(w.engines[0]->cached_instance_count() == 2);
  // Its timer fires after the eviction: it goes on from the store and ends.
  w.tick(2 * second_ns);
  run_to_quiet(w);
  auto woke = w.stored("idle-1");
  REQUIRE(woke);
  REQUIRE(woke->has_value());
  CHECK((*woke)->record.status == core::runtime_status::completed);
  CHECK((*woke)->record.output == core::payload(expected_output("Sleepy")));
  auto busy = w.stored("busy-1");
  REQUIRE(busy);
  REQUIRE(busy->has_value());
  CHECK((*busy)->record.status == core::runtime_status::completed);
}

namespace {

/// Runs each operation on its instance at once but holds the answers back until
/// released, in any order: how instance actors on several threads can answer.
class held_host final : public engine::instance_host {
 public:
  bool holding = false;
  std::vector<std::pair<std::uint64_t, engine::instance_outcome>> held;

  void run(const std::string& id, std::uint64_t number, engine::instance_op op) override {
    auto outcome = live_.perform(id, op, load_, limits_);
    if (holding) {
      held.emplace_back(number, std::move(outcome));
    } else {
      answer_(number, std::move(outcome));
    }
  }
  void evict(const std::string& id) override { live_.erase(id); }
  /// Lets held answer `i` through.
  void release(std::size_t i) { answer_(held[i].first, std::move(held[i].second)); }

 private:
  engine::local_instances live_;
};

/// One partition over a memory store whose instances answer through a held_host.
struct held_partition {
  std::int64_t now = 1'000'000'000;
  int ids = 0;
  held_host* held = nullptr;
  std::unique_ptr<engine::partition_engine> engine;

  held_partition() {
    auto made = store::partition_store::open(store::open_memory(), {"held", 0, 1});
    REQUIRE(made);
    auto host = std::make_unique<held_host>();
    held = host.get();
    auto opened = engine::partition_engine::open(std::move(*made), {}, [this] { return fmt::format("{:032}", ++ids); },
                                                 now, std::move(host));
    REQUIRE(opened);
    engine = std::move(*opened);
  }

  /// Commits every batch that can be sealed; returns the messages they released.
  std::vector<store::outbox_entry> commit() {
    std::vector<store::outbox_entry> sent;
    while (auto batch = engine->take_batch()) {
      REQUIRE(engine->store().commit(batch->second, now));
      auto released = engine->batch_committed(batch->first);
      for (auto& entry : released.outbound) sent.push_back(std::move(entry));
    }
    return sent;
  }
};

}  // namespace

TEST_CASE("engine: messages get outbox sequences in commit order even when answers come back out of order") {
  held_partition p;
  auto& engine = *p.engine;
  auto& held = *p.held;
  const auto now = p.now;
  auto commit = [&p] { return p.commit(); };
  for (const char* id : {"parent-1", "parent-2"}) REQUIRE(engine.start(request(id, "FanOut"), now));
  commit();
  auto first = engine.next_orchestrator_item(now);
  auto second = engine.next_orchestrator_item(now);
  REQUIRE(first);
  REQUIRE(second);
  auto spawning = [](const core::orchestrator_work_item& item) {
    core::actions::create_sub_orchestration child;
    child.instance_id = item.instance_id + ":child";
    child.name = "HelloCities";
    return core::orchestrator_completion{item.instance_id, item.completion_token, {{0, std::move(child)}}, {}};
  };

  held.holding = true;
  std::vector<std::uint64_t> batches;
  engine.complete_orchestrator(spawning(*first), now, [&](expected<std::uint64_t> b) { batches.push_back(b.value()); });
  CHECK_FALSE(engine.take_batch());  // Closed, but its answer is not in: nothing to write yet.
  engine.complete_orchestrator(spawning(*second), now, [&](expected<std::uint64_t> b) { batches.push_back(b.value()); });
  REQUIRE(held.held.size() == 2);
  held.holding = false;
  held.release(1);  // The later batch's answer first.
  held.release(0);
  REQUIRE(batches.size() == 2);
  CHECK(batches[0] > batches[1]);  // Answered in that order, each into its own batch.

  auto sent = commit();
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].sequence < sent[1].sequence);
  CHECK(std::get<core::start_request>(sent[0].message.body).instance_id == first->instance_id + ":child");
  // Delivered in commit order, both apply: neither looks like a resend of the other.
  for (const auto& entry : sent) REQUIRE(engine.receive(entry, now));
  commit();
  for (const auto* parent : {&*first, &*second}) {
    auto child = engine.store().load_instance(parent->instance_id + ":child");
    REQUIRE(child);
    CHECK_MESSAGE(child->has_value(), parent->instance_id);
  }
}

TEST_CASE("engine: an activity lease cannot be given back while its answer is with the instance") {
  held_partition p;
  auto& engine = *p.engine;
  auto& held = *p.held;
  const auto now = p.now;
  auto commit = [&p] { p.commit(); };
  REQUIRE(engine.start(request("order-9"), now));
  commit();
  auto item = engine.next_orchestrator_item(now);
  REQUIRE(item);
  core::actions::schedule_task task;
  task.name = "SayHello";
  task.input = "\"Tokyo\"";
  REQUIRE(engine.complete_orchestrator({item->instance_id, item->completion_token, {{0, std::move(task)}}, {}}, now));
  commit();
  auto activity = engine.next_activity_item();
  REQUIRE(activity);

  held.holding = true;
  std::optional<expected<std::uint64_t>> answered;
  engine.complete_activity({activity->request.instance_id, activity->request.execution_id, activity->request.task_id,
                            activity->completion_token, core::payload("\"Hello, Tokyo!\"")},
                           now, [&answered](expected<std::uint64_t> result) { answered = std::move(result); });
  REQUIRE(held.held.size() == 1);
  // The lease expires, or the worker's session closes, before the instance answers.
  auto given_back = engine.abandon_activity(activity->request, activity->completion_token);
  REQUIRE_FALSE(given_back);
  CHECK(given_back.error().code == errc::stale_token);
  CHECK_FALSE(engine.next_activity_item());  // Not queued again.
  held.holding = false;
  held.release(0);
  REQUIRE(answered);
  REQUIRE(*answered);
  commit();
  auto stored = engine.store().load_instance("order-9");
  REQUIRE(stored);
  REQUIRE(stored->has_value());
  bool result_stored = false;
  for (const auto& event : (*stored)->inbox) {
    result_stored = result_stored || std::holds_alternative<core::events::task_completed>(event.body);
  }
  CHECK(result_stored);
  auto recovered = engine.store().recover();
  REQUIRE(recovered);
  CHECK(recovered->activities.empty());
}

TEST_CASE("engine: a filtered take parks what it does not accept, and an accepting take gets it back") {
  world w(1, 5);
  auto& engine = *w.engines[0];
  REQUIRE(engine.start(request("a-1", "Sleepy"), w.now));
  REQUIRE(engine.start(request("b-1", "HelloCities"), w.now));
  w.commit(0);
  const core::kind_filter only_a = std::vector<core::name_filter>{{"Sleepy", {}}};
  const core::kind_filter only_b = std::vector<core::name_filter>{{"HelloCities", {}}};

  auto taken = engine.take_work(false, 10, w.now, only_a);
  REQUIRE(taken.size() == 1);
  CHECK(taken[0].instance_id == "a-1");
  CHECK(taken[0].name == "Sleepy");
  // HelloCities waits aside: not offered, not announced, but known to be parked.
  CHECK(engine.has_parked_orchestrators());
  CHECK_FALSE(engine.may_have_orchestrator_work());
  CHECK(engine.take_work(false, 10, w.now, only_a).empty());

  // A take that accepts HelloCities makes it ready again: it is prepared and given out.
  auto again = engine.take_work(false, 10, w.now, only_b);
  REQUIRE(again.size() == 1);
  CHECK(again[0].instance_id == "b-1");
  CHECK_FALSE(engine.has_parked_orchestrators());
  // Its parked dispatch was given back first: the new item completes normally.
  REQUIRE(engine.complete_orchestrator({"b-1", again[0].completion_token, decide(again[0]), {}}, w.now));
  w.commit(0);

  // Activities park by name the same way; an unversioned one matches any version list.
  const core::kind_filter say_hello_v2 = std::vector<core::name_filter>{{"SayHello", {"2"}}};
  const core::kind_filter nothing = std::vector<core::name_filter>{};
  CHECK(engine.take_activities(10, nothing).empty());
  CHECK(engine.has_parked_activities());
  CHECK_FALSE(engine.has_activity_work());
  auto activities = engine.take_activities(10, say_hello_v2);
  REQUIRE(activities.size() == 1);
  CHECK(activities[0].request.name == "SayHello");
  CHECK_FALSE(engine.has_parked_activities());
}

TEST_CASE("work filters: names, versions and kinds") {
  using core::filter_kind;
  const core::kind_filter everything;
  const core::kind_filter strict = std::vector<core::name_filter>{{"Order", {"2", "3"}}, {"Any", {}}};
  CHECK(core::accepts(everything, "Whatever", std::nullopt));
  CHECK(core::accepts(strict, "Order", core::payload("2")));
  CHECK_FALSE(core::accepts(strict, "Order", core::payload("1")));
  CHECK_FALSE(core::accepts(strict, "Order", std::nullopt));  // An unversioned orchestration is not version 2.
  CHECK(core::accepts(strict, "Order", std::nullopt, filter_kind::activity));  // Activities: unversioned fits.
  CHECK(core::accepts(strict, "Any", core::payload("9")));
  CHECK_FALSE(core::accepts(strict, "order", core::payload("2")));  // Names are exact...
  const core::kind_filter counters = std::vector<core::name_filter>{{"Counter", {}}};
  CHECK(core::accepts(counters, "counter", std::nullopt, filter_kind::entity));  // ...but entity names are not.

  core::kind_filter wide = std::vector<core::name_filter>{};
  core::widen(wide, strict);
  CHECK(core::accepts(wide, "Any", std::nullopt));
  core::widen(wide, everything);
  CHECK_FALSE(wide.has_value());

  core::work_filters bad;
  bad.activities = std::vector<core::name_filter>{{"", {}}};
  CHECK_FALSE(core::validate(bad));
  bad.activities = std::vector<core::name_filter>{{"x", std::vector<std::string>(core::filter_versions_max + 1, "v")}};
  CHECK_FALSE(core::validate(bad));
}

TEST_CASE("engine: retention purges ended orchestrations once their status's time is up; the policy survives a crash") {
  engine::engine_options options;
  options.default_retention.fallback = core::retention_rule{false, 3600};  // dtsd's default: an hour.
  options.retention_purges_max = 2;  // Several rounds for three.
  world w(1, 11, options);
  auto& first = *w.engines[0];
  CHECK_FALSE(first.retention_is_own());
  CHECK(first.retention().keep_s(core::runtime_status::completed) == 3600);
  for (const char* id : {"done-1", "done-2", "done-3", "stopped-1"}) REQUIRE(first.start(request(id), w.now));
  REQUIRE(first.start(request("sleepy-1", "Sleepy"), w.now));
  REQUIRE(first.terminate("stopped-1", {std::string("enough"), false}, w.now));
  run_to_quiet(w);
  REQUIRE((*w.stored("done-1"))->record.status == core::runtime_status::completed);
  REQUIRE((*w.stored("stopped-1"))->record.status == core::runtime_status::terminated);
  REQUIRE((*w.stored("sleepy-1"))->record.status == core::runtime_status::running);  // Waits on its timer.

  // The hub's own policy: Completed after 10 s, Terminated never, the rest after a day.
  core::retention_policy policy;
  policy.fallback = core::retention_rule{false, 86400};
  policy.by_status[core::runtime_status::completed] = {false, 10};
  policy.by_status[core::runtime_status::terminated] = {true, 0};
  first.set_retention(policy);
  w.commit(0);
  auto purge_round = [&](std::int64_t advance_ns) {
    w.now += advance_ns;
    for (int i = 0; i < 4; ++i) {  // Enough rounds for retention_purges_max = 2.
      w.engines[0]->purge_expired(w.now, SIZE_MAX);
      run_to_quiet(w);
    }
  };
  purge_round(5 * second_ns);  // 5 s after they ended: nothing is due.
  for (const char* id : {"done-1", "done-2", "done-3", "stopped-1", "sleepy-1"}) CHECK_MESSAGE(w.stored(id)->has_value(), id);
  CHECK(w.engines[0]->retention_purged()[static_cast<std::size_t>(core::runtime_status::completed)] == 0);

  purge_round(6 * second_ns);  // 11 s: the completed ones go, the terminated and running ones stay.
  for (const char* id : {"done-1", "done-2", "done-3"}) CHECK_MESSAGE(!w.stored(id)->has_value(), id);
  CHECK(w.stored("stopped-1")->has_value());
  CHECK(w.stored("sleepy-1")->has_value());
  CHECK(w.engines[0]->retention_purged()[static_cast<std::size_t>(core::runtime_status::completed)] == 3);
  CHECK(w.engines[0]->store().catalog().oldest_ended_ns().has_value());  // stopped-1 is kept.

  // Started again under its id in the very batch that purges it (not live, so
  // purged from its id alone): the start wins, and the id is purged again once it
  // is due again (nothing of the first purge is left hanging).
  REQUIRE(w.engines[0]->start(request("again-1"), w.now));
  run_to_quiet(w);
  const auto first_run = (*w.stored("again-1"))->record.execution_id;
  w.now += 11 * second_ns;
  w.engines[0]->purge_expired(w.now, SIZE_MAX);
  REQUIRE(w.engines[0]->start(request("again-1"), w.now));
  run_to_quiet(w);
  auto restarted = w.stored("again-1");
  REQUIRE(restarted);
  REQUIRE(restarted->has_value());
  CHECK((*restarted)->record.execution_id != first_run);
  CHECK((*restarted)->record.status == core::runtime_status::completed);
  CHECK(w.engines[0]->retention_purged()[static_cast<std::size_t>(core::runtime_status::completed)] == 3);
  purge_round(11 * second_ns);
  CHECK_FALSE(w.stored("again-1")->has_value());
  CHECK(w.engines[0]->retention_purged()[static_cast<std::size_t>(core::runtime_status::completed)] == 4);

  // A crash keeps the policy (it was committed); dropping it brings the default back, durably too.
  w.crash(0);
  CHECK(w.engines[0]->retention_is_own());
  CHECK(w.engines[0]->retention() == policy);
  w.engines[0]->set_retention(std::nullopt);
  w.commit(0);
  w.crash(0);
  CHECK_FALSE(w.engines[0]->retention_is_own());
  CHECK(w.engines[0]->retention().keep_s(core::runtime_status::terminated) == 3600);
  purge_round(3600 * second_ns);  // The default's hour: the terminated one goes now.
  CHECK_FALSE(w.stored("stopped-1")->has_value());
  CHECK(w.stored("sleepy-1")->has_value());
}

TEST_CASE("engine: retention counts what became due since its last look, not what was due before") {
  engine::engine_options options;
  options.default_retention.fallback = core::retention_rule{false, 10};
  world w(1, 11, options);
  auto& engine = *w.engines[0];
  const auto t0 = w.now;
  for (const char* id : {"a-1", "a-2", "a-3"}) REQUIRE(engine.start(request(id), w.now));
  run_to_quiet(w);
  w.now = t0 + 2 * second_ns;
  for (const char* id : {"b-1", "b-2"}) REQUIRE(engine.start(request(id), w.now));
  run_to_quiet(w);
  REQUIRE((*w.stored("b-2"))->record.status == core::runtime_status::completed);

  REQUIRE((*w.stored("a-1"))->record.completed_at_ns == t0);
  CHECK(engine.newly_due(t0 + 5 * second_ns, 100) == 0);  // The first look counts nothing.
  CHECK(engine.newly_due(t0 + 10 * second_ns, 100) == 3);  // The a-s, due exactly now: a window ends inclusive,
  CHECK(engine.newly_due(t0 + 11 * second_ns, 100) == 0);  // and the next one starts after it.
  CHECK(engine.newly_due(t0 + 8 * second_ns, 100) == 0);   // A clock gone back counts nothing,
  CHECK(engine.newly_due(t0 + 11'500'000'000, 100) == 0);  // and no window twice.
  CHECK(engine.newly_due(t0 + 13 * second_ns, 1) == 1);  // The b-s, counted up to the cap.
  CHECK(engine.newly_due(t0 + 13 * second_ns, 100) == 0);  // No time passed.
  // A backlog long due is not newly due: 30 s later, everything is due, nothing new.
  CHECK(engine.newly_due(t0 + 43 * second_ns, 100) == 0);
  // Under a longer policy what is due moves back: nothing ended 60 s before.
  core::retention_policy longer;
  longer.fallback = core::retention_rule{false, 60};
  engine.set_retention(longer);
  w.commit(0);
  CHECK(engine.newly_due(t0 + 61 * second_ns, 100) == 3);  // (t0 - 17 s, t0 + 1 s]: the a-s; the b-s come later.
  CHECK(engine.newly_due(t0 + 63 * second_ns, 100) == 2);
}

TEST_CASE("retention policies: DTS's JSON both ways, durations, and bad ones named") {
  auto parsed = core::retention_from_json(
      R"({"retentionPolicies": [{"retentionPeriodInDays": 30}, {"retentionPeriodInDays": 1, "orchestrationState": "Completed"},
          {"orchestrationState": "Failed", "keepForever": true}, {"orchestrationState": "Terminated", "retentionPeriodInSeconds": 90}]})");
  REQUIRE(parsed);
  CHECK(parsed->keep_s(core::runtime_status::canceled) == 30 * 86400);
  CHECK(parsed->keep_s(core::runtime_status::completed) == 86400);
  CHECK_FALSE(parsed->keep_s(core::runtime_status::failed));
  CHECK(parsed->keep_s(core::runtime_status::terminated) == 90);
  CHECK_FALSE(parsed->keep_s(core::runtime_status::running));
  auto again = core::retention_from_json(core::to_json(*parsed));
  REQUIRE(again);
  CHECK(*again == *parsed);
  CHECK(core::describe(*parsed) == "default 30d, Completed 1d, Failed forever, Terminated 90s");
  CHECK_FALSE(core::retention_policy{}.purges());
  CHECK(core::parse_duration("0s").value() == 0);
  CHECK(core::parse_duration("12h").value() == 43200);
  for (const char* bad : {"", "5", "5x", "-1d", "99999d"}) CHECK_MESSAGE(!core::parse_duration(bad), bad);
  const std::pair<const char*, const char*> refused[] = {
      {"[]", "retentionPolicies"},
      {R"({"retentionPolicies": [{"orchestrationState": "Running", "retentionPeriodInDays": 1}]})", "not one of"},
      {R"({"retentionPolicies": [{"retentionPeriodInDays": -1}]})", "between 0 and 3650"},
      {R"({"retentionPolicies": [{"orchestrationState": "Failed"}]})", "needs one of"},
      {R"({"retentionPolicies": [{"retentionPeriodInDays": 1}, {"retentionPeriodInDays": 2}]})", "two retention rules"},
  };
  for (const auto& [text, why] : refused) {
    auto failed = core::retention_from_json(text);
    REQUIRE_MESSAGE(!failed, text);
    CHECK_MESSAGE(failed.error().message.find(why) != std::string::npos, failed.error().message);
  }
}

namespace {

core::schedule_spec every(std::string id, std::int64_t seconds, std::string orchestration = "HelloCities") {
  core::schedule_spec spec;
  spec.id = std::move(id);
  spec.orchestration = std::move(orchestration);
  spec.interval_s = seconds;
  return spec;
}

/// The schedule `id` as its partition keeps it.
core::schedule schedule_of(world& w, const std::string& id) {
  auto got = w.owner(core::schedule_address(id)).schedule({core::schedule_command::verb::get, id, {}, {}}, w.now);
  REQUIRE_MESSAGE(got, (got ? "" : got.error().message));
  REQUIRE(got->second.size() == 1);
  return got->second.front();
}

expected<std::pair<std::uint64_t, std::vector<core::schedule>>> command(world& w, core::schedule_command::verb verb,
                                                                        std::string id,
                                                                        std::optional<core::schedule_spec> spec = {}) {
  auto& engine = w.owner(core::schedule_address(id));
  return engine.schedule({verb, std::move(id), std::move(spec), {}}, w.now);
}

/// Partition p crashes and comes back; its links reconnect (resending what is unacknowledged).
void crash(world& w, std::uint32_t p) {
  w.crash(p);
  for (auto& [key, l] : w.links) w.reconnect(key);
}

/// Commits and delivers until no message moves, without running any work.
void settle_without_work(world& w) {
  for (int round = 0; round < 20; ++round) {
    w.commit_all();
    for (auto& [key, l] : w.links) {
      while (!l.messages.empty() || !l.receipts.empty()) w.deliver(key, false);
    }
  }
}

std::string joined(const std::set<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += id + " ";
  return out;
}

/// Ids of every orchestration the schedule `id` started, across the partitions.
std::set<std::string> runs_of(world& w, const std::string& id) {
  std::set<std::string> runs;
  for (auto& engine : w.engines) {
    core::list_query all;
    all.rows = 1000;
    auto page = engine->store().list(all);
    REQUIRE(page);
    for (const auto& row : page->rows) {
      if (row.instance_id.rfind(id + "-", 0) == 0) runs.insert(row.instance_id);
    }
  }
  return runs;
}

}  // namespace

TEST_CASE("engine: a schedule starts one run per slot in the runs' own partitions; crashes neither skip nor double one") {
  world w(4, 21);
  const std::string id = "tick";
  const auto home = core::partition_of(core::schedule_address(id), 4);
  auto spec = every(id, 10);
  spec.overlap = core::overlap_policy::allow_all;
  spec.catch_up = core::catch_up_policy::all;
  REQUIRE(command(w, core::schedule_command::verb::create, id, spec));
  CHECK(command(w, core::schedule_command::verb::create, id, spec).error().code == errc::already_exists);
  run_to_quiet(w);
  const auto first_slot = schedule_of(w, id).state.next_slot_ns;
  CHECK(first_slot > w.now);
  CHECK(first_slot % (10 * second_ns) == 0);

  std::set<std::string> expected_runs;
  auto slot_id = [&](int k) { return core::slot_instance_id(spec, first_slot + k * 10 * second_ns); };
  for (int k = 0; k < 3; ++k) {
    w.tick(first_slot + k * 10 * second_ns - w.now);
    expected_runs.insert(slot_id(k));
    run_to_quiet(w);
  }
  CHECK_MESSAGE(runs_of(w, id) == expected_runs, joined(runs_of(w, id)) << " vs " << joined(expected_runs));
  std::set<std::uint32_t> partitions;
  for (const auto& run : expected_runs) {
    auto stored = w.stored(run);
    REQUIRE(stored);
    REQUIRE(stored->has_value());
    CHECK((*stored)->record.status == core::runtime_status::completed);
    CHECK((*stored)->record.tags.at("dtsd.schedule") == id);
    partitions.insert(core::partition_of(run, 4));
  }
  auto state = schedule_of(w, id).state;
  CHECK(state.runs == 3);
  CHECK_FALSE(state.last_running);  // The last run reported its end.
  CHECK(state.last_status == "Completed");
  CHECK(state.last_instance_id == slot_id(2));

  // A crash of the schedule's partition after it fired slot 3 but before that was
  // durable: slot 3 fires again after recovery, once.
  w.tick(first_slot + 3 * 10 * second_ns - w.now);
  crash(w, home);
  CHECK(schedule_of(w, id).state.runs == 3);
  w.tick(0);
  expected_runs.insert(slot_id(3));
  run_to_quiet(w);
  CHECK_MESSAGE(runs_of(w, id) == expected_runs, joined(runs_of(w, id)) << " vs " << joined(expected_runs));

  // A crash after slot 4's batch is durable but before its start reached the run's
  // partition: the outbox sends it again; still one run.
  w.tick(first_slot + 4 * 10 * second_ns - w.now);
  w.commit(home);
  crash(w, home);
  expected_runs.insert(slot_id(4));
  run_to_quiet(w);
  CHECK_MESSAGE(runs_of(w, id) == expected_runs, joined(runs_of(w, id)) << " vs " << joined(expected_runs));
  CHECK(schedule_of(w, id).state.runs == 5);

  // Down for 95 s (9 slots passed): catch-up "All" runs each of them, oldest first.
  crash(w, home);
  w.tick(first_slot + 13 * 10 * second_ns + 5 * second_ns - w.now);
  for (int k = 5; k <= 13; ++k) expected_runs.insert(slot_id(k));
  run_to_quiet(w);
  CHECK_MESSAGE(runs_of(w, id) == expected_runs, joined(runs_of(w, id)) << " vs " << joined(expected_runs));
  CHECK(schedule_of(w, id).state.missed == 0);
  CHECK(schedule_of(w, id).state.next_slot_ns == first_slot + 14 * 10 * second_ns);
}

TEST_CASE("engine: schedule catch-up One and Skip, overlap Skip and BufferOne") {
  world w(2, 22);
  using verb = core::schedule_command::verb;
  // Catch-up One: after 10 minutes down, the latest slot runs once, the rest are missed.
  auto one = every("one", 60);
  REQUIRE(command(w, verb::create, "one", one));
  auto skip = every("skip", 300);
  skip.catch_up = core::catch_up_policy::skip;
  REQUIRE(command(w, verb::create, "skip", skip));
  run_to_quiet(w);
  const auto first = schedule_of(w, "one").state.next_slot_ns;
  const auto skip_first = schedule_of(w, "skip").state.next_slot_ns;  // Both count from the epoch.
  w.tick(skip_first + 690 * second_ns - w.now);  // Down for more than 11 minutes.
  run_to_quiet(w);
  // Every minute: the latest slot (30 s late) runs once, the others are missed.
  const auto one_due = (w.now - first) / (60 * second_ns) + 1;
  CHECK(runs_of(w, "one") ==
        std::set<std::string>{core::slot_instance_id(one, first + (one_due - 1) * 60 * second_ns)});
  CHECK(schedule_of(w, "one").state.missed == static_cast<std::uint64_t>(one_due - 1));
  CHECK(runs_of(w, "skip").empty());  // Every 5 minutes: the latest is 90 s late, not on time.
  CHECK(schedule_of(w, "skip").state.missed == 3);

  // Overlap Skip: a slot due while the run still runs is skipped.
  auto skipping = every("skipping", 10);
  REQUIRE(command(w, verb::create, "skipping", skipping));
  auto buffering = every("buffering", 10);
  buffering.overlap = core::overlap_policy::buffer_one;
  REQUIRE(command(w, verb::create, "buffering", buffering));
  settle_without_work(w);
  const auto s0 = schedule_of(w, "skipping").state.next_slot_ns;
  auto at = [&](int k) { return s0 + k * 10 * second_ns; };
  for (int k = 0; k < 3; ++k) {  // No worker: the first run stays pending.
    w.tick(at(k) - w.now);
    settle_without_work(w);
  }
  CHECK(runs_of(w, "skipping") == std::set<std::string>{core::slot_instance_id(skipping, at(0))});
  CHECK(schedule_of(w, "skipping").state.skipped == 2);
  CHECK(schedule_of(w, "buffering").state.buffered_slot_ns == at(2));
  CHECK(schedule_of(w, "buffering").state.skipped == 1);  // Slot 1 gave way to slot 2.
  run_to_quiet(w);  // The runs complete; the buffered slot runs then.
  CHECK(runs_of(w, "skipping") == std::set<std::string>{core::slot_instance_id(skipping, at(0))});
  CHECK(runs_of(w, "buffering") ==
        std::set<std::string>{core::slot_instance_id(buffering, at(0)), core::slot_instance_id(buffering, at(2))});
  CHECK(schedule_of(w, "buffering").state.buffered_slot_ns == 0);
  w.tick(at(3) - w.now);
  run_to_quiet(w);
  CHECK(runs_of(w, "skipping").size() == 2);
  CHECK(runs_of(w, "buffering").size() == 3);
}

TEST_CASE("engine: schedules paused, resumed, updated, triggered and deleted, durably") {
  world w(2, 23);
  using verb = core::schedule_command::verb;
  auto spec = every("daily", 86400);
  REQUIRE(command(w, verb::create, "daily", spec));
  run_to_quiet(w);
  const auto home = core::partition_of(core::schedule_address("daily"), 2);
  CHECK(command(w, verb::get, "nope").error().code == errc::not_found);
  auto& other = *w.engines[1 - home];
  CHECK(other.schedule({verb::get, "daily", {}, {}}, w.now).error().code == errc::invalid_argument);

  REQUIRE(w.engines[home]->schedule({verb::pause, "daily", {}, "maintenance"}, w.now));
  run_to_quiet(w);
  crash(w, home);
  auto paused = schedule_of(w, "daily");
  CHECK(paused.state.paused);
  CHECK(paused.state.note == "maintenance");
  const auto was_next = paused.state.next_slot_ns;
  w.tick(was_next + 2 * 86400 * second_ns - w.now);  // Two slots pass while paused.
  run_to_quiet(w);
  CHECK(runs_of(w, "daily").empty());
  REQUIRE(command(w, verb::resume, "daily"));
  run_to_quiet(w);
  CHECK(runs_of(w, "daily").empty());  // Not caught up.
  CHECK(schedule_of(w, "daily").state.next_slot_ns > w.now);

  auto triggered = command(w, verb::trigger, "daily");
  REQUIRE(triggered);
  run_to_quiet(w);
  const auto run_id = triggered->second.front().state.last_instance_id;
  CHECK(runs_of(w, "daily") == std::set<std::string>{run_id});
  CHECK(run_id.find('.') != std::string::npos);  // 20231114T221320.000Z: apart from every slot's id.
  CHECK(schedule_of(w, "daily").state.last_status == "Completed");
  // Triggered again in the same millisecond: the same id, which exists; the run
  // reports that it could not start, and the schedule does not wait for it.
  REQUIRE(command(w, verb::trigger, "daily"));
  run_to_quiet(w);
  CHECK(runs_of(w, "daily").size() == 1);
  CHECK(schedule_of(w, "daily").state.last_status == "StartFailed");
  CHECK_FALSE(schedule_of(w, "daily").state.last_running);

  spec.interval_s = 3600;
  spec.orchestration = "Sleepy";
  REQUIRE(command(w, verb::update, "daily", spec));
  run_to_quiet(w);
  crash(w, home);
  CHECK(schedule_of(w, "daily").spec.orchestration == "Sleepy");
  CHECK(schedule_of(w, "daily").state.next_slot_ns - w.now <= 3600 * second_ns);
  auto bad = spec;
  bad.cron = "* * * * *";
  CHECK(command(w, verb::update, "daily", bad).error().code == errc::invalid_argument);

  REQUIRE(command(w, verb::remove, "daily"));
  run_to_quiet(w);
  crash(w, home);
  CHECK(command(w, verb::get, "daily").error().code == errc::not_found);
  auto listed = w.engines[home]->schedule({verb::list, {}, {}, {}}, w.now);
  REQUIRE(listed);
  CHECK(listed->second.empty());
}
