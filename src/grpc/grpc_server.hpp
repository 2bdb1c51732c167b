#pragma once
/// The Durable Task gRPC endpoint (schema/durabletask.proto, service
/// TaskHubSidecarService): what the official Durable Task SDKs talk to. It uses
/// gRPC's callback API, so no thread waits on the scheduler: a call hands its
/// request to the scheduler and the scheduler's callback, on an actor thread,
/// finishes the call. The task hub comes from the `taskhub` request header
/// (missing: "default").

#include <cstdint>
#include <memory>
#include <string>

#include "auth/tls_files.hpp"
#include "service/service.hpp"
#include "core/error.hpp"

namespace dtsd::auth {
class authority;
}

namespace dtsd::grpc_api {

struct grpc_options {
  /// "127.0.0.1:8080", "localhost:8080", "0.0.0.0:8080"; port 0 picks one.
  std::string address = "localhost:8080";
  /// Partitions of a task hub created through CreateTaskHub.
  std::uint32_t partition_count = 12;
  /// Work items a worker may hold when its GetWorkItems request says 0.
  std::uint32_t default_concurrency = 100;
  /// Checks every call's token (--auth); null: every call is let through.
  const auth::authority* authority = nullptr;
  /// TLS (the files checked already): served instead of plaintext; the files are
  /// watched and read again when they change (a renewed certificate needs no restart).
  auth::tls_files tls;
};

class grpc_server {
 public:
  static expected<std::unique_ptr<grpc_server>> start(service::task_service& scheduler, grpc_options options);
  virtual ~grpc_server() = default;
  virtual std::uint16_t port() const = 0;
  /// Ends every open call (work streams and waits get CANCELLED) and stops.
  virtual void stop() = 0;
};

}  // namespace dtsd::grpc_api
