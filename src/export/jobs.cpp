#include "export/jobs.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <future>
#include <random>

#include "core/schedule.hpp"
#include "dashboard/rest_json.hpp"

namespace dtsd::history_export {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

/// How long one call to the service may take before the attempt counts as failed.
constexpr auto call_timeout = std::chrono::seconds(120);
constexpr std::size_t job_id_bytes_max = 64;
constexpr std::uint32_t poll_seconds_max = 3600;

error bad(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

/// Waits for the answer of an asynchronous service call.
template <class T, class Call>
expected<T> wait_for(Call call) {
  auto promise = std::make_shared<std::promise<expected<T>>>();
  auto future = promise->get_future();
  call([promise](expected<T> answer) { promise->set_value(std::move(answer)); });
  if (future.wait_for(call_timeout) != std::future_status::ready) {
    return error{errc::unavailable, "dtsd did not answer an export's call within two minutes"};
  }
  return future.get();
}

/// The hub, through the service of the dtsd the job runs in.
class service_source final : public source {
 public:
  service_source(service::task_service& service, std::string hub) : service_(service), hub_(std::move(hub)) {}

  expected<core::query_page> query(const core::instance_query& query) override {
    return wait_for<core::query_page>([&](service::callback<core::query_page> done) {
      service_.query(hub_, query, std::move(done));
    });
  }

  expected<std::vector<std::optional<std::vector<core::history_event>>>> histories(
      const std::vector<std::string>& ids) override {
    // Asked for all at once; answered in order.
    std::vector<std::future<expected<std::optional<service::instance_view>>>> answers;
    answers.reserve(ids.size());
    for (const auto& id : ids) {
      auto promise = std::make_shared<std::promise<expected<std::optional<service::instance_view>>>>();
      answers.push_back(promise->get_future());
      service_.get(hub_, id, true, [promise](expected<std::optional<service::instance_view>> view) {
        promise->set_value(std::move(view));
      });
    }
    std::vector<std::optional<std::vector<core::history_event>>> out;
    out.reserve(ids.size());
    const auto deadline = std::chrono::steady_clock::now() + call_timeout;
    for (auto& answer : answers) {
      if (answer.wait_until(deadline) != std::future_status::ready) {
        return error{errc::unavailable, "dtsd did not answer an export's history reads within two minutes"};
      }
      auto view = answer.get();
      if (!view) return view.error();
      out.push_back(*view ? std::optional(std::move((*view)->history)) : std::nullopt);
    }
    return out;
  }

  expected<void> purge(const std::string& instance_id, const std::string& execution_id) override {
    if (!execution_id.empty()) {
      auto now = wait_for<std::optional<service::instance_view>>(
          [&](service::callback<std::optional<service::instance_view>> done) {
            service_.get(hub_, instance_id, false, std::move(done));
          });
      if (!now) return now.error();
      if (!*now) return error{errc::not_found, instance_id};
      if ((*now)->record.execution_id != execution_id) return error{errc::failed_precondition, instance_id};
    }
    auto purged = wait_for<std::size_t>([&](service::callback<std::size_t> done) {
      service_.purge(hub_, instance_id, false, std::move(done));
    });
    if (!purged) return purged.error();
    return {};
  }

 private:
  service::task_service& service_;
  const std::string hub_;
};

/// "Completed", as a job keeps it, or any name the REST API takes
/// ("ORCHESTRATION_STATUS_COMPLETED", "COMPLETED").
std::optional<core::runtime_status> status_named(const std::string& name) {
  for (auto status : core::terminal_statuses()) {
    if (core::to_string(status) == name) return status;
  }
  return dashboard::parse_status(name);
}

bool valid_job_id(const std::string& id) {
  if (id.empty() || id.size() > job_id_bytes_max || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
}

std::string new_job_id() {
  std::random_device random;
  return fmt::format("export-{:08x}", random());
}

/// A request body checked and completed with its defaults: what the job keeps.
expected<json> definition_of(const json& body) {
  if (!body.is_object()) return bad("an export job is a JSON object");
  static const std::vector<std::string> known = {"jobId", "mode", "completedTimeFrom", "completedTimeTo",
                                                 "runtimeStatus", "namePrefix", "instanceIdPrefix", "format",
                                                 "purge", "pollSeconds", "pageSize"};
  for (const auto& [field, value] : body.items()) {
    if (std::find(known.begin(), known.end(), field) == known.end()) {
      return bad(fmt::format("an export job has no field '{}' (it has: {})", field, fmt::join(known, ", ")));
    }
  }
  auto text = [&](const char* field, std::string fallback) -> expected<std::string> {
    if (!body.contains(field) || body[field].is_null()) return fallback;
    if (!body[field].is_string()) return bad(fmt::format("'{}' must be a string", field));
    return body[field].get<std::string>();
  };
  json out;
  auto id = text("jobId", new_job_id());
  if (!id) return id.error();
  if (!valid_job_id(*id)) {
    return bad(fmt::format("jobId '{}' must be 1-{} letters, digits, '-', '_' or '.' (not first)", *id,
                           job_id_bytes_max));
  }
  out["jobId"] = *id;
  auto mode = text("mode", "Batch");
  if (!mode) return mode.error();
  if (*mode != "Batch" && *mode != "Continuous") return bad(fmt::format("mode '{}' is neither Batch nor Continuous", *mode));
  out["mode"] = *mode;
  for (const char* field : {"completedTimeFrom", "completedTimeTo"}) {
    auto at = text(field, "");
    if (!at) return at.error();
    if (!at->empty()) {
      if (auto parsed = core::parse_time(*at); !parsed) return bad(fmt::format("{}: {}", field, parsed.error().message));
    }
    out[field] = *at;
  }
  json statuses = json::array();
  if (body.contains("runtimeStatus") && !body["runtimeStatus"].is_null()) {
    if (!body["runtimeStatus"].is_array()) return bad("'runtimeStatus' must be an array of statuses");
    for (const auto& name : body["runtimeStatus"]) {
      auto status = name.is_string() ? status_named(name.get<std::string>()) : std::nullopt;
      if (!status) return bad(fmt::format("runtimeStatus: {} is not a status", name.dump()));
      if (!core::is_terminal(*status)) {
        return bad(fmt::format("runtimeStatus: {} has not ended; an export takes ended orchestrations only",
                               name.get<std::string>()));
      }
      statuses.push_back(std::string(core::to_string(*status)));
    }
  }
  if (statuses.empty()) {
    for (auto status : core::terminal_statuses()) statuses.push_back(std::string(core::to_string(status)));
  }
  out["runtimeStatus"] = statuses;
  for (const char* field : {"namePrefix", "instanceIdPrefix"}) {
    auto prefix = text(field, "");
    if (!prefix) return prefix.error();
    out[field] = *prefix;
  }
  auto format = text("format", "jsonl.gz");
  if (!format) return format.error();
  if (*format != "jsonl.gz" && *format != "jsonl") return bad(fmt::format("format '{}' is neither jsonl.gz nor jsonl", *format));
  out["format"] = *format;
  if (body.contains("purge") && !body["purge"].is_boolean()) return bad("'purge' must be true or false");
  out["purge"] = body.value("purge", false);
  if (*mode == "Continuous" && !out["purge"].get<bool>()) {
    return bad("a Continuous job needs \"purge\": true (each pass finds what is new because what it wrote is gone)");
  }
  for (auto [field, fallback, most] : {std::tuple{"pollSeconds", 10u, poll_seconds_max},
                                       std::tuple{"pageSize", 100u, static_cast<std::uint32_t>(core::query_page_size_max)}}) {
    if (body.contains(field) && !body[field].is_number_unsigned()) {
      return bad(fmt::format("'{}' must be a whole number from 1 to {}", field, most));
    }
    const auto value = body.contains(field) ? body[field].get<std::uint64_t>() : std::uint64_t{fallback};
    if (value < 1 || value > most) return bad(fmt::format("'{}' must be from 1 to {}", field, most));
    out[field] = static_cast<std::uint32_t>(value);
  }
  return out;
}

options options_of(const json& definition, const fs::path& file) {
  options o;
  o.to = file.string();
  o.gzip = definition["format"] == "jsonl.gz";
  for (const auto& name : definition["runtimeStatus"]) o.filter.statuses.push_back(*status_named(name.get<std::string>()));
  o.filter.name_prefix = definition["namePrefix"].get<std::string>();
  o.filter.instance_id_prefix = definition["instanceIdPrefix"].get<std::string>();
  o.filter.page_size = definition["pageSize"].get<std::uint32_t>();
  o.completed_from = definition["completedTimeFrom"].get<std::string>();
  o.completed_to = definition["completedTimeTo"].get<std::string>();
  o.purge = definition["purge"].get<bool>();
  o.follow_s = definition["mode"] == "Continuous" ? definition["pollSeconds"].get<std::uint32_t>() : 0;
  return o;
}

}  // namespace

struct jobs::job {
  std::string hub;
  json definition;
  fs::path definition_path, file;
  std::mutex mutex;  // Guards what follows.
  std::condition_variable wake;
  bool stop = false;
  std::string status = "Running";  ///< Running, Completed, Failed or Stopped.
  std::string last_error;
  progress done_so_far;
  std::thread thread;
  std::mutex joining;  ///< A delete and dtsd's stop may both wait for the thread.

  void ask_stop() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    wake.notify_all();
  }
  /// Asks the thread to stop between two pages and waits for it.
  void stop_and_join() {
    ask_stop();
    std::lock_guard lock(joining);
    if (thread.joinable()) thread.join();
  }
};

jobs::jobs(service::task_service& service, fs::path dir) : service_(service), dir_(std::move(dir)) {}

jobs::~jobs() { stop_all(); }

json jobs::view(const job& running) const {
  return json{{"jobId", running.definition["jobId"]},
              {"mode", running.definition["mode"]},
              {"status", running.status},
              {"file", running.file.string()},
              {"exported", running.done_so_far.exported},
              {"purged", running.done_so_far.purged},
              {"bytes", running.done_so_far.bytes},
              {"lastError", running.last_error},
              {"definition", running.definition}};
}

void jobs::start(std::shared_ptr<job> running) {
  running->thread = std::thread([this, running] { work(running); });
}

void jobs::work(const std::shared_ptr<job>& running) {
  service_source from(service_, running->hub);
  const auto o = options_of(running->definition, running->file);
  hooks hooks;
  hooks.stop_asked = [&] {
    std::lock_guard lock(running->mutex);
    return running->stop;
  };
  hooks.page_done = [&](const progress& now_at) {
    std::lock_guard lock(running->mutex);
    running->done_so_far = now_at;
    running->last_error.clear();
  };
  hooks.note = [&](const std::string& line) {
    spdlog::info("export job '{}' of hub '{}': {}", running->definition["jobId"].get<std::string>(), running->hub, line);
  };
  for (;;) {
    auto done = run(from, o, hooks);
    std::unique_lock lock(running->mutex);
    if (done) {
      running->done_so_far = *done;
      running->status = done->done ? "Completed" : "Stopped";
      return;
    }
    running->last_error = done.error().message;
    if (done.error().code == errc::invalid_argument) {
      running->status = "Failed";
      spdlog::error("export job '{}' of hub '{}' failed: {}", running->definition["jobId"].get<std::string>(),
                    running->hub, done.error().message);
      return;
    }
    spdlog::warn("export job '{}' of hub '{}': {}; trying again in {} s", running->definition["jobId"].get<std::string>(),
                 running->hub, done.error().message, retry_after.count());
    if (running->wake.wait_for(lock, retry_after, [&] { return running->stop; })) {
      running->status = "Stopped";
      return;
    }
  }
}

void jobs::resume_all() {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return;
  for (const auto& hub_dir : fs::directory_iterator(dir_, ec)) {
    if (!hub_dir.is_directory()) continue;
    for (const auto& entry : fs::directory_iterator(hub_dir.path(), ec)) {
      const auto name = entry.path().filename().string();
      const std::string suffix = ".job.json";
      if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) continue;
      std::ifstream in(entry.path());
      auto definition = json::parse(in, nullptr, false);
      json created_at;
      if (definition.is_object() && definition.contains("createdAt")) {
        created_at = definition["createdAt"];
        definition.erase("createdAt");
      }
      auto checked = definition.is_discarded() ? expected<json>(bad("not JSON")) : definition_of(definition);
      if (checked) (*checked)["createdAt"] = created_at;
      if (!checked) {
        spdlog::error("export job {} cannot be read ({}): it is left alone", entry.path().string(),
                      checked.error().message);
        continue;
      }
      auto running = std::make_shared<job>();
      running->hub = hub_dir.path().filename().string();
      running->definition = *checked;
      running->definition_path = entry.path();
      running->file = hub_dir.path() / fmt::format("{}.{}", (*checked)["jobId"].get<std::string>(),
                                                   (*checked)["format"].get<std::string>());
      const auto kept = read_progress(running->file.string());
      if (kept) running->done_so_far = *kept;
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      if (!jobs_.emplace(key{running->hub, (*checked)["jobId"].get<std::string>()}, running).second) continue;
      if (kept && kept->done && running->definition["mode"] == "Batch") {
        running->status = "Completed";
        continue;
      }
      spdlog::info("export job '{}' of hub '{}' resumes after {} orchestrations",
                   (*checked)["jobId"].get<std::string>(), running->hub, kept ? kept->exported : 0);
      start(running);
    }
  }
}

