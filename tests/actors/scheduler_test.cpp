// The scheduler over real actors, in one process, without a transport: worker
// sessions are test sinks that run the scripted orchestrations on a thread of
// their own and answer through the scheduler.

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "actors/scheduler.hpp"
#include "service/service.hpp"
#include "../unit/engine/sim_world.hpp"

using namespace dtsd;

namespace {

template <class T>
expected<T> call(std::function<void(service::callback<T>)> start) {
  auto promise = std::make_shared<std::promise<expected<T>>>();
  auto future = promise->get_future();
  start([promise](expected<T> result) { promise->set_value(std::move(result)); });
  if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    return error{errc::io, "no answer within 30 s"};
  }
  return future.get();
}

/// A worker: takes pushed items and answers them on its own thread. With
/// `hold_orchestrators` it keeps orchestrator items without answering (a stuck worker).
class test_worker final : public service::work_sink {
 public:
  test_worker(service::task_service& scheduler, bool hold_orchestrators = false)
      : scheduler_(scheduler), hold_(hold_orchestrators), thread_([this] { run(); }) {}
  ~test_worker() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  void push(std::vector<service::work_item> items) override {
    {
      std::lock_guard lock(mutex_);
      for (auto& item : items) queue_.push_back(std::move(item));
      pushed_ += items.size();
    }
    wake_.notify_one();
  }
  void keep_alive() override {}
  void end(const std::string& why) override {
    std::lock_guard lock(mutex_);
    ended_ = why;
  }
  std::string ended() {
    std::lock_guard lock(mutex_);
    return ended_;
  }
  /// The session the scheduler opened for this worker. Items can be pushed before
  /// open_session returns; the worker answers none until it knows its session.
  void attach(std::uint64_t opened) {
    {
      std::lock_guard lock(mutex_);
      session_ = opened;
    }
    wake_.notify_one();
  }
  std::uint64_t session() {
    std::lock_guard lock(mutex_);
    return session_;
  }
  std::size_t pushed() {
    std::lock_guard lock(mutex_);
    return pushed_;
  }

 private:
  void run() {
    for (;;) {
      service::work_item item;
      std::uint64_t session = 0;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || (session_ != 0 && !queue_.empty()); });
        if (stopping_) return;
        item = std::move(queue_.front());
        queue_.pop_front();
        session = session_;
      }
      if (auto* orchestration = std::get_if<core::orchestrator_work_item>(&item)) {
        if (hold_) continue;
        scheduler_.complete_orchestrator(
            session, {orchestration->instance_id, orchestration->completion_token, sim::decide(*orchestration), {}},
            [](expected<void>) {});
      } else {
        auto& activity = std::get<core::activity_work_item>(item);
        scheduler_.complete_activity(session, sim::run_activity(activity), [](expected<void>) {});
      }
    }
  }

  service::task_service& scheduler_;
  bool hold_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<service::work_item> queue_;
  std::size_t pushed_ = 0;
  std::string ended_;
  std::uint64_t session_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

std::unique_ptr<service::task_service> make(store::durability durability, const std::string& data_dir,
                                        std::int64_t lease_ms = 5 * 60 * 1000) {
  actors::scheduler_config config;
  config.lease_ms = lease_ms;
  config.durability = durability;
  config.data_dir = data_dir;
  config.partition_count = 4;
  auto made = actors::make_scheduler(config, {"default"}, 2);
  REQUIRE_MESSAGE(made, (made ? "" : made.error().message));
  return std::make_unique<service::task_service>(std::move(*made), service::service_options{config.limits});
}

core::start_request request(std::string id, std::string name) {
  core::start_request r;
  r.instance_id = std::move(id);
  r.name = std::move(name);
  r.replaceable_statuses = core::terminal_statuses();
  return r;
}

}  // namespace

