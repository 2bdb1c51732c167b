#pragma once
/// A small HTTP/1.1 server (Boost.Beast on Asio) with its own io_context thread:
/// the dashboard's REST API and web UI are served through it. Every bound is
/// named: connections, header and body sizes, and the time a read or a write may
/// take. A handler answers through its responder, from any thread, exactly once;
/// the server never runs a handler on a thread but its own, and a handler that
/// waits for the service returns at once and answers from the service's callback.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "auth/tls_files.hpp"
#include "core/error.hpp"

namespace dtsd::dashboard {

struct http_request {
  std::string method;  ///< "GET", "POST", ...
  std::string path;    ///< As sent (still percent-encoded: an id may hold a '/'), without the query.
  std::map<std::string, std::string> query;    ///< Percent-decoded parameters.
  std::map<std::string, std::string> headers;  ///< Names in lower case.
  std::string body;

  /// The header's value, or `otherwise` when it is absent.
  std::string header(const std::string& lower_case_name, std::string otherwise = {}) const;
};

struct http_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using responder = std::function<void(http_response)>;
using http_handler = std::function<void(http_request, responder)>;

struct http_options {
  /// host:port; port 0 takes a free one (see port()).
  std::string address = "localhost:8082";
  /// Connections open at once; one more is answered 503 and closed.
  std::size_t connections_max = 256;
  /// The largest request body (a payload at its limit, with headroom for the rest).
  std::size_t body_bytes_max = 16u << 20;
  std::size_t header_bytes_max = 16u << 10;
  /// The longest a request may take to arrive, or its response to leave.
  std::chrono::seconds io_timeout{30};
  /// The longest the handler may take to answer: then 503, and its answer is dropped.
  std::chrono::seconds handler_timeout{60};
  /// TLS (the files checked already): served instead of plaintext.
  auth::tls_files tls;
};

class http_server {
 public:
  /// Binds and starts serving; the error names the address when it cannot bind.
  static expected<std::unique_ptr<http_server>> start(http_options options, http_handler handler);
  virtual ~http_server() = default;
  virtual std::uint16_t port() const = 0;
  /// Stops accepting and closes every connection; answers given later go nowhere.
  virtual void stop() = 0;
  /// Reads the TLS files again (SIGHUP): new connections use them; a file that
  /// does not fit is an error and the old ones stay.
  virtual expected<void> reload_tls() = 0;
};

/// Splits "host:port" ("[::1]:80" too); an error names what is wrong.
expected<std::pair<std::string, std::uint16_t>> split_address(const std::string& address);

/// Decodes %XX escapes (and '+' as a space when `plus_is_space`); malformed escapes stay as written.
std::string percent_decode(std::string_view text, bool plus_is_space = false);

}  // namespace dtsd::dashboard
