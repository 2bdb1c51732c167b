// The storage conformance suite: every case runs against the LMDB store and the
// in-memory store, which must behave the same.

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>

#include "core/list.hpp"
#include "core/orchestration.hpp"
#include "store/keys.hpp"
#include "store/partition_store.hpp"

using namespace dtsd;
using namespace dtsd::core;
using namespace dtsd::store;

namespace {

const partition_identity test_identity{"default", 3, 12};

std::filesystem::path fresh_directory() {
  static std::random_device seed;
  auto path = std::filesystem::temp_directory_path() /
              ("dtsd-conformance-" + std::to_string(seed()) + std::to_string(seed()));
  std::filesystem::remove_all(path);
  return path;
}

struct lmdb_fixture {
  static constexpr const char* name = "lmdb";
  std::filesystem::path directory = fresh_directory();
  kv_engine* engine = nullptr;  // Owned by the store; kept to damage rows on purpose.
  std::unique_ptr<partition_store> store;

  lmdb_fixture() { reopen(); }
  ~lmdb_fixture() {
    store.reset();
    std::filesystem::remove_all(directory);
  }
  void reopen() {
    store.reset();
    auto opened = open_lmdb({directory.string(), durability::fsync});
    REQUIRE(opened);
    engine = opened->get();
    auto made = partition_store::open(std::move(*opened), test_identity);
    REQUIRE_MESSAGE(made, (made ? "" : made.error().message));
    store = std::move(*made);
  }
};

struct memory_fixture {
  static constexpr const char* name = "memory";
  kv_engine* engine = nullptr;
  std::unique_ptr<partition_store> store;

  memory_fixture() {
    auto owned = open_memory();
    engine = owned.get();
    auto made = partition_store::open(std::move(owned), test_identity);
    REQUIRE(made);
    store = std::move(*made);
  }
  void reopen() {}  // Memory does not outlive its process; the same store stands in.
};

/// Applies core transitions and commits them the way a partition does.
struct driver {
  explicit driver(partition_store& target, std::map<std::string, orchestration_state> known = {})
      : store(target), live(std::move(known)) {}

  partition_store& store;
  std::map<std::string, orchestration_state> live;
  payload_limits limits;
  std::int64_t now = 1'700'000'000'000'000'000;
  std::uint64_t token = 1;

  void commit_change(const std::string& id, const transition& t, write_batch batch = {}) {
    auto found = live.find(id);
    batch.instances.push_back(
        make_instance_write(id, found == live.end() ? nullptr : &found->second, t.change));
    batch.activities_added = t.effects.activities;
    batch.timers_added = t.effects.timers;
    batch.events.push_back({now, logged::opaque{id}});
    auto committed = store.commit(batch, now);
    REQUIRE_MESSAGE(committed, (committed ? "" : committed.error().message));
  }

  void start(const std::string& id, std::string name = "HelloCities", tag_map tags = {}) {
    now += 1000;
    start_request request;
    request.instance_id = id;
    request.execution_id = "ex-" + id;
    request.name = std::move(name);
    request.input = "\"input of " + id + "\"";
    request.tags = std::move(tags);
    request.replaceable_statuses = terminal_statuses();
    std::optional<orchestration_state> slot;
    if (auto found = live.find(id); found != live.end()) slot = found->second;
    auto t = apply_start(slot, request, now, limits);
    REQUIRE(t);
    live[id] = *slot;
    commit_change(id, *t);
  }

  transition complete(const std::string& id, std::vector<orchestrator_action> acts) {
    now += 1000;
    auto& state = live.at(id);
    auto item = dispatch(state, token++);
    REQUIRE(item);
    auto t = apply_completion(state, {id, item->completion_token, std::move(acts), {}}, "ex2-" + id,
                              now, limits);
    REQUIRE(t);
    commit_change(id, *t);
    return *t;
  }

  void activity_done(const std::string& id, std::int32_t task, std::string output) {
    now += 1000;
    auto& state = live.at(id);
    auto t = apply_activity_result(state, {id, state.record.execution_id, task, 0, payload(output)},
                                   now, limits);
    REQUIRE(t);
    write_batch batch;
    batch.activities_removed.push_back({id, state.record.execution_id, task});
    commit_change(id, *t, batch);
  }