void jobs::stop_all() {
  std::vector<std::shared_ptr<job>> all;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [_, running] : jobs_) all.push_back(running);
  }
  // Every job is told first, so that none starts another page while others stop.
  for (auto& running : all) running->ask_stop();
  for (auto& running : all) running->stop_and_join();
}

expected<json> jobs::create(const std::string& hub, const json& body) {
  auto hubs = service_.task_hubs();
  if (std::find(hubs.begin(), hubs.end(), hub) == hubs.end()) {
    return error{errc::unknown_task_hub, fmt::format("no task hub '{}'", hub)};
  }
  auto definition = definition_of(body);
  if (!definition) return definition.error();
  const auto id = (*definition)["jobId"].get<std::string>();
  const auto hub_dir = dir_ / hub;
  auto running = std::make_shared<job>();
  running->hub = hub;
  running->definition = *definition;
  running->definition_path = hub_dir / (id + ".job.json");
  running->file = hub_dir / fmt::format("{}.{}", id, (*definition)["format"].get<std::string>());
  std::lock_guard lock(mutex_);
  if (stopping_) return error{errc::unavailable, "dtsd is stopping"};
  if (jobs_.count({hub, id})) return error{errc::already_exists, fmt::format("export job '{}' exists", id)};
  std::error_code ec;
  for (const auto& taken : {running->definition_path, running->file, fs::path(running->file.string() + ".progress")}) {
    if (fs::exists(taken, ec)) {
      return error{errc::already_exists,
                   fmt::format("{} exists (a deleted job's export): move it away or choose another jobId", taken.string())};
    }
  }
  fs::create_directories(hub_dir, ec);
  if (ec) return error{errc::io, fmt::format("cannot make {}: {}", hub_dir.string(), ec.message())};
  (*definition)["createdAt"] = core::format_time(service::wall_clock().now_ns());
  running->definition = *definition;
  if (auto saved = replace_durably(running->definition_path.string(), definition->dump(2) + "\n"); !saved) {
    return saved.error();
  }
  jobs_[{hub, id}] = running;
  start(running);
  std::lock_guard job_lock(running->mutex);
  return view(*running);
}