TEST_CASE("scheduler: hello cities, fan-out and a timer run to completion through the actors") {
  auto data_dir = (std::filesystem::temp_directory_path() / "dtsd-actors-test").string();
  std::filesystem::remove_all(data_dir);
  auto scheduler = make(store::durability::fsync, data_dir);
  auto worker = std::make_shared<test_worker>(*scheduler);
  auto session = scheduler->open_session("default", {10, 10, 0}, worker);
  REQUIRE(session);
  worker->attach(*session);

  std::vector<std::pair<std::string, std::string>> runs = {
      {"hello-1", "HelloCities"}, {"fan-1", "FanOut"}, {"sleepy-1", "Sleepy"}};
  for (auto& [id, name] : runs) {
    auto started = call<service::started>([&](auto done) { scheduler->start("default", request(id, name), done); });
    REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
  }
  for (auto& [id, name] : runs) {
    auto record = call<core::instance_record>([&](auto done) { scheduler->wait("default", id, true, done); });
    REQUIRE_MESSAGE(record, (record ? "" : record.error().message));
    CHECK(record->status == core::runtime_status::completed);
    CHECK(record->output == core::payload(sim::expected_output(name)));
  }
  // What a dashboard shows: the session, its slots, and the partitions' commits.
  auto stats = call<service::hub_statistics>([&](auto done) { scheduler->statistics("default", done); });
  REQUIRE(stats);
  REQUIRE(stats->workers.size() == 1);
  CHECK(stats->workers[0].session == *session);
  CHECK(stats->slots.orchestrators == 10);
  CHECK(stats->slots.activities == 10);
  CHECK(stats->partitions.size() == 4);
  CHECK(stats->commits >= 3);  // At least the three starts.
  CHECK(stats->commit_ms_mean > 0);
  CHECK(stats->batch_changes_mean > 0);  // Some batches only trim the outbox.
  CHECK(stats->backlog.orchestrators + stats->backlog.activities == 0);  // Everything ran.
  CHECK(call<service::hub_statistics>([&](auto done) { scheduler->statistics("nope", done); }).error().code ==
        errc::unknown_task_hub);
  scheduler->close_session(*session);
  scheduler->drain();
  scheduler.reset();
  std::filesystem::remove_all(data_dir);
}

TEST_CASE("scheduler: unknown hubs, bad ids and duplicate starts are clear errors") {
  auto scheduler = make(store::durability::memory, "");
  auto unknown = call<service::started>([&](auto done) { scheduler->start("nope", request("a", "X"), done); });
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == errc::unknown_task_hub);
  CHECK(unknown.error().message == "task hub 'nope' does not exist");
  auto bad = call<service::started>([&](auto done) { scheduler->start("default", request(std::string(101, 'x'), "X"), done); });
  CHECK(bad.error().code == errc::invalid_argument);
  REQUIRE(call<service::started>([&](auto done) { scheduler->start("default", request("dup", "X"), done); }));
  auto again = call<service::started>([&](auto done) { scheduler->start("default", request("dup", "X"), done); });
  CHECK(again.error().code == errc::already_exists);
  CHECK_FALSE(scheduler->open_session("nope", {1, 1, 0}, nullptr));
  REQUIRE(scheduler->create_task_hub("second", 2));
  CHECK(scheduler->task_hubs() == std::vector<std::string>{"default", "second"});
  CHECK(scheduler->create_task_hub("second", 2).error().code == errc::already_exists);
  REQUIRE(scheduler->delete_task_hub("second", true));
  CHECK(scheduler->task_hubs() == std::vector<std::string>{"default"});
}