  void finish(const std::string& id, runtime_status status = runtime_status::completed) {
    actions::complete_orchestration done;
    done.status = status;
    done.result = "\"done\"";
    complete(id, {{100, done}});
  }

  void check_matches_store(const std::string& id) {
    auto loaded = store.load_instance(id);
    REQUIRE(loaded);
    REQUIRE(loaded->has_value());
    const auto& expected_state = live.at(id);
    CHECK((*loaded)->record == expected_state.record);
    CHECK((*loaded)->history == expected_state.history);
    CHECK((*loaded)->inbox == expected_state.inbox);
    CHECK((*loaded)->inbox_first_sequence == expected_state.inbox_first_sequence);
  }
};

std::vector<std::string> ids_of(const query_page& page) {
  std::vector<std::string> ids;
  for (const auto& record : page.instances) ids.push_back(record.instance_id);
  return ids;
}

/// Follows continuation tokens to the end.
std::vector<std::string> all_pages(partition_store& store, instance_query query) {
  std::vector<std::string> ids;
  for (int pages = 0; pages < 1000; ++pages) {
    auto page = store.query(query);
    REQUIRE_MESSAGE(page, (page ? "" : page.error().message));
    auto got = ids_of(*page);
    ids.insert(ids.end(), got.begin(), got.end());
    if (page->continuation_token.empty()) return ids;
    query.continuation_token = page->continuation_token;
  }
  FAIL("paging did not end");
  return ids;
}

}  // namespace

#define STORES lmdb_fixture, memory_fixture

TEST_CASE_TEMPLATE("store conformance: a new store is empty and consistent", F, STORES) {
  F f;
  auto record = f.store->get_instance("nothing");
  REQUIRE(record);
  CHECK_FALSE(record->has_value());
  auto page = f.store->query({});
  REQUIRE(page);
  CHECK(page->instances.empty());
  CHECK(page->continuation_token.empty());
  auto recovered = f.store->recover();
  REQUIRE(recovered);
  CHECK(recovered->instance_count == 0);
  CHECK(recovered->next_log_sequence == 1);
  CHECK(f.store->check_consistency());
  CHECK(f.store->history("nothing").error().code == errc::not_found);
}

TEST_CASE_TEMPLATE("store conformance: the kv engine scans in key order and rolls back a failed write", F, STORES) {
  F f;
  auto& engine = *f.engine;
  REQUIRE(engine.write([](kv_writer& w) {
    for (int i = 0; i < 20; ++i) w.put(table::entities, keys::u32(static_cast<std::uint32_t>(i)), std::to_string(i));
  }));
  REQUIRE(engine.write([](kv_writer& w) { w.erase_range(table::entities, keys::u32(5), keys::u32(15)); }));
  CHECK_THROWS_AS((void)engine.write([](kv_writer& w) {
    w.put(table::entities, keys::u32(100), "new");
    w.erase(table::entities, keys::u32(0));
    throw std::runtime_error("the body failed");
  }),
                  std::runtime_error);
  std::vector<std::string> seen;
  std::optional<std::string> last;
  REQUIRE(engine.read([&](kv_reader& r) {
    r.scan(table::entities, {}, {}, [&](std::string_view, std::string_view value) {
      seen.emplace_back(value);
      return true;
    });
    last = r.last_key(table::entities);
  }));
  CHECK(seen == std::vector<std::string>{"0", "1", "2", "3", "4", "15", "16", "17", "18", "19"});
  REQUIRE(last);
  CHECK(keys::get_u32(*last) == 19);
}

TEST_CASE_TEMPLATE("store conformance: an instance's record, history and inbox read back as committed", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("order-1");
  d.check_matches_store("order-1");
  auto t = d.complete("order-1", {{0, actions::schedule_task{"SayHello", {}, "\"Tokyo\"", {}}}});
  d.check_matches_store("order-1");
  d.activity_done("order-1", 0, "\"Hello, Tokyo!\"");
  d.check_matches_store("order-1");
  d.finish("order-1");
  d.check_matches_store("order-1");
  f.reopen();
  driver after{*f.store, d.live};
  after.check_matches_store("order-1");
  auto history = f.store->history("order-1");
  REQUIRE(history);
  CHECK(*history == d.live.at("order-1").history);
  CHECK(f.store->check_consistency());
}