expected<std::shared_ptr<jobs::job>> jobs::find(const std::string& hub, const std::string& id) {
  std::lock_guard lock(mutex_);
  auto at = jobs_.find({hub, id});
  if (at == jobs_.end()) return error{errc::not_found, fmt::format("no export job '{}' in hub '{}'", id, hub)};
  return at->second;
}

expected<json> jobs::get(const std::string& hub, const std::string& id) {
  auto found = find(hub, id);
  if (!found) return found.error();
  std::lock_guard lock((*found)->mutex);
  return view(**found);
}

expected<json> jobs::list(const std::string& hub) {
  std::vector<std::shared_ptr<job>> found;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [at, running] : jobs_) {
      if (at.first == hub) found.push_back(running);
    }
  }
  json out = json::array();
  for (const auto& running : found) {
    std::lock_guard lock(running->mutex);
    out.push_back(view(*running));
  }
  return json{{"jobs", std::move(out)}};
}

expected<void> jobs::remove(const std::string& hub, const std::string& id) {
  // Out of the list only once its thread is done: dtsd's stop waits for it too.
  auto taken = find(hub, id);
  if (!taken) return taken.error();
  const auto found = std::move(*taken);
  found->stop_and_join();
  {
    std::lock_guard lock(mutex_);
    if (auto at = jobs_.find({hub, id}); at != jobs_.end() && at->second == found) jobs_.erase(at);
  }
  // The file keeps its whole pages only: a page cut short by a failure goes.
  std::error_code ec;
  if (const auto kept = read_progress(found->file.string()); kept && fs::exists(found->file, ec) &&
                                                             fs::file_size(found->file, ec) > kept->bytes) {
    fs::resize_file(found->file, kept->bytes, ec);
  }
  fs::remove(found->definition_path, ec);
  fs::remove(found->file.string() + ".progress", ec);
  return {};
}

}  // namespace dtsd::history_export
