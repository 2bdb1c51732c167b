#include "dashboard/http_server.hpp"

#include "auth/tls_files.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
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
namespace ssl = asio::ssl;
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
  /// Set by stop(): answers that come later are dropped, not posted.
  std::atomic<bool> stopped{false};
};

/// Connections refused with an answer are bounded too: past this many open in
/// all, a new one is closed at once.
constexpr std::size_t refused_extra_max = 64;
/// How long and how much a connection refused mid-request is read (and dropped)
/// so that the client sees the answer rather than a reset.
constexpr auto linger_time = std::chrono::seconds(3);
constexpr std::size_t linger_bytes_max = 64u << 20;
/// Pause before accepting again after accept failed (out of descriptors...).
constexpr auto accept_retry_delay = std::chrono::milliseconds(200);

http_response json_error(unsigned status, const char* code, const std::string& message) {
  std::string text;
  for (char c : message) {
    if (c == '"' || c == '\\') text.push_back('\\');
    text.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  }
  return {status, "application/json", fmt::format(R"({{"code":"{}","message":"{}"}})", code, text), {}};
}

/// What the server holds of a connection, plaintext or TLS.
class connection {
 public:
  virtual ~connection() = default;
  /// Closes the connection now (the server stops).
  virtual void shut() = 0;
};

/// One connection: requests are read and answered one at a time (HTTP/1.1
/// keep-alive; a pipelined request waits in the buffer for the answer before it).
/// `Stream`: beast::tcp_stream, or an ssl_stream over one (TLS, after its handshake).
template <class Stream>
class session final : public connection, public std::enable_shared_from_this<session<Stream>> {
 public:
  /// `tls`: the context of a TLS connection (held while it lives: a reload makes
  /// new ones only); null for plaintext.
  session(std::shared_ptr<asio::io_context> context, tcp::socket socket, std::shared_ptr<shared_state> shared,
          std::shared_ptr<ssl::context> tls = nullptr)
      : context_(std::move(context)), tls_(std::move(tls)), stream_(make_stream(std::move(socket), tls_.get())),
        deadline_(*context_), shared_(std::move(shared)), options_(shared_->options) {
    ++shared_->open;
  }
  ~session() override { --shared_->open; }

