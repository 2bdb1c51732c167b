// bench/actor_hops: what one CAF message hop costs on this machine, with the actor
// system configured as dtsd configures it (sharing policy, 2 threads). It answers
// the design question of per-instance actors: each step of an orchestration would
// cross from the partition actor to the instance's actor and back, so an instance
// actor adds two hops per step to the path that already limits throughput.
//
// A "partition" actor sends `--messages` requests to an "instance" actor, which
// answers each; the run reports round trips per second and the cost per hop, and
// for comparison the same work as a direct function call; then the cost of
// bringing an instance actor to life (spawn, one request, exit), which an
// instance cache of actors pays on every load after eviction. One JSON line.
//
//   build/release/bench/actor_hops [--messages 200000] [--in-flight 1]

#include <caf/all.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <future>

namespace {

using ping_atom = caf::atom_constant<caf::atom("ping")>;
using go_atom = caf::atom_constant<caf::atom("go")>;

/// The work one instance step does in this benchmark: a little arithmetic on its state.
struct instance_state {
  std::uint64_t steps = 0;
  std::uint64_t apply(std::uint64_t input) { return steps += input; }
};

caf::behavior instance_actor(caf::stateful_actor<instance_state>* self) {
  return {[=](ping_atom, std::uint64_t input) { return self->state.apply(input); }};
}

struct partition_state {
  std::uint64_t sent = 0;
  std::uint64_t answered = 0;
  std::uint64_t total = 0;
  std::shared_ptr<std::promise<void>> done;
};

caf::behavior partition_actor(caf::stateful_actor<partition_state>* self, caf::actor instance) {
  return {[=](go_atom, std::uint64_t total, std::uint64_t in_flight, std::shared_ptr<std::promise<void>> done) {
    auto& s = self->state;
    s.total = total;
    s.done = std::move(done);
    auto send_one = std::make_shared<std::function<void()>>();
    *send_one = [=] {
      auto& st = self->state;
      if (st.sent == st.total) return;
      ++st.sent;
      self->request(instance, caf::infinite, ping_atom::value, std::uint64_t{1}).then([=](std::uint64_t) {
        auto& st2 = self->state;
        if (++st2.answered == st2.total) {
          st2.done->set_value();
          return;
        }
        (*send_one)();
      });
    };
    for (std::uint64_t i = 0; i < in_flight; ++i) (*send_one)();
  }};
}

}  // namespace

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<std::promise<void>>)

int main(int argc, char** argv) {
  CLI::App app{"the cost of a CAF message hop"};
  std::uint64_t messages = 200000;
  std::uint64_t in_flight = 1;
  app.add_option("--messages", messages)->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100000000}))->capture_default_str();
  app.add_option("--in-flight", in_flight, "requests outstanding at once")->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10000}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  caf::actor_system_config config;
  config.set("scheduler.max-threads", 2);
  config.set("scheduler.policy", caf::atom("sharing"));
  config.set("logger.verbosity", caf::atom("quiet"));
  double actor_s = 0;
  {
    caf::actor_system system{config};
    auto instance = system.spawn(instance_actor);
    auto partition = system.spawn(partition_actor, instance);
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    const auto began = std::chrono::steady_clock::now();
    caf::anon_send(partition, go_atom::value, messages, in_flight, done);
    finished.wait();
    actor_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    caf::anon_send_exit(partition, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(instance, caf::exit_reason::user_shutdown);
  }

  // Spawning: one actor per "instance", one request each, then it exits.
  double spawn_s = 0;
  const std::uint64_t spawned = std::min<std::uint64_t>(messages, 100000);
  {
    caf::actor_system system{config};
    caf::scoped_actor self{system};
    const auto began = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < spawned; ++i) {
      auto instance = system.spawn(instance_actor);
      self->request(instance, caf::infinite, ping_atom::value, std::uint64_t{1}).receive([](std::uint64_t) {},
                                                                                         [](caf::error&) {});
      self->send_exit(instance, caf::exit_reason::user_shutdown);
    }
    spawn_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  }

  instance_state direct;
  volatile std::uint64_t sink = 0;
  const auto began = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < messages; ++i) sink = direct.apply(1);
  const double direct_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  (void)sink;

  const double round_trips_per_s = static_cast<double>(messages) / actor_s;
  std::printf(
      "{\"bench\":\"actor_hops\",\"messages\":%llu,\"in_flight\":%llu,\"round_trips_per_s\":%.0f,"
      "\"us_per_hop\":%.3f,\"direct_calls_per_s\":%.0f,\"us_per_direct_call\":%.5f,"
      "\"us_per_spawn_request_exit\":%.2f}\n",
      static_cast<unsigned long long>(messages), static_cast<unsigned long long>(in_flight), round_trips_per_s,
      actor_s * 1e6 / (2.0 * static_cast<double>(messages)), static_cast<double>(messages) / direct_s,
      direct_s * 1e6 / static_cast<double>(messages), spawn_s * 1e6 / static_cast<double>(spawned));
  return 0;
}
