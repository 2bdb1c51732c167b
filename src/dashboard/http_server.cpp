#include "dashboard/http_server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <charconv>
#include <optional>
#include <thread>

namespace dtsd::dashboard {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string http_request::header(const std::string& lower_case_name, std::string otherwise) const {
  auto found = headers.find(lower_case_name);
  return found == headers.end() ? std::move(otherwise) : found->second;
}

expected<std::pair<std::string, std::uint16_t>> split_address(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return error{errc::invalid_argument, fmt::format("address '{}' is not host:port", address)};
  }
  auto host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  const auto digits = std::string_view(address).substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc{} || end != digits.data() + digits.size() || port > 65535) {
    return error{errc::invalid_argument, fmt::format("address '{}' has no valid port", address)};
  }
  if (host.empty()) host = "0.0.0.0";
  return std::make_pair(host, static_cast<std::uint16_t>(port));
}

std::string percent_decode(std::string_view text, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2])));
      i += 2;
    } else if (plus_is_space && text[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

namespace {

http_request to_request(http::request<http::string_body>& raw) {
  http_request request;
  request.method = std::string(raw.method_string());
  const auto raw_target = raw.target();
  const std::string_view target(raw_target.data(), raw_target.size());
  const auto question = target.find('?');
  request.path = std::string(target.substr(0, question));
  if (question != std::string_view::npos) {
    auto rest = target.substr(question + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const auto pair = rest.substr(0, amp);
      const auto equals = pair.find('=');
      auto key = percent_decode(pair.substr(0, equals), true);
      auto value = equals == std::string_view::npos ? std::string() : percent_decode(pair.substr(equals + 1), true);
      if (!key.empty()) request.query.emplace(std::move(key), std::move(value));
      if (amp == std::string_view::npos) break;
      rest = rest.substr(amp + 1);
    }
  }
  for (const auto& field : raw) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    request.headers[name] = std::string(field.value());
  }
  request.body = std::move(raw.body());
  return request;
}

/// What the server and its connections share: a connection may outlive the
/// server while the service still works on its request.
struct shared_state {
  shared_state(http_options o, http_handler h) : options(std::move(o)), handler(std::move(h)) {}
  const http_options options;
  const http_handler handler;
  std::atomic<std::size_t> open{0};
};

/// One connection: requests are read and answered one at a time (HTTP/1.1
/// keep-alive, no pipelining of answers).
class session : public std::enable_shared_from_this<session> {
 public:
  session(std::shared_ptr<asio::io_context> context, tcp::socket socket, std::shared_ptr<shared_state> shared)
      : context_(std::move(context)), stream_(std::move(socket)), shared_(std::move(shared)),
        options_(shared_->options) {
    ++shared_->open;
  }
  ~session() { --shared_->open; }

  void begin(bool refused) {
    if (!refused) return read();
    http_response busy{503, "application/json",
                       R"({"code":"UNAVAILABLE","message":"too many open connections to the dashboard; try again"})",
                       {}};
    keep_alive_ = false;
    refused_early_ = true;
    write(std::move(busy));
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(options_.body_bytes_max);
    parser_->header_limit(static_cast<std::uint32_t>(options_.header_bytes_max));
    stream_.expires_after(options_.io_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      refused_early_ = true;
      return write({413, "application/json",
                    fmt::format(R"({{"code":"PAYLOAD_TOO_LARGE","message":"the request body is over {} bytes"}})",
                                options_.body_bytes_max),
                    {}});
    }
    if (ec == http::error::header_limit) {
      keep_alive_ = false;
      refused_early_ = true;
      return write({431, "application/json",
                    R"({"code":"HEADERS_TOO_LARGE","message":"the request headers are too large"})", {}});
    }
    if (ec) return close();
    auto raw = parser_->release();
    keep_alive_ = raw.keep_alive();
    version_ = raw.version();
    head_ = raw.method() == http::verb::head;
    stream_.expires_never();  // The handler's time is the service's; the write gets its own bound.
    shared_->handler(to_request(raw), [self = shared_from_this()](http_response response) {
      auto executor = self->stream_.get_executor();
      asio::post(executor, [self, response = std::move(response)]() mutable { self->write(std::move(response)); });
    });
  }

  void write(http_response answer) {
    response_ = {};
    response_.version(version_);
    response_.result(answer.status);
    response_.set(http::field::server, "dtsd");
    response_.set(http::field::content_type, answer.content_type);
    response_.set(http::field::cache_control, "no-store");
    for (auto& [name, value] : answer.headers) response_.set(name, value);
    response_.body() = head_ ? std::string() : std::move(answer.body);
    response_.keep_alive(keep_alive_);
    response_.prepare_payload();
    stream_.expires_after(options_.io_timeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      if (self->refused_early_) return self->linger();
      if (!self->keep_alive_) return self->close();
      self->read();
    });
  }

  /// After refusing a request it had not read whole (too large, too many
  /// connections): stops sending and reads what the client still sends, dropping
  /// it, until it closes or the io timeout, so that it sees the answer instead of
  /// a reset.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(options_.io_timeout);
    stream_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->linger();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  std::shared_ptr<asio::io_context> context_;  ///< First: outlives the stream.
  beast::tcp_stream stream_;
  std::shared_ptr<shared_state> shared_;
  const http_options& options_;  ///< In shared_.
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  bool keep_alive_ = true;
  bool refused_early_ = false;
  std::array<char, 16384> scratch_{};
  bool head_ = false;
  unsigned version_ = 11;
};

class server_impl final : public http_server {
 public:
  server_impl(http_options options, http_handler handler)
      : shared_(std::make_shared<shared_state>(std::move(options), std::move(handler))), options_(shared_->options) {}

  ~server_impl() override { stop(); }

  expected<void> bind() {
    auto address = split_address(options_.address);
    if (!address) return address.error();
    beast::error_code ec;
    tcp::resolver resolver(*context_);
    auto endpoints = resolver.resolve(address->first, std::to_string(address->second), ec);
    if (ec || endpoints.empty()) {
      return error{errc::invalid_argument,
                   fmt::format("cannot resolve dashboard address '{}': {}", options_.address, ec.message())};
    }
    const auto endpoint = endpoints.begin()->endpoint();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return error{errc::io, fmt::format("cannot listen on dashboard address '{}': {}", options_.address, ec.message())};
    }
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { context_->run(); });
    return {};
  }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    if (stopped_.exchange(true)) return;
    asio::post(*context_, [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
    });
    context_->stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void accept() {
    acceptor_.async_accept(asio::make_strand(*context_), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        spdlog::warn("dashboard: accept failed: {}", ec.message());
      } else {
        const bool refused = shared_->open.load() >= options_.connections_max;
        std::make_shared<session>(context_, std::move(socket), shared_)->begin(refused);
      }
      accept();
    });
  }

  std::shared_ptr<shared_state> shared_;
  const http_options& options_;  ///< In shared_.
  std::shared_ptr<asio::io_context> context_ = std::make_shared<asio::io_context>(1);
  tcp::acceptor acceptor_{*context_};
  std::uint16_t port_ = 0;
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

}  // namespace

expected<std::unique_ptr<http_server>> http_server::start(http_options options, http_handler handler) {
  auto server = std::make_unique<server_impl>(std::move(options), std::move(handler));
  if (auto bound = server->bind(); !bound) return bound.error();
  return std::unique_ptr<http_server>(std::move(server));
}

}  // namespace dtsd::dashboard