  void begin(bool refused) {
    if constexpr (is_tls) {
      // The handshake first, bounded like a read; a client that cannot make it
      // (plaintext, a certificate it does not trust) is closed.
      lowest().expires_after(options_.io_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this(), refused](beast::error_code ec) {
        if (ec) return self->close();
        self->serve(refused);
      });
    } else {
      serve(refused);
    }
  }

  void shut() override { close(); }

 private:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;
  static Stream make_stream(tcp::socket socket, ssl::context* tls) {
    if constexpr (is_tls) {
      return Stream(std::move(socket), *tls);
    } else {
      return Stream(std::move(socket));
    }
  }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void serve(bool refused) {
    if (!refused) return read();
    refuse(json_error(503, "UNAVAILABLE", "too many open connections to the dashboard; try again"));
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(options_.body_bytes_max);
    parser_->header_limit(static_cast<std::uint32_t>(options_.header_bytes_max));
    lowest().expires_after(options_.io_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  /// A client that asked to hear "100 Continue" before it sends the body (curl does,
  /// past 1 KiB) hears it; one whose body is over the limit hears 413 instead
  /// (the header read fails with body_limit) and sends nothing more.
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    const auto expect = parser_->get()[http::field::expect];
    if (!beast::iequals(expect, "100-continue") || parser_->is_done()) return read_body();
    continue_ = {};
    continue_.version(parser_->get().version());
    continue_.result(http::status::continue_);
    http::async_write(stream_, continue_, [self = this->shared_from_this()](beast::error_code written, std::size_t) {
      if (written) return self->close();
      self->read_body();
    });
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  /// Answers a request that was not read whole, then lingers.
  void refuse(http_response answer) {
    keep_alive_ = false;
    refused_early_ = true;
    head_ = false;
    write(std::move(answer));
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return refuse(json_error(413, "PAYLOAD_TOO_LARGE",
                               fmt::format("the request body is over {} bytes", options_.body_bytes_max)));
    }
    if (ec == http::error::header_limit) {
      return refuse(json_error(431, "HEADERS_TOO_LARGE", "the request headers are too large"));
    }
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec && ec.category() == beast::error_code(http::error::end_of_stream).category()) {  // Unreadable HTTP.
      return refuse(json_error(400, "BAD_REQUEST", "malformed HTTP request: " + ec.message()));
    }
    if (ec) return close();
    auto raw = parser_->release();
    keep_alive_ = raw.keep_alive();
    version_ = raw.version();
    head_ = raw.method() == http::verb::head;
    lowest().expires_never();  // The handler has its own deadline; the write gets its bound.
    const auto request = ++requests_;
    deadline_.expires_after(options_.handler_timeout);
    deadline_.async_wait([self = this->shared_from_this(), request](beast::error_code waited) {
      if (waited || self->answered_ == request) return;
      self->answer(request, json_error(503, "UNAVAILABLE", fmt::format("no answer within {} s; try again",
                                                                         self->options_.handler_timeout.count())));
    });
    shared_->handler(to_request(raw), [self = this->shared_from_this(), request](http_response response) {
      if (self->shared_->stopped) return;
      auto executor = self->stream_.get_executor();
      asio::post(executor, [self, request, response = std::move(response)]() mutable {
        self->answer(request, std::move(response));
      });
    });
  }

  /// The first answer to request `request` is written; a later one (the service
  /// after the deadline) is dropped.
  void answer(std::uint64_t request, http_response response) {
    if (answered_ >= request) return;
    answered_ = request;
    deadline_.cancel();
    write(std::move(response));
  }

  void write(http_response answer) {
    response_ = {};
    response_.version(version_);
    response_.result(answer.status);
    response_.set(http::field::server, "dtsd");
    response_.set(http::field::content_type, answer.content_type);
    response_.set(http::field::cache_control, "no-store");
    for (auto& [name, value] : answer.headers) response_.set(name, value);
    response_.keep_alive(keep_alive_);
    if (head_) {  // The length of what a GET would send, and no body.
      response_.content_length(answer.body.size());
    } else {
      response_.body() = std::move(answer.body);
      response_.prepare_payload();
    }
    lowest().expires_after(options_.io_timeout);
    http::async_write(stream_, response_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      if (self->refused_early_) {
        beast::error_code ignored;
        self->lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
        self->lowest().expires_after(linger_time);  // Once: a trickling client cannot hold it.
        return self->linger();
      }
      if (!self->keep_alive_) return self->close();
      self->read();
    });
  }

  /// After refusing a request it had not read whole (too large, too many
  /// connections, malformed): reads what the client still sends, dropping it,
  /// until it closes, linger_time passes or linger_bytes_max came, so that it sees
  /// the answer instead of a reset.
  void linger() {
    stream_.async_read_some(asio::buffer(scratch_), [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
      self->lingered_ += n;
      if (ec || self->lingered_ > linger_bytes_max) return self->close();
      self->linger();
    });
  }

  void close() {
    beast::error_code ignored;
    deadline_.cancel();
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }

  /// First: outlives the socket and the timer (a session can outlive the server,
  /// held by an answer still on its way from the service).
  std::shared_ptr<asio::io_context> context_;
  std::shared_ptr<ssl::context> tls_;
  Stream stream_;
  asio::steady_timer deadline_;
  std::shared_ptr<shared_state> shared_;
  const http_options& options_;  ///< In shared_.
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  http::response<http::empty_body> continue_;
  std::uint64_t requests_ = 0;
  std::uint64_t answered_ = 0;
  bool keep_alive_ = true;
  bool refused_early_ = false;
  bool head_ = false;
  unsigned version_ = 11;
  std::size_t lingered_ = 0;
  std::array<char, 16384> scratch_{};
};

class server_impl final : public http_server {
 public:
  server_impl(http_options options, http_handler handler)
      : shared_(std::make_shared<shared_state>(std::move(options), std::move(handler))), options_(shared_->options) {}

