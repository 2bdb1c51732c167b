#pragma once
/// Export jobs run by dtsd: a history export (history_export.hpp) of a task hub
/// into a file under dtsd's export directory, created over the REST API
/// (/v1/taskhubs/exports), in a thread of its own that reads and purges through
/// the service. A job is kept on disk (DIR/HUB/ID.job.json, written durably before
/// the job is answered) beside its file (DIR/HUB/ID.jsonl[.gz]) and the export's
/// progress (FILE.progress), so a dtsd that stops or crashes resumes every
/// unfinished job where its last whole page left it when it starts again.
///
/// Batch: the orchestrations that ended in a window, once. Continuous: what ends
/// from now on, page after page, until the job is deleted (it purges what it
/// wrote: that is how the next pass knows what is new).

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "dashboard/export_jobs_api.hpp"
#include "export/history_export.hpp"
#include "service/service.hpp"

namespace dtsd::history_export {

class jobs final : public dashboard::export_jobs_api {
 public:
  /// Jobs keep their files under `dir` (created when needed).
  jobs(service::task_service& service, std::filesystem::path dir);
  ~jobs() override;
  jobs(const jobs&) = delete;
  jobs& operator=(const jobs&) = delete;

  /// Starts every job found under the directory that has not finished.
  void resume_all();
  /// Stops every job between two pages (each resumes on the next start).
  void stop_all();

  expected<nlohmann::json> create(const std::string& hub, const nlohmann::json& body) override;
  expected<nlohmann::json> get(const std::string& hub, const std::string& id) override;
  expected<nlohmann::json> list(const std::string& hub) override;
  expected<void> remove(const std::string& hub, const std::string& id) override;

  /// A failed attempt (dtsd busy, a partition moving) is tried again after this.
  static constexpr std::chrono::seconds retry_after{5};

 private:
  struct job;
  using key = std::pair<std::string, std::string>;  ///< Hub, id.

  /// The job; errc::not_found without one.
  expected<std::shared_ptr<job>> find(const std::string& hub, const std::string& id);
  void start(std::shared_ptr<job> running);
  void work(const std::shared_ptr<job>& running);
  nlohmann::json view(const job& running) const;

  service::task_service& service_;
  const std::filesystem::path dir_;
  mutable std::mutex mutex_;
  std::map<key, std::shared_ptr<job>> jobs_;
  bool stopping_ = false;
};

}  // namespace dtsd::history_export
