#pragma once
// A TCP forwarder on loopback that a test can cut and heal, to cut one process off
// from another without root: a process is given the proxy's address instead of
// the real one. Cut, it behaves as a firewall that drops packets: nothing passes in
// either direction and new connections get no answer, but no connection is closed,
// so what was sent waits (in the kernel's buffers) and flows once healed.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test_support {

class tcp_proxy {
 public:
  /// Forwards connections made to `address()` to 127.0.0.1:`target_port`.
  explicit tcp_proxy(int target_port) : target_port_(target_port) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    const int on = 1;
    setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || listen(listener_, 64) != 0) {
      throw std::runtime_error("tcp_proxy: cannot listen on loopback");
    }
    socklen_t length = sizeof address;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~tcp_proxy() {
    stopping_ = true;
    thread_.join();
    for (auto& link : links_) close_link(link);
    close(listener_);
  }
  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void cut() { cut_ = true; }
  void heal() { cut_ = false; }

 private:
  /// One forwarded connection: the client's socket, the target's, and what each
  /// side sent that the other has not taken yet.
  struct link {
    int client = -1, target = -1;
    std::string to_target, to_client;
  };

  static void close_link(link& l) {
    if (l.client >= 0) close(l.client);
    if (l.target >= 0) close(l.target);
    l.client = l.target = -1;
  }

  void accept_one() {
    const int client = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK);
    if (client < 0) return;
    const int target = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(target_port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(target, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      close(client);
      close(target);
      return;
    }
    fcntl(target, F_SETFL, fcntl(target, F_GETFL) | O_NONBLOCK);
    links_.push_back(link{client, target, {}, {}});
  }

  /// Moves what `from` has into `pending`, and `pending` into `to`; false when the
  /// connection is over.
  static bool pump(int from, short from_events, std::string& pending, int to, short to_events) {
    if (from_events & (POLLIN | POLLHUP | POLLERR)) {
      char buffer[65536];
      const auto got = read(from, buffer, sizeof buffer);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) return false;
      if (got > 0) pending.append(buffer, static_cast<std::size_t>(got));
    }
    if (!pending.empty() && (to_events & POLLOUT || from_events & POLLIN)) {
      const auto put = send(to, pending.data(), pending.size(), MSG_NOSIGNAL);
      if (put < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (put > 0) pending.erase(0, static_cast<std::size_t>(put));
    }
    return true;
  }

  void run() {
    constexpr std::size_t most_pending = 1 << 20;
    while (!stopping_) {
      const bool open = !cut_;
      if (!open) {  // (Not polled while cut: a reset socket would report itself at once, again and again.)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      std::vector<pollfd> polled{{listener_, static_cast<short>(open ? POLLIN : 0), 0}};
      for (const auto& l : links_) {
        const auto wants = [&](const std::string& incoming, const std::string& outgoing) {
          short events = 0;
          if (open && incoming.size() < most_pending) events |= POLLIN;
          if (open && !outgoing.empty()) events |= POLLOUT;
          return events;
        };
        polled.push_back({l.client, wants(l.to_target, l.to_client), 0});
        polled.push_back({l.target, wants(l.to_client, l.to_target), 0});
      }
      if (poll(polled.data(), polled.size(), 20) <= 0 || !open) continue;
      for (std::size_t i = 0; i < links_.size(); ++i) {
        auto& l = links_[i];
        const auto client_events = polled[1 + 2 * i].revents, target_events = polled[2 + 2 * i].revents;
        if (!pump(l.client, client_events, l.to_target, l.target, target_events) ||
            !pump(l.target, target_events, l.to_client, l.client, client_events)) {
          close_link(l);
        }
      }
      std::erase_if(links_, [](const link& l) { return l.client < 0; });
      if (polled[0].revents & POLLIN) accept_one();
    }
  }

  const int target_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> cut_{false}, stopping_{false};
  std::vector<link> links_;  ///< Touched by the proxy's thread only (and the destructor after it).
  std::thread thread_;
};

}  // namespace test_support
