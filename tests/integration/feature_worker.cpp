// A worker with one orchestrator per feature, for the feature tests.
//   feature_worker ADDRESS

#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "sdk/worker.hpp"

using namespace dtsd;
using sdk::json;
using sdk::orchestration_context;
using sdk::task;

namespace {

task<json> timer(orchestration_context& ctx, json) {
  co_await ctx.create_timer(std::chrono::milliseconds(300));
  co_return "woke";
}

/// Hello cities: five activities in sequence.
task<json> cities(orchestration_context& ctx, json) {
  json out = json::array();
  for (const char* city : {"Tokyo", "Seattle", "London", "Paris", "Cairo"}) {
    out.push_back(co_await ctx.call_activity("SayHello", city));
  }
  co_return out;
}

task<json> wait_event(orchestration_context& ctx, json) {
  co_return co_await ctx.wait_for_external_event("Approval");
}

task<json> child(orchestration_context& ctx, json input) {
  co_return co_await ctx.call_activity("Double", input);
}

task<json> parent(orchestration_context& ctx, json) {
  std::vector<sdk::durable> children;
  for (int i = 1; i <= 3; ++i) children.push_back(ctx.call_sub_orchestrator("Child", i));
  int sum = 0;
  for (auto& call : children) sum += (co_await call).get<int>();  // Fan-out, then fan-in.
  co_return sum;
}

task<json> counter(orchestration_context& ctx, json input) {
  int value = input.is_number() ? input.get<int>() : 0;
  if (value < 5) {
    ctx.continue_as_new(value + 1);
    co_return nullptr;
  }
  co_return value;
}

task<json> status(orchestration_context& ctx, json) {
  ctx.set_custom_status("halfway");
  co_await ctx.wait_for_external_event("Go");
  ctx.set_custom_status("done");
  co_return "finished";
}

task<json> failing(orchestration_context& ctx, json) {
  co_return co_await ctx.call_activity("Fail", "boom");
}

task<json> retrying(orchestration_context& ctx, json) {
  sdk::retry_policy policy;
  policy.max_attempts = 4;
  policy.first_interval = std::chrono::milliseconds(50);
  co_return co_await ctx.call_activity_with_retry("Flaky", ctx.instance_id(), policy);
}

task<json> long_wait(orchestration_context& ctx, json) {
  co_return co_await ctx.wait_for_external_event("Never");
}

task<json> echo(orchestration_context&, json input) { co_return input; }

task<json> race(orchestration_context& ctx, json) {
  std::vector<sdk::durable> contenders;
  contenders.push_back(ctx.call_activity("Slow", 10000));  // A wide margin on a loaded machine.
  contenders.push_back(ctx.create_timer(std::chrono::milliseconds(100)));
  co_return co_await ctx.when_any(contenders);
}

task<json> event_with_timeout(orchestration_context& ctx, json input) {
  try {
    co_return co_await ctx.wait_for_external_event("Hello", std::chrono::milliseconds(input.get<int>()));
  } catch (const sdk::task_failed& failure) {
    co_return failure.details().error_type;
  }
}

task<json> fan_all(orchestration_context& ctx, json) {
  std::vector<sdk::durable> calls;
  for (int i = 1; i <= 5; ++i) calls.push_back(ctx.call_activity("Double", i));
  co_return co_await ctx.when_all(calls);
}

std::mutex flaky_mutex;
std::map<std::string, int> flaky_calls;

/// A counter entity: add, get, fail (throws), delete (removes the state), forward
/// (signals another counter).
json counter_entity(sdk::entity_context& ctx, const std::string& operation, const json& input) {
  if (operation == "add") {
    ctx.set_state(ctx.state(0).get<int>() + input.get<int>());
    return ctx.state();
  }
  if (operation == "get") return ctx.state(0);
  if (operation == "set") {
    ctx.set_state(input);
    return input;
  }
  if (operation == "fail") {
    ctx.set_state(-1000);  // Dropped with the failure.
    throw std::runtime_error("the counter refuses");
  }
  if (operation == "delete") {
    ctx.delete_state();
    return json();
  }
  if (operation == "forward") {
    ctx.signal_entity(input.get<std::string>(), "add", 1);
    return json();
  }
  throw std::runtime_error("no operation " + operation);
}

task<json> entity_caller(orchestration_context& ctx, json key) {
  const auto id = "@counter@" + key.get<std::string>();
  co_await ctx.call_entity(id, "add", 3);
  ctx.signal_entity(id + "-side", "add", 7);
  json out = json::object();
  out["after"] = co_await ctx.call_entity(id, "add", 4);
  try {
    co_await ctx.call_entity(id, "fail");
  } catch (const sdk::task_failed& failed) {
    out["failure"] = failed.details().error_message;
  }
  out["final"] = co_await ctx.call_entity(id, "get");
  co_return out;
}

/// Moves an amount between two counters with a read-modify-write that only a
/// critical section keeps correct.
task<json> locked_transfer(orchestration_context& ctx, json input) {
  const auto from = "@counter@" + input["from"].get<std::string>();
  const auto to = "@counter@" + input["to"].get<std::string>();
  const auto amount = input["amount"].get<int>();
  std::vector<std::string> both;
  both.push_back(from);
  both.push_back(to);
  co_await ctx.lock_entities(both);
  const auto a = (co_await ctx.call_entity(from, "get")).get<int>();
  const auto b = (co_await ctx.call_entity(to, "get")).get<int>();
  co_await ctx.call_entity(from, "set", a - amount);
  co_await ctx.call_entity(to, "set", b + amount);
  ctx.unlock_entities();
  co_return a;
}

task<json> rewindable(orchestration_context& ctx, json) {
  json out = json::array();
  out.push_back(co_await ctx.call_activity("Double", 21));
  out.push_back(co_await ctx.call_activity("FailsOnce", ctx.instance_id()));
  co_return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  sdk::worker worker({argv[1], "default", 64, 8});
  worker.add_orchestrator("Timer", timer)
      .add_orchestrator("WaitEvent", wait_event)
      .add_orchestrator("Cities", cities)
      .add_orchestrator("Child", child)
      .add_orchestrator("Parent", parent)
      .add_orchestrator("Counter", counter)
      .add_orchestrator("Status", status)
      .add_orchestrator("Failing", failing)
      .add_orchestrator("Retrying", retrying)
      .add_orchestrator("LongWait", long_wait)
      .add_orchestrator("Echo", echo)
      .add_orchestrator("Race", race)
      .add_orchestrator("EventWithTimeout", event_with_timeout)
      .add_orchestrator("FanAll", fan_all)
      .add_orchestrator("Rewindable", rewindable)
      .add_orchestrator("EntityCaller", entity_caller)
      .add_orchestrator("LockedTransfer", locked_transfer)
      .add_entity("counter", counter_entity)
      .add_activity("Slow", [](const sdk::activity_context&, const json& ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms.get<int>()));
        return json("slow done");
      })
      .add_activity("SayHello",
                    [](const sdk::activity_context&, const json& city) {
                      return json("Hello, " + city.get<std::string>() + "!");
                    })
      .add_activity("Double", [](const sdk::activity_context&, const json& x) { return json(x.get<int>() * 2); })
      .add_activity("Fail", [](const sdk::activity_context&, const json& x) -> json {
        throw std::runtime_error("activity failed with " + x.get<std::string>());
      })
      .add_activity("FailsOnce", [](const sdk::activity_context&, const json& id) -> json {
        std::lock_guard lock(flaky_mutex);
        if (++flaky_calls["once:" + id.get<std::string>()] == 1) throw std::runtime_error("first call fails");
        return "second call works";
      })
      .add_activity("Flaky", [](const sdk::activity_context&, const json& id) -> json {
        std::lock_guard lock(flaky_mutex);
        if (++flaky_calls[id.get<std::string>()] < 3) throw std::runtime_error("not yet");
        return "third time lucky";
      });
  std::thread watcher([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    worker.stop();
  });
  watcher.detach();
  worker.run();
  return 0;
}