TEST_CASE("scheduler: a closed session's work goes to another session") {
  auto scheduler = make(store::durability::memory, "");
  auto stuck = std::make_shared<test_worker>(*scheduler, true);
  auto stuck_session = scheduler->open_session("default", {10, 10, 0}, stuck);
  REQUIRE(stuck_session);
  stuck->attach(*stuck_session);
  REQUIRE(call<service::started>([&](auto done) { scheduler->start("default", request("hello-1", "HelloCities"), done); }));
  for (int i = 0; i < 300 && stuck->pushed() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(stuck->pushed() == 1);

  auto healthy = std::make_shared<test_worker>(*scheduler);
  auto healthy_session = scheduler->open_session("default", {10, 10, 0}, healthy);
  REQUIRE(healthy_session);
  healthy->attach(*healthy_session);
  scheduler->close_session(*stuck_session);
  auto record = call<core::instance_record>([&](auto done) { scheduler->wait("default", "hello-1", true, done); });
  REQUIRE(record);
  CHECK(record->output == core::payload(sim::hello_output()));
}

TEST_CASE("scheduler: hub-level query pages return every match once, even when partitions stop at their scan budget") {
  auto scheduler = make(store::durability::memory, "");
  std::set<std::string> wanted;
  for (int i = 0; i < 120; ++i) {
    // Sparse matches: one instance in six has the name the query asks for.
    const bool match = i % 6 == 0;
    const auto id = fmt::format("q-{:03}", i);
    REQUIRE(call<service::started>([&](auto done) {
      scheduler->start("default", request(id, match ? "Wanted" : "Other"), done);
    }));
    if (match) wanted.insert(id);
  }
  core::instance_query query;
  query.name_prefix = "Wanted";
  query.page_size = 3;
  query.scan_count_max = 4;  // Every partition page stops early, most of them empty.
  std::multiset<std::string> seen;
  int pages = 0;
  for (; pages < 500; ++pages) {
    auto page = call<core::query_page>([&](auto done) { scheduler->query("default", query, done); });
    REQUIRE_MESSAGE(page, (page ? "" : page.error().message));
    CHECK(page->instances.size() <= 3);
    for (const auto& record : page->instances) seen.insert(record.instance_id);
    if (page->continuation_token.empty()) break;
    query.continuation_token = page->continuation_token;
  }
  CHECK(pages < 500);
  CHECK(seen == std::multiset<std::string>(wanted.begin(), wanted.end()));
}

TEST_CASE("scheduler: a cancelled wait is forgotten; the others are answered") {
  auto scheduler = make(store::durability::memory, "");
  // No worker yet, so it stays pending while the waits come and one goes; they
  // reach its partition in the order they are sent (one actor mailbox), so the
  // worker that arrives after them finds the cancel done. No clock involved.
  REQUIRE(call<service::started>([&](auto done) { scheduler->start("default", request("hello-1", "HelloCities"), done); }));
  std::atomic<bool> cancelled_answered{false};
  const auto handle = scheduler->wait("default", "hello-1", true,
                                      [&](expected<core::instance_record>) { cancelled_answered = true; });
  scheduler->cancel_wait("default", "hello-1", handle);
  auto answered = std::make_shared<std::promise<expected<core::instance_record>>>();
  auto answer = answered->get_future();
  scheduler->wait("default", "hello-1", true, [answered](expected<core::instance_record> r) { answered->set_value(std::move(r)); });
  auto worker = std::make_shared<test_worker>(*scheduler);
  auto session = scheduler->open_session("default", {10, 10, 0}, worker);
  REQUIRE(session);
  worker->attach(*session);
  REQUIRE(answer.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  auto record = answer.get();
  REQUIRE_MESSAGE(record, (record ? "" : record.error().message));
  CHECK(record->status == core::runtime_status::completed);
  scheduler->close_session(worker->session());
  scheduler->drain();
  CHECK_FALSE(cancelled_answered.load());
}

TEST_CASE("scheduler: a session that lets its lease expire gets no new work, its item goes elsewhere, and it is closed") {
  constexpr std::int64_t lease_ms = 1000;
  auto scheduler = make(store::durability::memory, "", lease_ms);
  auto hung = std::make_shared<test_worker>(*scheduler, true);
  auto hung_session = scheduler->open_session("default", {10, 10, 0}, hung);
  REQUIRE(hung_session);
  hung->attach(*hung_session);
  REQUIRE(call<service::started>([&](auto done) { scheduler->start("default", request("hello-1", "HelloCities"), done); }));
  for (int i = 0; i < 300 && hung->pushed() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(hung->pushed() == 1);

  // A healthy session with as many free slots: before, the expired item went back
  // to the hung session about half the time (the first of two equal ones).
  auto healthy = std::make_shared<test_worker>(*scheduler);
  auto healthy_session = scheduler->open_session("default", {10, 10, 0}, healthy);
  REQUIRE(healthy_session);
  healthy->attach(*healthy_session);
  auto record = call<core::instance_record>([&](auto done) { scheduler->wait("default", "hello-1", true, done); });
  REQUIRE(record);
  CHECK(record->status == core::runtime_status::completed);
  CHECK(hung->pushed() == 1);  // Nothing more went to it once its lease expired.

  // It answered nothing for a lease period after that: closed, told so.
  for (int i = 0; i < 400 && hung->ended().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(hung->ended().find("let its leases expire") != std::string::npos);
  auto workers = call<std::vector<service::worker_view>>([&](auto done) { scheduler->workers("default", done); });
  REQUIRE(workers);
  REQUIRE(workers->size() == 1);
  CHECK(workers->front().session == *healthy_session);
  scheduler->close_session(*healthy_session);
}
