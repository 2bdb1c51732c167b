#pragma once
// Real processes for integration tests: dtsd and hello_cities workers on
// 127.0.0.1, started and stopped by PID. Every process a test starts is killed
// and reaped by the guard that started it.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../support/spawn.hpp"
#include "sdk/client.hpp"

namespace integration {

inline std::string binary(const char* variable) {
  const char* path = std::getenv(variable);
  REQUIRE_MESSAGE(path != nullptr, variable << " is not set (run through meson test)");
  return path;
}

/// A port that was free a moment ago.
inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

/// One child process; killed (SIGKILL) and reaped when the guard goes. Its output
/// is read all along (a full pipe would stop it), and the last of it is kept for
/// failure messages (`said()`); DTSD_TEST_ECHO=1 copies it to stderr as it comes.
class process {
 public:
  process(const std::string& path, std::vector<std::string> args, bool wait_ready = false,
          const std::vector<std::string>& environment = {}) {
    std::tie(pid_, out_) = test_support::spawn(path, std::move(args), environment);
    if (wait_ready) wait_for_line("ready", std::chrono::seconds(30));
    drainer_ = std::thread([this] { drain(); });
  }
  ~process() { kill_now(); }
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  void wait_for_line(const std::string& word, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::string seen;
    char buffer[1024];
    while (seen.find(word) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      REQUIRE_MESSAGE(left.count() > 0, "no '" << word << "' from the process; it said: " << seen);
      pollfd readable{out_, POLLIN, 0};
      if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
      auto got = read(out_, buffer, sizeof buffer);
      REQUIRE_MESSAGE(got > 0, "the process ended before saying '" << word << "': " << seen);
      seen.append(buffer, static_cast<std::size_t>(got));
    }
  }

  pid_t pid() const { return pid_; }
  /// The last 64 KiB it wrote.
  std::string said() {
    std::lock_guard lock(said_mutex_);
    return said_;
  }

  void kill_now(int signal_number = SIGKILL) {
    if (pid_ <= 0) return;
    kill(pid_, signal_number);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    stop_draining();
  }

  /// Sends SIGTERM and returns the exit status (waits at most `limit`).
  int terminate(std::chrono::seconds limit) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill_now();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    stop_draining();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  void drain() {
    const bool echo = std::getenv("DTSD_TEST_ECHO") != nullptr;
    char buffer[4096];
    while (!stop_drain_) {
      pollfd readable{out_, POLLIN, 0};
      if (poll(&readable, 1, 100) <= 0) continue;
      const auto got = read(out_, buffer, sizeof buffer);
      if (got <= 0) return;
      if (echo) (void)!write(STDERR_FILENO, buffer, static_cast<std::size_t>(got));
      std::lock_guard lock(said_mutex_);
      said_.append(buffer, static_cast<std::size_t>(got));
      if (said_.size() > 65536) said_.erase(0, said_.size() - 65536);
    }
  }
  void stop_draining() {
    stop_drain_ = true;
    if (drainer_.joinable()) drainer_.join();
    if (out_ >= 0) close(out_);
    out_ = -1;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::atomic<bool> stop_drain_{false};
  std::mutex said_mutex_;
  std::string said_;
  std::thread drainer_;
};

struct command_result {
  int exit_code = -1;
  std::string out;
};

/// Runs a command to its end (bounded by `limit`) and returns its exit code and stdout.
inline command_result run_command(const std::string& path, std::vector<std::string> args,
                                  std::chrono::seconds limit = std::chrono::seconds(60),
                                  const std::vector<std::string>& environment = {}) {
  auto [pid, out] = test_support::spawn(path, std::move(args), environment);
  command_result result;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    pollfd readable{out, POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
    auto got = read(out, buffer, sizeof buffer);
    if (got <= 0) break;
    result.out.append(buffer, static_cast<std::size_t>(got));
  }
  close(out);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

struct server_setup {
  std::filesystem::path data_dir;
  int port = 0;
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> all = {"--data-dir", data_dir.string(), "--listen", address(), "--grpc-listen", "127.0.0.1:0",
                                    "--dashboard-listen", "127.0.0.1:0", "--partitions", "4",
                                    "--log-level", "warn"};
    all.insert(all.end(), extra.begin(), extra.end());
    return all;
  }
};

inline server_setup fresh_server(const std::string& name) {
  server_setup setup;
  setup.data_dir = std::filesystem::temp_directory_path() / ("dtsd-it-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(setup.data_dir);
  setup.port = free_port();
  return setup;
}

/// Connects, retrying while the server starts (bounded).
inline std::unique_ptr<dtsd::sdk::client> connect(const std::string& address) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto made = dtsd::sdk::client::connect(address);
    if (made) return std::move(*made);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("cannot connect to " << address);
  return nullptr;
}

inline dtsd::sdk::json hello_output() {
  dtsd::sdk::json out = dtsd::sdk::json::array();
  for (const char* city : {"Tokyo", "Seattle", "London", "Paris", "Cairo"}) out.push_back(std::string("Hello, ") + city + "!");
  return out;
}

/// Each task scheduled once and completed once; started and completed once.
inline void check_history(const std::string& id, const std::vector<dtsd::core::history_event>& history) {
  namespace ev = dtsd::core::events;
  INFO("instance " << id);
  std::map<std::int32_t, int> scheduled, completed;
  int starts = 0, ends = 0;
  for (const auto& event : history) {
    if (std::holds_alternative<ev::execution_started>(event.body)) ++starts;
    if (std::holds_alternative<ev::execution_completed>(event.body)) ++ends;
    if (std::holds_alternative<ev::task_scheduled>(event.body)) ++scheduled[event.event_id];
    if (const auto* done = std::get_if<ev::task_completed>(&event.body)) ++completed[done->task_scheduled_id];
  }
  CHECK(starts == 1);
  CHECK(ends == 1);
  CHECK(scheduled.size() == 5);
  CHECK(scheduled == completed);
  for (const auto& [task, count] : scheduled) CHECK_MESSAGE(count == 1, "task " << task);
}

}  // namespace integration