TEST_CASE_TEMPLATE("store conformance: continue-as-new and replacement rewrite the rows of an instance", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("loop");
  d.complete("loop", {{0, actions::schedule_task{"A", {}, "1", {}}}});
  d.activity_done("loop", 0, "2");
  actions::complete_orchestration again;
  again.status = runtime_status::continued_as_new;
  again.result = "\"round 2\"";
  again.carryover_events.push_back({-1, d.now, events::event_raised{"carried", std::string("1")}});
  d.complete("loop", {{1, again}});
  d.check_matches_store("loop");
  d.finish("loop", runtime_status::failed);
  d.start("loop");  // Replaces the failed instance.
  d.check_matches_store("loop");
  CHECK(f.store->check_consistency());
}

TEST_CASE_TEMPLATE("store conformance: purge deletes every row and index entry of an instance", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("gone");
  d.start("kept");
  d.finish("gone");
  auto& state = d.live.at("gone");
  std::optional<orchestration_state> slot = state;
  auto purged = apply_purge(slot);
  REQUIRE(purged);
  write_batch batch;
  batch.instances.push_back(make_instance_write("gone", nullptr, purged->change));
  REQUIRE(f.store->commit(batch, d.now));
  auto record = f.store->get_instance("gone");
  REQUIRE(record);
  CHECK_FALSE(record->has_value());
  CHECK(ids_of(*f.store->query({})) == std::vector<std::string>{"kept"});
  CHECK(f.store->check_consistency());
}

TEST_CASE_TEMPLATE("store conformance: queries filter and page in (created, id) order", F, STORES) {
  F f;
  driver d{*f.store};
  std::vector<std::string> all, completed, alpha_tagged;
  for (int i = 0; i < 60; ++i) {
    auto id = "inst-" + std::to_string(1000 + i);
    bool is_alpha = i % 3 == 0;
    d.start(id, is_alpha ? "Alpha" : "Beta", i % 4 == 0 ? tag_map{{"team", "a"}} : tag_map{});
    all.push_back(id);
    if (i % 5 == 0) {
      d.finish(id);
      completed.push_back(id);
    }
    if (is_alpha && i % 4 == 0) alpha_tagged.push_back(id);
  }

  instance_query paged;
  paged.page_size = 7;
  CHECK(all_pages(*f.store, paged) == all);

  instance_query by_status;
  by_status.statuses = {runtime_status::completed};
  by_status.page_size = 4;
  CHECK(all_pages(*f.store, by_status) == completed);

  instance_query two_statuses;
  two_statuses.statuses = {runtime_status::completed, runtime_status::pending};
  two_statuses.page_size = 9;
  CHECK(all_pages(*f.store, two_statuses) == all);

  instance_query filtered;
  filtered.name_prefix = "Al";
  filtered.tags = {{"team", "a"}};
  filtered.page_size = 2;
  CHECK(all_pages(*f.store, filtered) == alpha_tagged);

  instance_query by_prefix;
  by_prefix.instance_id_prefix = "inst-101";
  std::vector<std::string> expected_prefix;
  for (int i = 10; i < 20; ++i) expected_prefix.push_back("inst-" + std::to_string(1000 + i));
  CHECK(all_pages(*f.store, by_prefix) == expected_prefix);

  // Created range (inclusive) picks a window of the start order.
  auto created = [&](const std::string& id) { return d.live.at(id).record.created_at_ns; };
  instance_query window;
  window.created_from_ns = created(all[10]);
  window.created_to_ns = created(all[19]);
  CHECK(all_pages(*f.store, window) == std::vector<std::string>(all.begin() + 10, all.begin() + 20));

  // A tight scan budget ends pages early, and paging still finds every match once.
  instance_query budgeted = filtered;
  budgeted.scan_count_max = 5;
  CHECK(all_pages(*f.store, budgeted) == alpha_tagged);

  instance_query slim;
  slim.page_size = 1;
  slim.fetch_payloads = false;
  auto page = f.store->query(slim);
  REQUIRE(page);
  CHECK_FALSE(page->instances[0].input.has_value());
  CHECK_FALSE(page->continuation_token.empty());
}

