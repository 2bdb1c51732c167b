#pragma once
// A real etcd (Debian's etcd-server) for tests: one or three members on loopback
// ports in a fresh directory, killed by PID and removed when the guard goes.

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.hpp"

namespace test_support {

/// A loopback port that was free a moment ago.
inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

/// An etcd of one or three members on loopback, in a fresh directory; every member
/// is killed by PID and the directory removed at the end. A member can be killed
/// and started again (same name, ports and data) to test leader loss and quorum.
struct local_etcd {
  struct member {
    std::string name;
    std::string client_url, peer_url;
    std::string endpoint;  ///< host:port of its client API.
    pid_t pid = -1;
  };
  std::filesystem::path directory;
  std::vector<member> members;
  std::string endpoint;  ///< Every member's client address, comma-separated.

  explicit local_etcd(int count = 1) {
    static std::random_device seed;
    directory = std::filesystem::temp_directory_path() / ("dtsd-etcd-" + std::to_string(seed()));
    std::filesystem::create_directories(directory);
    for (int i = 0; i < count; ++i) {
      member m;
      m.name = "m" + std::to_string(i);
      m.endpoint = "127.0.0.1:" + std::to_string(free_port());
      m.client_url = "http://" + m.endpoint;
      m.peer_url = "http://127.0.0.1:" + std::to_string(free_port());
      endpoint += (i ? "," : "") + m.endpoint;
      members.push_back(std::move(m));
    }
    for (std::size_t i = 0; i < members.size(); ++i) start(i);
  }
  ~local_etcd() {
    for (std::size_t i = 0; i < members.size(); ++i) stop(i);
    std::filesystem::remove_all(directory);
  }

  /// Starts member `i` (again: with its data as it was left).
  void start(std::size_t i) {
    auto& m = members[i];
    std::string cluster;
    for (const auto& other : members) cluster += (cluster.empty() ? "" : ",") + other.name + "=" + other.peer_url;
    const auto log = directory / (m.name + ".log");
    const auto data = directory / (m.name + ".data");
    m.pid = fork();
    if (m.pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // Never outlives a test that crashed.
      FILE* out = std::freopen(log.c_str(), "a", stderr);
      (void)out;
      execlp("etcd", "etcd", "--name", m.name.c_str(), "--data-dir", data.c_str(), "--listen-client-urls",
             m.client_url.c_str(), "--advertise-client-urls", m.client_url.c_str(), "--listen-peer-urls",
             m.peer_url.c_str(), "--initial-advertise-peer-urls", m.peer_url.c_str(), "--initial-cluster",
             cluster.c_str(), "--initial-cluster-state", "new", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  /// Kills member `i` (SIGKILL) and waits for it.
  void stop(std::size_t i) {
    auto& m = members[i];
    if (m.pid > 0) {
      kill(m.pid, SIGKILL);
      waitpid(m.pid, nullptr, 0);
      m.pid = -1;
    }
  }

  /// The index of the member that leads now (asked with etcdctl), if one does.
  std::optional<std::size_t> leader() const {
    const auto command = "etcdctl --command-timeout=2s --endpoints=" + endpoint + " endpoint status -w json 2>/dev/null";
    std::string out;
    if (FILE* pipe = popen(command.c_str(), "r")) {
      char buffer[4096];
      for (std::size_t got; (got = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, got);
      pclose(pipe);
    }
    // Each member's status names the member itself and the leader it follows.
    for (std::size_t at = 0; (at = out.find("\"Endpoint\":\"", at)) != std::string::npos;) {
      at += 12;
      const auto endpoint_text = out.substr(at, out.find('"', at) - at);
      const auto id = number_after(out, "\"member_id\":", at), lead = number_after(out, "\"leader\":", at);
      if (!id.empty() && id == lead) {
        for (std::size_t i = 0; i < members.size(); ++i) {
          if (members[i].endpoint == endpoint_text) return i;
        }
      }
    }
    return std::nullopt;
  }

  /// A client once etcd answers (at most 20 s).
  std::unique_ptr<dtsd::cluster::etcd_client> client() {
    auto made = dtsd::cluster::etcd_client::connect({split(endpoint), std::chrono::milliseconds(2000)});
    REQUIRE(made);
    for (int i = 0; i < 100; ++i) {
      if ((*made)->list("/probe/")) return std::move(*made);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    FAIL("etcd did not answer at " << endpoint << " (is etcd-server installed? deploy/install-deps.sh)");
    return nullptr;
  }

 private:
  static std::vector<std::string> split(const std::string& list) {
    std::vector<std::string> out;
    for (std::size_t at = 0; at <= list.size();) {
      auto comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      out.push_back(list.substr(at, comma - at));
      at = comma + 1;
    }
    return out;
  }
  /// The digits after the first `key` at or after `from` (empty if none).
  static std::string number_after(const std::string& text, const std::string& key, std::size_t from) {
    auto at = text.find(key, from);
    if (at == std::string::npos) return {};
    at += key.size();
    const auto end = text.find_first_not_of("0123456789", at);
    return text.substr(at, end - at);
  }
};

}  // namespace test_support
