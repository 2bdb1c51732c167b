#pragma once
/// The DTS REST API (what the DTS scheduler serves to its dashboard and to
/// Microsoft's tools), over the service: every route is one service call or one
/// composition the service already has, answered as JSON. Served under
/// /v1/taskhubs/ and /api/v1/taskhubs/; the task hub comes from the x-taskhub
/// header (missing: "default"). Also /healthz, /readyz and /metrics.

#include <memory>

#include "dashboard/export_jobs_api.hpp"
#include "dashboard/http_server.hpp"
#include "service/service.hpp"

namespace dtsd::auth {
class authority;
}

namespace dtsd::dashboard {

struct rest_options {
  /// Rows one list call returns at most (`count` above it is refused).
  std::size_t page_rows_max = 1000;
  /// Instances one bulk call names at most.
  std::size_t bulk_ids_max = service::task_service::batch_ids_max;
  /// Checks each API call's `authorization: Bearer` token (--auth); null: open.
  /// The UI's files, /healthz and /readyz (which then lists only the hubs the
  /// request's token is for) need none; /metrics needs a reader of every hub.
  const auth::authority* authority = nullptr;
  /// dtsd's export jobs (/v1/taskhubs/exports); null: none. Shared: a call still
  /// queued when dtsd stops keeps them alive (they refuse new work by then).
  std::shared_ptr<export_jobs_api> export_jobs;
};

/// The API: its handler is what the HTTP server runs for every request. Close it
/// (after the server stopped, before the service goes): list scans still reading
/// the service end, and none calls it again.
class rest_endpoint {
 public:
  explicit rest_endpoint(service::task_service& service, rest_options options = {});
  ~rest_endpoint();
  http_handler handler() const;
  void close();

 private:
  std::shared_ptr<class rest_api> api_;
};

}  // namespace dtsd::dashboard