TEST_CASE_TEMPLATE("store conformance: bad query arguments are clear errors", F, STORES) {
  F f;
  instance_query bad_token;
  bad_token.continuation_token = "not-a-token";
  auto failed = f.store->query(bad_token);
  REQUIRE_FALSE(failed);
  CHECK(failed.error().code == errc::invalid_argument);
  CHECK(failed.error().message.find("not-a-token") != std::string::npos);
  instance_query zero;
  zero.page_size = 0;
  CHECK(f.store->query(zero).error().code == errc::invalid_argument);
  instance_query huge;
  huge.page_size = query_page_size_max + 1;
  CHECK(f.store->query(huge).error().code == errc::invalid_argument);
}

TEST_CASE_TEMPLATE("store conformance: due timers come earliest first and go when removed", F, STORES) {
  F f;
  write_batch batch;
  batch.timers_added = {{"a", "ex", 1, 300}, {"b", "ex", 2, 100}, {"c", "ex", 3, 200}, {"d", "ex", 4, 900}};
  REQUIRE(f.store->commit(batch, 1));
  auto due = f.store->due_timers(300, 10);
  REQUIRE(due);
  REQUIRE(due->size() == 3);
  CHECK((*due)[0].instance_id == "b");
  CHECK((*due)[1].instance_id == "c");
  CHECK((*due)[2].instance_id == "a");
  CHECK(f.store->due_timers(300, 1)->size() == 1);
  write_batch fired;
  fired.timers_removed = {{"b", "ex", 2, 100}};
  REQUIRE(f.store->commit(fired, 2));
  CHECK(f.store->due_timers(300, 10)->size() == 2);
}

TEST_CASE_TEMPLATE("store conformance: recovery finds queued activities, timers, outbox, dedup marks and ready instances", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("waiting");  // Has ExecutionStarted in its inbox.
  d.start("busy");
  d.complete("busy", {{0, actions::schedule_task{"A", {}, "1", {}}},
                      {1, actions::create_timer{d.now + 5}}});
  write_batch batch;
  batch.outbox_added = {{1, 3, 7, {"x", "", terminate_request{}}}, {2, 3, 8, {"y", "", terminate_request{}}}};
  batch.dedup_marks = {{5, 44}};
  REQUIRE(f.store->commit(batch, d.now));
  write_batch acked;
  acked.outbox_removed = {1, 2};
  REQUIRE(f.store->commit(acked, d.now));
  write_batch third;
  third.outbox_added = {{3, 3, 7, {"z", "", terminate_request{}}}};
  REQUIRE(f.store->commit(third, d.now));

  f.reopen();
  auto recovered = f.store->recover();
  REQUIRE(recovered);
  CHECK(recovered->instances_with_inbox == std::vector<std::string>{"waiting"});
  REQUIRE(recovered->activities.size() == 1);
  CHECK(recovered->activities[0].instance_id == "busy");
  REQUIRE(recovered->timers.size() == 1);
  CHECK(recovered->timers[0].timer_id == 1);
  REQUIRE(recovered->outbox.size() == 1);
  CHECK(recovered->outbox[0].sequence == 3);
  CHECK(recovered->next_outbox_sequence == 4);
  CHECK(recovered->dedup_marks == std::map<std::uint32_t, std::uint64_t>{{5, 44}});
  CHECK(recovered->instance_count == 2);
  CHECK(recovered->next_log_sequence == 4);  // Three logged batches from the driver.
  auto queued = f.store->queued_activities(10);
  REQUIRE(queued);
  CHECK(queued->size() == 1);
}

TEST_CASE_TEMPLATE("store conformance: the log holds every logged batch in order", F, STORES) {
  F f;
  for (int i = 0; i < 5; ++i) {
    write_batch batch;
    batch.events.push_back({i, logged::opaque{"batch " + std::to_string(i)}});
    auto info = f.store->commit(batch, 1000 + i);
    REQUIRE(info);
    CHECK(info->log_sequence == static_cast<std::uint64_t>(i + 1));
  }
  write_batch unlogged;
  unlogged.dedup_marks = {{1, 1}};
  CHECK(f.store->commit(unlogged, 1)->log_sequence == 0);
  f.reopen();
  auto log = f.store->read_log(2, 10);
  REQUIRE(log);
  REQUIRE(log->size() == 4);
  CHECK((*log)[0].sequence == 2);
  CHECK((*log)[0].committed_at_ns == 1001);
  CHECK(std::get<logged::opaque>((*log)[3].events[0].body).data == "batch 4");
  write_batch next;
  next.events.push_back({9, logged::opaque{"after reopen"}});
  CHECK(f.store->commit(next, 1)->log_sequence == 6);
  CHECK(f.store->check_consistency());
}