  /// The TLS context from the options' files (checked at start already).
  expected<void> load_tls() {
    if (!options_.tls.enabled()) return {};
    try {
      auto made = std::make_shared<ssl::context>(ssl::context::tls_server);
      made->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      made->use_certificate_chain_file(options_.tls.cert);
      made->use_private_key_file(options_.tls.key, ssl::context::pem);
      if (!options_.tls.client_ca.empty()) {
        made->load_verify_file(options_.tls.client_ca);
        made->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
      std::lock_guard lock(tls_mutex_);
      tls_ = std::move(made);
    } catch (const boost::system::system_error& failure) {
      return error{errc::invalid_argument, fmt::format("the dashboard's TLS files: {}", failure.what())};
    }
    return {};
  }

  expected<void> reload_tls() override {
    if (auto usable = auth::check(options_.tls); !usable) return usable.error();
    return load_tls();
  }

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
    // Every address the name has ("localhost": 127.0.0.1 and ::1), on one port:
    // with port 0 the first one's.
    std::string why;
    for (const auto& entry : endpoints) {
      auto endpoint = entry.endpoint();
      if (port_ != 0) endpoint.port(port_);
      auto acceptor = std::make_unique<tcp::acceptor>(*context_);
      beast::error_code failed;
      acceptor->open(endpoint.protocol(), failed);
      if (!failed) acceptor->set_option(asio::socket_base::reuse_address(true), failed);
      if (!failed && endpoint.address().is_v6()) acceptor->set_option(asio::ip::v6_only(true), failed);
      if (!failed) acceptor->bind(endpoint, failed);
      if (!failed) acceptor->listen(asio::socket_base::max_listen_connections, failed);
      if (failed) {
        why = failed.message();
        continue;
      }
      if (port_ == 0) port_ = acceptor->local_endpoint().port();
      acceptors_.push_back(std::move(acceptor));
    }
    if (acceptors_.empty()) {
      return error{errc::io, fmt::format("cannot listen on dashboard address '{}': {}", options_.address, why)};
    }
    for (auto& acceptor : acceptors_) accept(*acceptor);
    thread_ = std::thread([this] {
      context_->run();
      ran_out_ = true;
    });
    return {};
  }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    if (shared_->stopped.exchange(true)) return;
    // Closing the acceptors and every connection ends all pending work: the io
    // thread runs out of it and returns. Connections waiting for the service hold
    // no work; their answers are dropped (stopped).
    asio::post(*context_, [this] {
      beast::error_code ignored;
      for (auto& acceptor : acceptors_) acceptor->close(ignored);
      retry_.cancel();
      for (auto& weak : sessions_) {
        if (auto live = weak.lock()) live->shut();
      }
      sessions_.clear();
    });
    for (int waited = 0; waited < 50 && !ran_out_; ++waited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    context_->stop();
    if (thread_.joinable()) thread_.join();
    // What a forced stop left queued runs now, on closed sockets, and lets go of
    // its connections.
    context_->restart();
    context_->poll();
  }

 private:
  void accept(tcp::acceptor& acceptor) {
    acceptor.async_accept(asio::make_strand(*context_), [this, &acceptor](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || shared_->stopped) return;
      if (ec) {
        spdlog::warn("dashboard: accept failed: {}; trying again in {} ms", ec.message(), accept_retry_delay.count());
        retry_.expires_after(accept_retry_delay);
        retry_.async_wait([this, &acceptor](beast::error_code waited) {
          if (!waited) accept(acceptor);
        });
        return;
      }
      const auto open = shared_->open.load();
      if (open >= options_.connections_max + refused_extra_max) {
        beast::error_code ignored;
        socket.close(ignored);  // Too many even to refuse politely.
      } else {
        std::erase_if(sessions_, [](const auto& weak) { return weak.expired(); });
        std::shared_ptr<ssl::context> tls;
        {
          std::lock_guard lock(tls_mutex_);
          tls = tls_;
        }
        if (tls) {
          auto made = std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(context_, std::move(socket),
                                                                                      shared_, std::move(tls));
          sessions_.push_back(made);
          made->begin(open >= options_.connections_max);
        } else {
          auto made = std::make_shared<session<beast::tcp_stream>>(context_, std::move(socket), shared_);
          sessions_.push_back(made);
          made->begin(open >= options_.connections_max);
        }
      }
      accept(acceptor);
    });
  }

  std::shared_ptr<shared_state> shared_;
  const http_options& options_;  ///< In shared_.
  std::shared_ptr<asio::io_context> context_ = std::make_shared<asio::io_context>(1);
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  asio::steady_timer retry_{*context_};
  std::vector<std::weak_ptr<connection>> sessions_;  ///< Only on the io thread.
  std::mutex tls_mutex_;
  std::shared_ptr<ssl::context> tls_;  ///< What new connections use (null: plaintext).
  std::uint16_t port_ = 0;
  std::atomic<bool> ran_out_{false};
  std::thread thread_;
};

}  // namespace

expected<std::unique_ptr<http_server>> http_server::start(http_options options, http_handler handler) {
  auto server = std::make_unique<server_impl>(std::move(options), std::move(handler));
  if (auto loaded = server->load_tls(); !loaded) return loaded.error();
  if (auto bound = server->bind(); !bound) return bound.error();
  return std::unique_ptr<http_server>(std::move(server));
}

}  // namespace dtsd::dashboard
