#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "service/deadlines.hpp"

using namespace dtsd;
using namespace std::chrono_literals;

TEST_CASE("deadlines: actions run in deadline order, not before their time") {
  service::deadlines timers;
  const auto start = std::chrono::steady_clock::now();
  std::mutex mutex;
  std::vector<int> order;
  std::promise<std::chrono::steady_clock::time_point> last;
  REQUIRE(timers.after(60ms, [&] {
    std::lock_guard lock(mutex);
    order.push_back(2);
    last.set_value(std::chrono::steady_clock::now());
  }));
  REQUIRE(timers.after(20ms, [&] {
    std::lock_guard lock(mutex);
    order.push_back(1);
  }));
  auto ran = last.get_future();
  REQUIRE(ran.wait_for(5s) == std::future_status::ready);
  CHECK(ran.get() - start >= 60ms);
  std::lock_guard lock(mutex);
  CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("deadlines: what still waits runs when they stop, and a full queue refuses") {
  std::atomic<int> ran{0};
  {
    service::deadlines timers;
    REQUIRE(timers.after(1h, [&] { ++ran; }));
    for (std::size_t i = 1; i < service::deadlines::pending_max; ++i) REQUIRE(timers.after(1h, [&] { ++ran; }));
    CHECK_FALSE(timers.after(1h, [&] { ran += 1000000; }));
    CHECK(ran.load() == 0);
  }
  CHECK(ran.load() == static_cast<int>(service::deadlines::pending_max));
}