TEST_CASE_TEMPLATE("store conformance: the log keeps only its retention window; the backlog goes at the first commit", F, STORES) {
  F f;
  auto commit_logged = [&](int i) {
    write_batch batch;
    batch.events.push_back({i, logged::opaque{"batch " + std::to_string(i)}});
    REQUIRE(f.store->commit(batch, 1000 + i));
  };
  for (int i = 1; i <= 20; ++i) commit_logged(i);  // No retention yet: all 20 stay.
  REQUIRE(f.store->read_log(0, 100)->size() == 20);
  f.reopen();
  f.store->set_log_retention(5);
  commit_logged(21);
  auto log = f.store->read_log(0, 100);
  REQUIRE(log);
  REQUIRE(log->size() == 5);
  CHECK(log->front().sequence == 17);
  CHECK(log->back().sequence == 21);
  for (int i = 22; i <= 30; ++i) commit_logged(i);
  log = f.store->read_log(0, 100);
  REQUIRE(log->size() == 5);
  CHECK(log->front().sequence == 26);
  CHECK(std::get<logged::opaque>(log->back().events[0].body).data == "batch 30");
  CHECK(f.store->check_consistency());
}

TEST_CASE_TEMPLATE("store conformance: the consistency check finds damaged indexes and orphan rows", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("a");
  d.start("b");
  REQUIRE(f.store->check_consistency());
  REQUIRE(f.engine->write([](kv_writer& w) {
    w.erase(table::by_created, keys::by_created(0, "a"));  // Not the real key: no effect.
    w.put(table::history, keys::history_segment(1, "ghost"), "x");
    w.put(table::by_status, keys::by_status(0, 5, "phantom"), {});
  }));
  auto checked = f.store->check_consistency();
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == errc::corrupt);
  CHECK(checked.error().message.find("ghost") != std::string::npos);
  CHECK(checked.error().message.find("phantom") != std::string::npos);

  auto created = d.live.at("b").record.created_at_ns;
  REQUIRE(f.engine->write([&](kv_writer& w) { w.erase(table::by_created, keys::by_created(created, "b")); }));
  auto missing = f.store->check_consistency();
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("'b' is missing from by_created") != std::string::npos);
}

TEST_CASE("store: each partition of each hub has a directory of its own") {
  CHECK(partition_directory("./dtsd-data", {"default", 3, 12}) == "./dtsd-data/default/p3");
  CHECK(partition_directory("/var/lib/dtsd", {"prod", 0, 1}) == "/var/lib/dtsd/prod/p0");
}

TEST_CASE("store: a data directory made for another partition is refused") {
  lmdb_fixture f;
  f.store.reset();
  auto engine = open_lmdb({f.directory.string(), durability::fsync});
  REQUIRE(engine);
  auto other = partition_store::open(std::move(*engine), {"default", 4, 12});
  REQUIRE_FALSE(other);
  CHECK(other.error().code == errc::invalid_argument);
  CHECK(other.error().message.find("partition=3") != std::string::npos);
  auto engine2 = open_lmdb({f.directory.string(), durability::fsync});
  REQUIRE(engine2);
  CHECK(partition_store::open(std::move(*engine2), {"bad/name", 0, 1}).error().code ==
        errc::invalid_argument);
  f.reopen();
}

TEST_CASE_TEMPLATE("store conformance: a long history is merged into one chunk and reads back whole", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("long");
  for (std::int32_t task = 0; task < 80; ++task) {
    d.complete("long", {{task, actions::schedule_task{"Step", {}, std::to_string(task), {}}}});
    d.activity_done("long", task, "\"step " + std::to_string(task) + "\"");
  }
  d.check_matches_store("long");
  CHECK(d.live.at("long").history.size() > 160);
  f.reopen();
  driver after{*f.store, d.live};
  after.check_matches_store("long");
  CHECK(f.store->check_consistency());
  // The merge removed the chunks it replaced: far fewer chunks than commits remain.
  std::size_t chunks = 0;
  REQUIRE(f.engine->read([&](kv_reader& r) {
    r.scan(table::history, {}, {}, [&](std::string_view, std::string_view) {
      ++chunks;
      return true;
    });
  }));
  CHECK(chunks <= 33);
}

