#pragma once
// A real etcd (Debian's etcd-server) for tests: one member on loopback ports in a
// fresh directory, killed by PID and removed when the guard goes.

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>

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

/// One etcd member on loopback, in a fresh directory; killed and removed at the end.
struct local_etcd {
  std::filesystem::path directory;
  std::string endpoint;
  pid_t pid = -1;

  local_etcd() {
    static std::random_device seed;
    directory = std::filesystem::temp_directory_path() / ("dtsd-etcd-" + std::to_string(seed()));
    std::filesystem::create_directories(directory);
    const auto client = free_port(), peer = free_port();
    endpoint = "127.0.0.1:" + std::to_string(client);
    const auto client_url = "http://" + endpoint;
    const auto peer_url = "http://127.0.0.1:" + std::to_string(peer);
    pid = fork();
    if (pid == 0) {
      const auto log = directory / "etcd.log";
      FILE* out = std::freopen(log.c_str(), "w", stderr);
      (void)out;
      execlp("etcd", "etcd", "--name", "test", "--data-dir", (directory / "data").c_str(), "--listen-client-urls",
             client_url.c_str(), "--advertise-client-urls", client_url.c_str(), "--listen-peer-urls", peer_url.c_str(),
             "--initial-advertise-peer-urls", peer_url.c_str(), "--initial-cluster", ("test=" + peer_url).c_str(),
             static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~local_etcd() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    std::filesystem::remove_all(directory);
  }

  /// A client once etcd answers (at most 20 s).
  std::unique_ptr<dtsd::cluster::etcd_client> client() {
    auto made = dtsd::cluster::etcd_client::connect({{endpoint}, std::chrono::milliseconds(2000)});
    REQUIRE(made);
    for (int i = 0; i < 100; ++i) {
      if ((*made)->list("/probe/")) return std::move(*made);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    FAIL("etcd did not answer at " << endpoint << " (is etcd-server installed? deploy/install-deps.sh)");
    return nullptr;
  }
};

}  // namespace test_support
