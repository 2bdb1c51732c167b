// Hello cities: an orchestration that calls one activity per city in sequence.
//
//   hello_cities worker [--address 127.0.0.1:8081] [--task-hub default] [--this-node-only]
//   hello_cities client [--count 1] [--address ...] [--task-hub ...]
//
// The client starts the orchestrations, waits for each and checks its output; it
// exits 0 only if every output is exactly the expected one.

#include <signal.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <random>
#include <cstdio>
#include <thread>

#include "sdk/client.hpp"
#include "sdk/worker.hpp"

using namespace dtsd;
using sdk::json;

namespace {

const std::vector<std::string> cities = {"Tokyo", "Seattle", "London", "Paris", "Cairo"};

sdk::task<json> hello_cities(sdk::orchestration_context& ctx, json) {
  json greetings = json::array();
  for (const auto& city : cities) greetings.push_back(co_await ctx.call_activity("SayHello", city));
  co_return greetings;
}

json say_hello(const sdk::activity_context&, const json& city) { return "Hello, " + city.get<std::string>() + "!"; }

json expected_output() {
  json greetings = json::array();
  for (const auto& city : cities) greetings.push_back("Hello, " + city + "!");
  return greetings;
}

int run_worker(const sdk::worker_options& options) {
  // SIGTERM/SIGINT stop the worker from a thread of their own.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  sdk::worker worker(options);
  worker.add_orchestrator("HelloCities", hello_cities).add_activity("SayHello", say_hello);
  std::thread watcher([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    worker.stop();
  });
  worker.run();
  watcher.detach();  // It waits for a signal that may never come; the process ends.
  return 0;
}

/// Calls `call` again while it answers UNAVAILABLE (in a cluster: the instance's
/// partition is moving between nodes) or an I/O error (the connection, or the
/// partition, went before answering: the call may or may not have happened), for
/// at most a minute. Safe for what this client does: waits, and starts under ids
/// of its own (a start that happened before answers already_exists).
template <class Call>
auto retried(Call call) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  for (;;) {
    auto answer = call();
    if (answer || (answer.error().code != errc::unavailable && answer.error().code != errc::io) ||
        std::chrono::steady_clock::now() > until) {
      return answer;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int run_client(const std::string& address, const std::string& hub, const std::string& token,
               const sdk::tls_options& tls, int count) {
  auto client = sdk::client::connect(address, hub, token, tls);
  if (!client) {
    std::fprintf(stderr, "hello_cities: cannot connect to %s: %s\n", address.c_str(), client.error().message.c_str());
    return 1;
  }
  const auto started_at = std::chrono::steady_clock::now();
  std::vector<std::string> ids;
  std::random_device seed;
  const auto run = fmt::format("{:08x}", seed());
  for (int i = 0; i < count; ++i) {
    // An id of our own, so that a start tried again is the same start (a retry
    // that finds it there was acknowledged before, and its answer lost).
    sdk::start_options options;
    options.instance_id = fmt::format("hello-{}-{}", run, i);
    auto id = retried([&] { return (*client)->start("HelloCities", json(), options); });
    if (!id && id.error().code != errc::already_exists) {
      std::fprintf(stderr, "hello_cities: start failed: %s\n", id.error().message.c_str());
      return 1;
    }
    ids.push_back(options.instance_id);
  }
  int wrong = 0;
  for (const auto& id : ids) {
    auto done = retried([&] { return (*client)->wait_for_completion(id, std::chrono::minutes(10)); });
    if (!done) {
      std::fprintf(stderr, "hello_cities: %s: %s\n", id.c_str(), done.error().message.c_str());
      ++wrong;
      continue;
    }
    if (done->status != core::runtime_status::completed || sdk::output_of(*done) != expected_output()) {
      std::fprintf(stderr, "hello_cities: %s ended %s with %s\n", id.c_str(), std::string(core::to_string(done->status)).c_str(),
                   done->output.value_or("null").c_str());
      ++wrong;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count();
  if (count == 1 && wrong == 0) std::printf("%s\n", expected_output().dump().c_str());
  std::printf("{\"orchestrations\":%d,\"correct\":%d,\"wall_s\":%.3f}\n", count, count - wrong, seconds);
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hello cities on dtsd"};
  std::string address = "127.0.0.1:8081";
  std::string hub = "default";
  int count = 1;
  std::string token;
  sdk::tls_options tls;
  sdk::worker_options options;
  app.require_subcommand(1);
  auto* worker = app.add_subcommand("worker", "Serve HelloCities and SayHello");
  auto* client = app.add_subcommand("client", "Start orchestrations and check their output");
  for (auto* command : {worker, client}) {
    command->add_option("--address", address, "dtsd's native API")->capture_default_str();
    command->add_option("--task-hub", hub)->capture_default_str();
    command->add_option("--token", token, "For a dtsd run with --auth: a worker token (worker), a contributor token (client)")
        ->envname("DTSD_TOKEN");
    command->add_option("--tls-ca", tls.ca, "For a dtsd whose native API serves TLS: the CA to trust")->envname("DTSD_TLS_CA");
    command->add_option("--tls-client-cert", tls.cert, "For a dtsd run with --tls-client-ca: this client's certificate")
        ->envname("DTSD_TLS_CLIENT_CERT");
    command->add_option("--tls-client-key", tls.key, "The key of --tls-client-cert")->envname("DTSD_TLS_CLIENT_KEY");
    command->add_option("--tls-server-name", tls.server_name, "The name dtsd's certificate carries (default: --address's host)")
        ->envname("DTSD_TLS_SERVER_NAME");
  }
  worker->add_option("--activities", options.activity_concurrency, "Activities run at once")->capture_default_str();
  worker->add_option("--threads", options.threads, "Threads running work (0: one per activity slot)")
      ->capture_default_str();
  worker->add_flag("--this-node-only", options.this_node_only,
                   "In a cluster: only the work of the partitions this node serves (no relay)");
  worker->add_option("--orchestrators", options.orchestrator_concurrency, "Orchestrator work items taken at once")
      ->capture_default_str();
  client->add_option("--count", count, "Orchestrations to run")->check(CLI::Range(1, 1000000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (worker->parsed()) {
    options.address = address;
    options.task_hub = hub;
    options.token = token;
    options.tls = tls;
    return run_worker(options);
  }
  return run_client(address, hub, token, tls, count);
}