TEST_CASE_TEMPLATE("store conformance: a lost history chunk is reported, not papered over", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("victim");
  d.complete("victim", {{0, actions::schedule_task{"A", {}, "1", {}}}});
  REQUIRE(f.engine->write([](kv_writer& w) {
    std::vector<std::string> doomed;
    w.scan(table::history, {}, {}, [&](std::string_view key, std::string_view) {
      doomed.emplace_back(key);
      return true;
    });
    for (const auto& key : doomed) w.erase(table::history, key);
  }));
  auto loaded = f.store->load_instance("victim");
  REQUIRE_FALSE(loaded);
  CHECK(loaded.error().code == errc::corrupt);
  auto checked = f.store->check_consistency();
  REQUIRE_FALSE(checked);
  CHECK(checked.error().message.find("lost history segment") != std::string::npos);
}

TEST_CASE_TEMPLATE("store conformance: a batch that names one instance twice is refused and writes nothing", F, STORES) {
  F f;
  driver d{*f.store};
  d.start("twice");
  auto& state = d.live.at("twice");
  write_batch batch;
  batch.instances.push_back(make_instance_write("twice", &state, {true, false, 0, 0, false}));
  batch.instances.push_back(make_instance_write("twice", &state, {true, false, 0, 0, false}));
  batch.events.push_back({1, logged::opaque{"x"}});
  auto before = f.store->recover()->next_log_sequence;
  auto refused = f.store->commit(batch, 1);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::invalid_argument);
  CHECK(f.store->recover()->next_log_sequence == before);
}

namespace {

/// What a list must answer, worked out from the driver's own records.
core::list_page expected_list(const driver& d, const list_query& query) {
  core::list_page page;
  std::vector<list_row> rows;
  for (const auto& [id, state] : d.live) {
    const auto& r = state.record;
    if (!contains_ignoring_case(r.name, query.name_part) || !contains_ignoring_case(r.instance_id, query.id_part) ||
        !contains_ignoring_case(tags_text(r.tags), query.tag_part) || !query.created.holds(r.created_at_ns) ||
        (query.top_level_only && r.parent)) {
      continue;
    }
    ++page.by_status[static_cast<std::size_t>(r.status)];
    if (!query.statuses.empty() &&
        std::find(query.statuses.begin(), query.statuses.end(), r.status) == query.statuses.end()) {
      continue;
    }
    ++page.total;
    rows.push_back({r.instance_id, r.name, r.version.value_or(""), tags_text(r.tags), r.status, r.created_at_ns,
                    r.last_updated_at_ns, r.scheduled_start_ns, r.completed_at_ns});
  }
  std::sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return list_before(a.key(), b.key(), query.sort); });
  if (rows.size() > query.rows) rows.resize(query.rows);
  page.rows = std::move(rows);
  return page;
}

void check_list(partition_store& store, const driver& d, const list_query& query) {
  auto page = store.list(query);
  REQUIRE_MESSAGE(page, (page ? "" : page.error().message));
  auto expected_page = expected_list(d, query);
  CHECK(page->total == expected_page.total);
  CHECK(page->by_status == expected_page.by_status);
  REQUIRE(page->rows.size() == expected_page.rows.size());
  for (std::size_t i = 0; i < page->rows.size(); ++i) CHECK(page->rows[i].instance_id == expected_page.rows[i].instance_id);
}

}  // namespace

