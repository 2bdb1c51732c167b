#pragma once
/// What the REST API asks of dtsd's export jobs (export/jobs.hpp), kept apart so
/// that the dashboard does not depend on how jobs run. Bodies and answers are the
/// REST API's JSON.

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"

namespace dtsd::dashboard {

class export_jobs_api {
 public:
  virtual ~export_jobs_api() = default;
  /// Creates and starts a job from a request body; answers the job.
  virtual expected<nlohmann::json> create(const std::string& hub, const nlohmann::json& body) = 0;
  virtual expected<nlohmann::json> get(const std::string& hub, const std::string& id) = 0;
  virtual expected<nlohmann::json> list(const std::string& hub) = 0;
  /// Stops the job and forgets it; what it wrote stays.
  virtual expected<void> remove(const std::string& hub, const std::string& id) = 0;
};

}  // namespace dtsd::dashboard