TEST_CASE_TEMPLATE("store conformance: lists filter, sort and count every instance from memory, also after reopening",
                   F, STORES) {
  F f;
  driver d{*f.store};
  for (int i = 0; i < 80; ++i) {
    const auto id = "inst-" + std::to_string(1000 + (i * 37) % 80);  // Ids out of creation order.
    d.start(id, i % 3 == 0 ? "Alpha" : "Beta", i % 4 == 0 ? tag_map{{"team", "a"}} : tag_map{{"team", "b"}});
    if (i % 5 == 0) d.finish(id);
    else if (i % 7 == 0) d.finish(id, runtime_status::failed);
  }
  // One purged: it leaves the lists and the counts.
  std::optional<orchestration_state> slot = d.live.at("inst-1000");
  auto purged = apply_purge(slot);
  REQUIRE(purged);
  write_batch batch;
  batch.instances.push_back(make_instance_write("inst-1000", nullptr, purged->change));
  REQUIRE(f.store->commit(batch, d.now));
  d.live.erase("inst-1000");

  std::vector<list_query> queries(8);
  queries[0].rows = 10;  // Newest first, counted by status.
  queries[1].statuses = {runtime_status::completed};
  queries[1].sort = {{list_column::created_at, false}};
  queries[2].name_part = "alp";
  queries[2].tag_part = "TEAM=A";
  queries[2].sort = {{list_column::name, false}, {list_column::created_at, true}};
  queries[3].id_part = "INST-10";
  queries[3].statuses = {runtime_status::pending, runtime_status::failed};
  queries[3].sort = {{list_column::status, true}};
  queries[3].rows = 7;
  queries[4].created.from_ns = d.live.at("inst-1010").record.created_at_ns;
  queries[4].created.to_ns = d.live.at("inst-1050").record.created_at_ns;
  queries[4].sort = {{list_column::instance_id, true}};
  queries[5].sort = {{list_column::last_updated_at, false}};
  queries[5].rows = 1000;
  queries[6].tag_part = "team=b";
  queries[6].sort = {{list_column::tags, false}, {list_column::instance_id, false}};
  queries[7].statuses = {runtime_status::failed};
  queries[7].sort = {{list_column::created_at, true}};
  queries[7].rows = 3;
  for (auto& query : queries) {
    if (query.sort.empty()) query.sort = {{list_column::created_at, true}};
  }
  for (const auto& query : queries) check_list(*f.store, d, query);
  CHECK(f.store->check_consistency());

  f.reopen();
  for (const auto& query : queries) check_list(*f.store, d, query);

  list_query too_deep;
  too_deep.rows = list_rows_max + 1;
  auto refused = f.store->list(too_deep);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::invalid_argument);
}

TEST_CASE("store: a newer owner's fence stops an older owner's commits, even from another process") {
  lmdb_fixture f;
  driver d{*f.store};
  REQUIRE(f.store->fence(5));
  d.start("before");  // Commits under epoch 5.
  const pid_t child = fork();
  if (child == 0) {
    // Another process takes the partition over under epoch 7 and writes.
    auto opened = open_lmdb({f.directory.string(), durability::fsync});
    if (!opened) _exit(1);
    auto store = partition_store::open(std::move(*opened), test_identity);
    if (!store || !(*store)->fence(7)) _exit(2);
    write_batch taken;
    taken.events.push_back({1, logged::opaque{"taken"}});
    if (!(*store)->commit(taken, 1)) _exit(4);
    _exit((*store)->fence(6) ? 3 : 0);  // An older epoch than its own is refused.
  }
  int status = -1;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The old owner: its next commit is refused and writes nothing.
  write_batch batch;
  batch.events.push_back({d.now, logged::opaque{"late"}});
  auto refused = f.store->commit(batch, d.now);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::failed_precondition);
  CHECK(refused.error().message.find("epoch 7") != std::string::npos);
  auto log = f.store->read_log(1, 100);
  REQUIRE(log);
  for (const auto& record : *log) {
    for (const auto& event : record.events) {
      const auto* opaque = std::get_if<logged::opaque>(&event.body);
      CHECK_FALSE((opaque != nullptr && opaque->data == "late"));
    }
  }
  CHECK_FALSE(f.store->fence(6));
  // Its memory is stale (the other owner may have written): taken back under a
  // newer epoch, it must be opened again first.
  auto stale = f.store->fence(8);
  REQUIRE_FALSE(stale);
  CHECK(stale.error().message.find("open it again") != std::string::npos);
  f.reopen();
  CHECK(f.store->epoch() == 7);
  REQUIRE(f.store->fence(8));
  CHECK(f.store->commit(batch, d.now));
  CHECK(f.store->check_consistency());
  // The other owner's record is still there: nothing of it was overwritten.
  auto after = f.store->read_log(1, 100);
  REQUIRE(after);
  std::vector<std::string> opaque_records;
  for (const auto& record : *after) {
    for (const auto& event : record.events) {
      if (const auto* o = std::get_if<logged::opaque>(&event.body)) opaque_records.push_back(o->data);
    }
  }
  CHECK(opaque_records == std::vector<std::string>{"before", "taken", "late"});
}
