// The DTS REST API over the service. Each route reads its input (refusing bad
// input with 400 naming the field, before anything changes), makes one service
// call or composition, and answers from the service's callback. Work that grows
// with a hub (a list's filter, sort and page) runs on the API's own thread, never
// on the thread of the partition that answered.

#include "auth/authority.hpp"
#include "dashboard/rest_api.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "core/ids.hpp"
#include "dashboard/rest_json.hpp"
#include "dashboard/ui_assets.hpp"

namespace dtsd::dashboard {
namespace {

// ------------------------------------------------------------------ answers

unsigned http_status_of(errc code) {
  switch (code) {
    case errc::invalid_argument: return 400;
    case errc::not_found:
    case errc::unknown_task_hub: return 404;
    case errc::already_exists:
    case errc::failed_precondition:
    case errc::stale_token:
    case errc::duplicate: return 409;
    case errc::payload_too_large: return 413;
    case errc::unimplemented: return 501;
    case errc::io:
    case errc::unavailable:
    case errc::resource_exhausted: return 503;
    case errc::corrupt: return 500;
    case errc::unauthenticated: return 401;
    case errc::permission_denied: return 403;
  }
  return 500;
}

std::string code_name(errc code) {
  switch (code) {
    case errc::invalid_argument: return "INVALID_ARGUMENT";
    case errc::not_found: return "NOT_FOUND";
    case errc::unknown_task_hub: return "TASK_HUB_NOT_FOUND";
    case errc::already_exists: return "ALREADY_EXISTS";
    case errc::failed_precondition:
    case errc::stale_token:
    case errc::duplicate: return "FAILED_PRECONDITION";
    case errc::payload_too_large: return "PAYLOAD_TOO_LARGE";
    case errc::unimplemented: return "UNIMPLEMENTED";
    case errc::io:
    case errc::unavailable: return "UNAVAILABLE";
    case errc::resource_exhausted: return "RESOURCE_EXHAUSTED";
    case errc::corrupt: return "DATA_LOSS";
    case errc::unauthenticated: return "UNAUTHENTICATED";
    case errc::permission_denied: return "PERMISSION_DENIED";
  }
  return "INTERNAL";
}

http_response json_answer(unsigned status, const json& body) {
  return http_response{status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

http_response failure(const error& why) {
  return json_answer(http_status_of(why.code), json{{"code", code_name(why.code)}, {"message", why.message}});
}

http_response bad_input(const std::string& message) { return failure(error{errc::invalid_argument, message}); }

// ------------------------------------------------------------------ the API's own thread

/// One thread for the work of lists (filter, sort, serialize), with a bounded
/// queue. Its state is shared with the thread: the last task may hold the last
/// reference to the worker, and then the thread ends by itself.
class list_worker {
 public:
  static constexpr std::size_t queued_max = 256;

  list_worker() {
    std::thread([state = state_] { run(*state); }).detach();
  }
  ~list_worker() {
    {
      std::lock_guard lock(state_->mutex);
      state_->stopping = true;
    }
    state_->changed.notify_all();
  }

  /// False when the queue is full (the caller answers 503).
  bool post(std::function<void()> task) {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->stopping || state_->queue.size() >= queued_max) return false;
      state_->queue.push_back(std::move(task));
    }
    state_->changed.notify_one();
    return true;
  }

 private:
  struct state {
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<std::function<void()>> queue;
    bool stopping = false;
  };

  static void run(state& s) {
    std::unique_lock lock(s.mutex);
    for (;;) {
      s.changed.wait(lock, [&s] { return s.stopping || !s.queue.empty(); });
      if (s.queue.empty()) return;  // Stopping, with nothing left.
      auto task = std::move(s.queue.front());
      s.queue.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // May drop the worker itself: the state stays until the thread ends.
      lock.lock();
    }
  }

  std::shared_ptr<state> state_ = std::make_shared<state>();
};

// ------------------------------------------------------------------ reading input

/// JSON nested deeper than this is refused before it is parsed (writing or copying
/// a value recurses once per level).
constexpr std::size_t json_depth_max = 64;

/// Parses a request body: malformed or too deeply nested JSON is an error.
expected<json> parse_body(const std::string& text) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > json_depth_max) {
        return error{errc::invalid_argument, fmt::format("the request body nests deeper than {} levels", json_depth_max)};
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  auto parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return error{errc::invalid_argument, "the request body is not valid JSON"};
  return parsed;
}

/// The request's body as a JSON object (an empty body is an empty object).
expected<json> body_object(const http_request& request) {
  if (request.body.empty()) return json::object();
  auto body = parse_body(request.body);
  if (!body) return body.error();
  auto parsed = std::move(*body);
  if (!parsed.is_object()) return error{errc::invalid_argument, "the request body must be a JSON object"};
  return parsed;
}

/// A string field (absent: empty); any other type is an error naming it.
expected<std::string> string_field(const json& object, const char* name, const std::string& path) {
  auto found = object.find(name);
  if (found == object.end() || found->is_null()) return std::string();
  if (!found->is_string()) return error{errc::invalid_argument, fmt::format("{}{}: must be a string", path, name)};
  return found->get<std::string>();
}

/// {"value": "..."} (DTS's string filters); absent: empty.
expected<std::string> string_filter(const json& filter, const char* name) {
  auto found = filter.find(name);
  if (found == filter.end() || found->is_null()) return std::string();
  if (found->is_string()) return found->get<std::string>();  // Leniently, a bare string.
  if (!found->is_object()) return error{errc::invalid_argument, fmt::format("filter.{}: must be {{\"value\": ...}}", name)};
  return string_field(*found, "value", fmt::format("filter.{}.", name));
}

expected<core::time_window> range_filter(const json& filter, const char* name) {
  core::time_window range;
  auto found = filter.find(name);
  if (found == filter.end() || found->is_null()) return range;
  if (!found->is_object()) {
    return error{errc::invalid_argument, fmt::format("filter.{}: must be {{\"start\": ..., \"end\": ...}}", name)};
  }
  for (const char* bound : {"start", "end"}) {
    auto text = string_field(*found, bound, fmt::format("filter.{}.", name));
    if (!text) return text.error();
    if (text->empty()) continue;
    auto ns = parse_rfc3339(*text);
    if (!ns) return error{errc::invalid_argument, fmt::format("filter.{}.{}: {}", name, bound, ns.error().message)};
    (std::string_view(bound) == "start" ? range.from_ns : range.to_ns) = *ns;
  }
  return range;
}

/// {"pagination": {"startIndex", "count"}}: absent parts keep their defaults.
expected<void> read_pagination(const json& body, std::size_t& start_index, std::size_t& count,
                               const rest_options& options) {
  if (auto found = body.find("pagination"); found != body.end() && !found->is_null()) {
    if (!found->is_object()) return error{errc::invalid_argument, "pagination: must be an object"};
    for (auto [name, target] : {std::pair{"startIndex", &start_index}, std::pair{"count", &count}}) {
      auto value = found->find(name);
      if (value == found->end() || value->is_null()) continue;
      if (value->is_number_unsigned()) {
        *target = value->get<std::size_t>();
      } else if (value->is_number_integer() && value->get<std::int64_t>() >= 0) {
        *target = static_cast<std::size_t>(value->get<std::int64_t>());
      } else {
        return error{errc::invalid_argument, fmt::format("pagination.{}: must be a whole number >= 0", name)};
      }
    }
  }
  if (count == 0 || count > options.page_rows_max) {
    return error{errc::invalid_argument, fmt::format("pagination.count: must be 1 to {}", options.page_rows_max)};
  }
  return {};
}

/// "RUNNING" for runtime_status::running: the status as a metric label.
std::string short_status_name(core::runtime_status status) {
  auto name = status_name(status);
  const std::string prefix = "ORCHESTRATION_STATUS_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

// ------------------------------------------------------------------ lists

/// POST orchestrations/query's columns, as core::list_column.
expected<core::list_column> column_of(const std::string& name) {
  static const std::pair<const char*, core::list_column> names[] = {
      {"ORCHESTRATION_ID", core::list_column::instance_id},
      {"NAME", core::list_column::name},
      {"VERSION", core::list_column::version},
      {"CREATED_AT", core::list_column::created_at},
      {"LAST_UPDATED_AT", core::list_column::last_updated_at},
      {"START_AT", core::list_column::start_at},
      {"COMPLETED_AT", core::list_column::completed_at},
      {"ORCHESTRATION_STATUS", core::list_column::status},
      {"TAGS", core::list_column::tags}};
  for (const auto& [text, value] : names) {
    if (name == text) return value;
  }
  return error{errc::invalid_argument, fmt::format("sort.column: '{}' is not a column", name)};
}

/// A list as the API asks for it: the service's query, the page, how rows show.
struct list_spec {
  core::list_query query;
  std::size_t start_index = 0;
  std::size_t count = 100;
  std::string rows_key;
  std::function<json(const core::instance_record&)> row;
  bool with_trivia = false;
};

/// "sort": [{"column", "direction"}] with the columns `column_of` knows.
template <class Columns>
expected<std::vector<core::list_sort>> read_sort(const json& body, Columns column_of) {
  std::vector<core::list_sort> out;
  auto found = body.find("sort");
  if (found == body.end() || found->is_null()) return out;
  if (!found->is_array()) return error{errc::invalid_argument, "sort: must be a list of {column, direction}"};
  for (const auto& item : *found) {
    if (!item.is_object()) return error{errc::invalid_argument, "sort: must be a list of {column, direction}"};
    auto name = string_field(item, "column", "sort.");
    if (!name) return name.error();
    auto by = column_of(*name);
    if (!by) return by.error();
    auto direction = string_field(item, "direction", "sort.");
    if (!direction) return direction.error();
    if (!direction->empty() && *direction != "ASCENDING_SORT" && *direction != "DESCENDING_SORT") {
      return error{errc::invalid_argument,
                   fmt::format("sort.direction: '{}' is not ASCENDING_SORT or DESCENDING_SORT", *direction)};
    }
    out.push_back({*by, *direction == "DESCENDING_SORT"});
  }
  return out;
}

/// POST orchestrations/query as a list_spec.
expected<list_spec> orchestration_list(const http_request& http, const rest_options& options) {
  auto body = body_object(http);
  if (!body) return body.error();
  list_spec spec;
  spec.rows_key = "orchestrations";
  spec.row = orchestration_json;
  spec.with_trivia = true;
  auto& query = spec.query;
  if (auto found = body->find("filter"); found != body->end() && !found->is_null()) {
    if (!found->is_object()) return error{errc::invalid_argument, "filter: must be an object"};
    const auto& filter = *found;
    for (auto [name, target] : {std::pair{"orchestrationId", &query.id_part}, std::pair{"name", &query.name_part},
                                std::pair{"version", &query.version_part}, std::pair{"tags", &query.tag_part}}) {
      auto value = string_filter(filter, name);
      if (!value) return value.error();
      *target = core::lower_ascii(*value);
    }
    for (auto [name, target] : {std::pair{"createdAt", &query.created}, std::pair{"lastUpdatedAt", &query.last_updated},
                                std::pair{"startAt", &query.started}, std::pair{"completedAt", &query.completed}}) {
      auto range = range_filter(filter, name);
      if (!range) return range.error();
      *target = *range;
    }
    if (auto subs = filter.find("excludeSubOrchestrations"); subs != filter.end() && !subs->is_null()) {  // dtsd's own
      if (!subs->is_boolean()) return error{errc::invalid_argument, "filter.excludeSubOrchestrations: must be true or false"};
      query.top_level_only = subs->get<bool>();
    }
    if (auto statuses = filter.find("orchestrationStatus"); statuses != filter.end() && !statuses->is_null()) {
      const json* list = &*statuses;
      if (statuses->is_object()) {
        auto inner = statuses->find("status");
        if (inner == statuses->end()) return error{errc::invalid_argument, "filter.orchestrationStatus.status: missing"};
        list = &*inner;
      }
      if (!list->is_array()) return error{errc::invalid_argument, "filter.orchestrationStatus.status: must be a list"};
      for (const auto& item : *list) {
        auto status = item.is_string() ? parse_status(item.get<std::string>()) : std::nullopt;
        if (!status) {
          return error{errc::invalid_argument,
                       fmt::format("filter.orchestrationStatus.status: {} is not a status", item.dump())};
        }
        query.statuses.push_back(*status);
      }
    }
  }
  if (auto paged = read_pagination(*body, spec.start_index, spec.count, options); !paged) return paged.error();
  auto sort = read_sort(*body, column_of);
  if (!sort) return sort.error();
  query.sort = std::move(*sort);
  if (query.sort.empty()) query.sort.push_back({core::list_column::created_at, true});  // Newest first.
  return spec;
}

/// POST entities/query as a list_spec.
expected<list_spec> entity_list(const http_request& http, const rest_options& options) {
  auto body = body_object(http);
  if (!body) return body.error();
  list_spec spec;
  spec.query.entities = true;
  spec.rows_key = "entities";
  spec.row = entity_json;
  auto& query = spec.query;
  if (auto found = body->find("filter"); found != body->end() && !found->is_null()) {
    if (!found->is_object()) return error{errc::invalid_argument, "filter: must be an object"};
    for (auto [field, target] : {std::pair{"name", &query.name_exact}, std::pair{"key", &query.key_part},
                                 std::pair{"nameStartsWith", &query.name_prefix}}) {
      auto value = string_filter(*found, field);
      if (!value) return value.error();
      *target = core::lower_ascii(*value);
    }
    auto range = range_filter(*found, "lastModifiedAt");
    if (!range) return range.error();
    query.last_updated = *range;
  }
  if (auto paged = read_pagination(*body, spec.start_index, spec.count, options); !paged) return paged.error();
  auto sort = read_sort(*body, [](const std::string& name) -> expected<core::list_column> {
    if (name == "NAME") return core::list_column::name;
    if (name == "KEY") return core::list_column::entity_key;
    if (name == "LAST_MODIFIED_AT") return core::list_column::last_updated_at;
    return error{errc::invalid_argument, fmt::format("sort.column: '{}' is not NAME, KEY or LAST_MODIFIED_AT", name)};
  });
  if (!sort) return sort.error();
  query.sort = sort->empty() ? std::vector<core::list_sort>{{core::list_column::name, false}} : std::vector{sort->front()};
  return spec;
}

/// DTS's trivia: the filter's matches per status, whatever statuses it asks for.
json trivia_json(const core::list_page& page) {
  auto of = [&page](core::runtime_status status) { return page.by_status[static_cast<std::size_t>(status)]; };
  std::uint64_t total = 0;
  for (auto counted : page.by_status) total += counted;
  return {{"totalCount", total},
          {"completedCount", of(core::runtime_status::completed)},
          {"runningCount", of(core::runtime_status::running)},
          {"failedCount", of(core::runtime_status::failed)},
          {"pendingCount", of(core::runtime_status::pending)},
          {"terminatedCount", of(core::runtime_status::terminated)},
          {"suspendedCount", of(core::runtime_status::suspended)}};
}

/// The lists under way, so that the API can stop them before the service goes.
struct list_registry {
  std::mutex mutex;
  std::condition_variable changed;
  std::size_t active = 0;
  bool closed = false;

  bool enter() {
    std::lock_guard lock(mutex);
    if (closed) return false;
    ++active;
    return true;
  }
  void leave() {
    {
      std::lock_guard lock(mutex);
      --active;
    }
    changed.notify_all();
  }
  bool is_closed() {
    std::lock_guard lock(mutex);
    return closed;
  }
  /// No list asks the service anything after this returns (or after `within`).
  void close(std::chrono::seconds within) {
    std::unique_lock lock(mutex);
    closed = true;
    changed.wait_for(lock, within, [this] { return active == 0; });
  }
};

/// A list in two steps: the rows and counts (each partition answers from the
/// summaries it keeps in memory), then the page's records read whole, all at once,
/// and written out on the API's thread, never on a partition's.
class list_reading : public std::enable_shared_from_this<list_reading> {
 public:
  list_reading(service::task_service& service, std::shared_ptr<list_worker> worker,
               std::shared_ptr<list_registry> registry, std::string hub, list_spec spec, responder answer)
      : service_(service), worker_(std::move(worker)), registry_(std::move(registry)), hub_(std::move(hub)),
        spec_(std::move(spec)), answer_(std::move(answer)) {
    entered_ = registry_->enter();
  }
  ~list_reading() {
    if (entered_) registry_->leave();
  }

  void start() {
    if (!entered_ || registry_->is_closed()) return answer_(failure(error{errc::io, "dtsd is stopping"}));
    service_.list(hub_, spec_.query, spec_.start_index, spec_.count,
                  [self = shared_from_this()](expected<core::list_page> page) {
                    if (!page) return self->answer_(failure(page.error()));
                    self->page_ = std::move(*page);
                    self->read_records();
                  });
  }

 private:
  void read_records() {
    if (page_.rows.empty()) return post_answer();
    if (registry_->is_closed()) return answer_(failure(error{errc::io, "dtsd is stopping"}));
    records_.resize(page_.rows.size());
    left_ = page_.rows.size();
    for (std::size_t i = 0; i < page_.rows.size(); ++i) {
      service_.get(hub_, page_.rows[i].instance_id, false,
                   [self = shared_from_this(), i](expected<std::optional<service::instance_view>> found) {
                     std::unique_lock lock(self->mutex_);
                     // One purged meanwhile is left out of the page; one that could not be read fails it.
                     if (found && *found) self->records_[i] = std::move((*found)->record);
                     if (!found && !self->failed_) self->failed_ = found.error();
                     if (--self->left_ != 0) return;
                     lock.unlock();
                     if (self->failed_) return self->answer_(failure(*self->failed_));
                     self->post_answer();
                   });
    }
  }

  void post_answer() {
    if (!worker_->post([self = shared_from_this()] { self->answer(); })) {
      answer_(failure(error{errc::resource_exhausted, "the dashboard is busy; try again"}));
    }
  }

  void answer() {
    json rows = json::array();
    for (const auto& record : records_) {
      if (record) rows.push_back(spec_.row(*record));
    }
    json body = {{spec_.rows_key, std::move(rows)}, {"totalCount", page_.total}};
    if (spec_.with_trivia) body["trivia"] = trivia_json(page_);
    answer_(json_answer(200, body));
  }

  service::task_service& service_;
  std::shared_ptr<list_worker> worker_;
  std::shared_ptr<list_registry> registry_;
  bool entered_ = false;
  std::string hub_;
  list_spec spec_;
  responder answer_;
  core::list_page page_;
  std::mutex mutex_;
  std::size_t left_ = 0;
  std::optional<error> failed_;
  std::vector<std::optional<core::instance_record>> records_;
};

// ------------------------------------------------------------------ routes

/// An id as one path segment.
std::string percent_encode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

/// A path split at '/', each segment percent-decoded.
std::vector<std::string> segments_of(const std::string& path) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  while (begin <= path.size()) {
    const auto slash = path.find('/', begin);
    const auto end = slash == std::string::npos ? path.size() : slash;
    if (end > begin) out.push_back(percent_decode(std::string_view(path).substr(begin, end - begin)));
    if (slash == std::string::npos) break;
    begin = slash + 1;
  }
  return out;
}

/// A hub's work over the last minutes, sampled every few seconds: what the
/// dashboard draws its charts from (no history store needed).
struct sample {
  std::int64_t at_ns = 0;
  std::uint64_t commits = 0;
  std::uint64_t changes = 0;
  service::session_slots pending;
  service::session_slots active;
  std::size_t workers = 0;
};

class recent_samples {
 public:
  static constexpr auto interval = std::chrono::seconds(5);
  static constexpr std::size_t kept_max = 120;  ///< Ten minutes.

  explicit recent_samples(service::task_service& service) : service_(service) {
    thread_ = std::thread([this] { run(); });
  }
  ~recent_samples() { stop(); }

  /// No call to the service after this returns.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  std::vector<sample> of(const std::string& hub) {
    std::lock_guard lock(mutex_);
    auto found = hubs_.find(hub);
    return found == hubs_.end() ? std::vector<sample>{} : std::vector<sample>(found->second.begin(), found->second.end());
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      take();
      lock.lock();
      changed_.wait_for(lock, interval, [this] { return stopping_; });
    }
  }

  /// One sample of every hub; waits for the answers (at most a second each).
  void take() {
    for (const auto& hub : service_.task_hubs()) {
      auto answer = std::make_shared<std::promise<expected<service::hub_statistics>>>();
      auto future = answer->get_future();
      service_.statistics(hub, [answer](expected<service::hub_statistics> stats) { answer->set_value(std::move(stats)); });
      if (future.wait_for(std::chrono::seconds(1)) != std::future_status::ready) continue;
      auto stats = future.get();
      if (!stats) continue;
      sample taken;
      taken.at_ns = service_.time().now_ns();
      for (const auto& p : stats->partitions) {
        taken.commits += p.commits;
        taken.changes += p.committed_changes;
      }
      taken.pending = stats->backlog;
      taken.active = stats->in_use;
      taken.workers = stats->workers.size();
      std::lock_guard lock(mutex_);
      auto& kept = hubs_[hub];
      kept.push_back(taken);
      while (kept.size() > kept_max) kept.pop_front();
    }
  }

  service::task_service& service_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::map<std::string, std::deque<sample>> hubs_;
  std::thread thread_;  ///< Last: starts once the rest is there.
};

}  // namespace

class rest_api {
 public:
  rest_api(service::task_service& service, rest_options options)
      : service_(service), options_(options), recent_(std::make_unique<recent_samples>(service)) {}

  void handle(http_request request, responder answer) {
    if (request.method == "HEAD") request.method = "GET";  // The server sends the headers only.
    auto parts = segments_of(request.path);
    if (!parts.empty() && parts[0] == "api") parts.erase(parts.begin());
    if (request.method == "GET" && (request.path == "/" || request.path == "/index.html" || parts.size() == 1)) {
      if (const auto* asset = find_ui_asset(request.path == "/index.html" ? "/" : request.path)) {
        return answer(http_response{200, asset->content_type,
                                    std::string(reinterpret_cast<const char*>(asset->data), asset->size), {}});
      }
    }
    if (parts.size() == 1 && request.method == "GET") {
      if (parts[0] == "healthz") return answer(http_response{200, "text/plain", "ok\n", {}});
      if (parts[0] == "readyz") return readyz(request, std::move(answer));
      if (parts[0] == "metrics") {
        // Every hub's figures: a reader (or contributor) of every hub.
        if (auto refused = denied(request, auth::action::read, "*")) return answer(failure(*refused));
        return metrics(std::move(answer));
      }
    }
    if (parts.size() < 3 || parts[0] != "v1" || parts[1] != "taskhubs") {
      return answer(failure(error{errc::not_found, fmt::format("no route for {} {}", request.method, request.path)}));
    }
    parts.erase(parts.begin(), parts.begin() + 2);
    const auto hub = request.header("x-taskhub", "default");
    const auto& method = request.method;
    // Reads are GETs and the two query POSTs; every other call changes something.
    const bool reads = method == "GET" || (method == "POST" && parts.size() == 2 && parts[1] == "query");
    if (auto refused = denied(request, reads ? auth::action::read : auth::action::write, hub)) {
      return answer(failure(*refused));
    }
    if (parts[0] == "ping" && parts.size() == 1 && method == "GET") return ping(hub, std::move(answer));
    if (parts[0] == "workers" && parts.size() == 1 && method == "GET") return workers(hub, std::move(answer));
    if (parts[0] == "recent" && parts.size() == 1 && method == "GET") return recent(hub, std::move(answer));
    if (parts[0] == "retention" && parts.size() == 1 && (method == "GET" || method == "PUT" || method == "DELETE")) {
      return retention(hub, method, request, std::move(answer));
    }
    if (parts[0] == "schedules") return schedules(hub, parts, request, std::move(answer));
    if (parts[0] == "exports") return exports(hub, parts, request, std::move(answer));
    if (parts[0] == "orchestrations") return orchestrations(hub, parts, request, std::move(answer));
    if (parts[0] == "entities") return entities(hub, parts, request, std::move(answer));
    answer(failure(error{errc::not_found, fmt::format("no route for {} {}", method, request.path)}));
  }

 private:
  void orchestrations(const std::string& hub, const std::vector<std::string>& parts, const http_request& request,
                      responder answer) {
    const auto& method = request.method;
    if (parts.size() == 1 && method == "POST") return start(hub, request, std::move(answer));
    if (parts.size() == 2 && parts[1] == "query" && method == "POST") return query(hub, request, std::move(answer));
    if (parts.size() == 2 && parts[1] == "forceterminate" && method == "POST") {
      return force_terminate(hub, request, std::move(answer));
    }
    if (parts.size() == 2 && parts[1] == "addhistoryevents" && method == "POST") {
      return add_history_events(hub, request, std::move(answer));
    }
    if (parts.size() == 2 && parts[1] == "purge" && method == "DELETE") return purge_many(hub, request, std::move(answer));
    if (parts.size() < 2) return answer(failure(error{errc::not_found, "no route"}));
    const auto& id = parts[1];
    if (auto valid = core::validate_instance_id(id); !valid) return answer(failure(valid.error()));
    if (parts.size() == 2 && method == "GET") return get(hub, id, false, std::move(answer));
    if (parts.size() == 2 && method == "DELETE") return purge_one(hub, id, std::move(answer));
    if (parts.size() == 3 && parts[2] == "payloads" && method == "GET") return get(hub, id, true, std::move(answer));
    if (parts.size() == 3 && parts[2] == "restart" && method == "POST") return restart(hub, id, request, std::move(answer));
    if (parts.size() == 3 && parts[2] == "history" && method == "POST") {
      auto body = body_object(request);
      if (!body) return answer(failure(body.error()));
      return add_event(hub, id, *body, [answer = std::move(answer)](expected<void> done) {
        answer(done ? json_answer(200, json::object()) : failure(done.error()));
      });
    }
    if (parts.size() == 5 && parts[2] == "executions" && parts[4] == "history" && method == "GET") {
      return history(hub, id, parts[3], std::move(answer));
    }
    answer(failure(error{errc::not_found, fmt::format("no route for {} {}", method, request.path)}));
  }

  void entities(const std::string& hub, const std::vector<std::string>& parts, const http_request& request,
                responder answer) {
    if (parts.size() == 2 && parts[1] == "query" && request.method == "POST") {
      auto spec = entity_list(request, options_);
      if (!spec) return answer(failure(spec.error()));
      return std::make_shared<list_reading>(service_, worker_, lists_, hub, std::move(*spec), std::move(answer))
          ->start();
    }
    if (parts.size() == 3 && parts[2] == "signal" && request.method == "POST") {  // dtsd's own
      auto body = body_object(request);
      if (!body) return answer(failure(body.error()));
      service::entity_signal signal;
      signal.entity_id = parts[1];
      auto operation = string_field(*body, "operation", "");
      if (!operation) return answer(failure(operation.error()));
      if (operation->empty()) return answer(bad_input("operation: required"));
      signal.operation = *operation;
      if (auto input = body->find("input"); input != body->end()) signal.input = payload_of(*input);
      return service_.signal_entity(hub, std::move(signal), [answer = std::move(answer)](expected<void> done) {
        answer(done ? json_answer(202, json::object()) : failure(done.error()));
      });
    }
    if (parts.size() == 2 && request.method == "DELETE") {
      const auto id = parts[1];
      if (!core::is_entity_id(id)) return answer(bad_input(fmt::format("'{}' is not an entity id (@name@key)", id)));
      return service_.delete_entity(hub, id, [answer = std::move(answer)](expected<void> done) {
        answer(done ? json_answer(200, json::object()) : failure(done.error()));
      });
    }
    if ((parts.size() == 2 || (parts.size() == 3 && parts[2] == "state")) && request.method == "GET") {
      const auto id = parts[1];
      if (!core::is_entity_id(id)) return answer(bad_input(fmt::format("'{}' is not an entity id (@name@key)", id)));
      const bool state = parts.size() == 3;
      return service_.get(hub, id, false, [id, state, answer = std::move(answer)](
                                              expected<std::optional<service::instance_view>> found) {
        if (!found) return answer(failure(found.error()));
        if (!*found) return answer(failure(error{errc::not_found, fmt::format("no entity with id '{}'", id)}));
        const auto& record = (*found)->record;
        if (!state) return answer(json_answer(200, entity_json(record)));
        if (!record.entity_state) return answer(failure(error{errc::not_found, fmt::format("entity '{}' has no state", id)}));
        answer(http_response{200, "application/json", *record.entity_state, {}});
      });
    }
    answer(failure(error{errc::not_found, fmt::format("no route for {} {}", request.method, request.path)}));
  }

  void ping(const std::string& hub, responder answer) {
    auto hubs = service_.task_hubs();
    if (std::find(hubs.begin(), hubs.end(), hub) == hubs.end()) {
      return answer(failure(error{errc::unknown_task_hub, fmt::format("task hub '{}' does not exist", hub)}));
    }
    answer(json_answer(200, json{{"taskHub", hub}, {"status", "ok"}}));
  }

  void readyz(const http_request& request, responder answer) {
    auto hubs = service_.task_hubs();
    const bool ready = !hubs.empty();
    if (options_.authority) {
      // The hubs this request's token is for (none without a valid one).
      auto who = options_.authority->authenticate(request.header("authorization"));
      std::erase_if(hubs, [&](const std::string& hub) { return !who || !who->covers(hub); });
    }
    json body = {{"ready", true}, {"taskHubs", hubs}, {"auth", options_.authority != nullptr}};
    answer(json_answer(ready ? 200 : 503, body));
  }

  /// The refusal of a call that its token does not allow; nothing without --auth.
  /// The audit log gets every refusal, and every change let through.
  std::optional<error> denied(const http_request& request, auth::action what, const std::string& hub) const {
    if (!options_.authority) return std::nullopt;
    const auto operation = request.method + " " + request.path;
    auto who = options_.authority->authenticate(request.header("authorization"));
    if (!who) {
      options_.authority->audit("rest", operation, hub, {}, nullptr, &who.error());
      return who.error();
    }
    if (auto allowed = auth::authority::authorize(*who, what, hub); !allowed) {
      options_.authority->audit("rest", operation, hub, {}, &*who, &allowed.error());
      return allowed.error();
    }
    if (what == auth::action::write) {
      if (auto rated = options_.authority->take_call(*who); !rated) {
        options_.authority->audit("rest", operation, hub, {}, &*who, &rated.error());
        return rated.error();
      }
      options_.authority->audit("rest", operation, hub, {}, &*who, nullptr);
    }
    return std::nullopt;
  }

  /// Prometheus text: every hub's statistics, gathered, then written family by family.
  void metrics(responder answer) {
    struct gathered {
      std::mutex mutex;
      std::size_t left = 0;
      std::map<std::string, service::hub_statistics> hubs;
      responder answer;
      std::int64_t now_ns = 0;
    };
    auto all = std::make_shared<gathered>();
    all->now_ns = service_.time().now_ns();
    auto hubs = service_.task_hubs();
    all->left = hubs.size() + 1;
    all->answer = std::move(answer);
    auto settle = [all](const std::string* hub, service::hub_statistics* stats) {
      std::unique_lock lock(all->mutex);
      if (hub != nullptr) all->hubs.emplace(*hub, std::move(*stats));
      if (--all->left != 0) return;
      auto text = prometheus_text(all->hubs, all->now_ns);
      lock.unlock();
      all->answer(http_response{200, "text/plain; version=0.0.4; charset=utf-8", std::move(text), {}});
    };
    for (const auto& hub : hubs) {
      service_.statistics(hub, [settle, hub](expected<service::hub_statistics> stats) {
        if (stats) return settle(&hub, &*stats);
        settle(nullptr, nullptr);  // A hub deleted meanwhile is left out.
      });
    }
    settle(nullptr, nullptr);
  }

  static std::string prometheus_text(const std::map<std::string, service::hub_statistics>& hubs, std::int64_t now_ns) {
    std::string out;
    auto family = [&out](const char* name, const char* type, const char* help) {
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    auto per_kind = [&](const char* name, const char* help, auto field) {
      family(name, "gauge", help);
      for (const auto& [hub, s] : hubs) {
        const auto& slots = field(s);
        out += fmt::format("{}{{task_hub=\"{}\",kind=\"orchestrator\"}} {}\n", name, hub, slots.orchestrators);
        out += fmt::format("{}{{task_hub=\"{}\",kind=\"activity\"}} {}\n", name, hub, slots.activities);
        out += fmt::format("{}{{task_hub=\"{}\",kind=\"entity\"}} {}\n", name, hub, slots.entities);
      }
    };
    family("dtsd_orchestrations", "gauge", "Orchestrations per status (kept per partition, never counted by a scan).");
    for (const auto& [hub, s] : hubs) {
      for (std::size_t status = 0; status < core::runtime_status_count; ++status) {
        std::uint64_t total = 0;
        for (const auto& p : s.partitions) total += p.orchestrations_by_status[status];
        out += fmt::format("dtsd_orchestrations{{task_hub=\"{}\",status=\"{}\"}} {}\n", hub,
                           short_status_name(static_cast<core::runtime_status>(status)), total);
      }
    }
    family("dtsd_orchestrations_started_total", "counter",
           "Orchestrations started (new, or replacing an ended one) since dtsd started.");
    for (const auto& [hub, s] : hubs) {
      std::uint64_t total = 0;
      for (const auto& p : s.partitions) total += p.orchestrations_started;
      out += fmt::format("dtsd_orchestrations_started_total{{task_hub=\"{}\"}} {}\n", hub, total);
    }
    // A counter per terminal status, summed over each hub's partitions.
    auto per_ended_status = [&](const char* name, const char* help, auto counts_of) {
      family(name, "counter", help);
      for (const auto& [hub, s] : hubs) {
        for (auto status : core::retained_statuses) {
          std::uint64_t total = 0;
          for (const auto& p : s.partitions) total += counts_of(p)[static_cast<std::size_t>(status)];
          out += fmt::format("{}{{task_hub=\"{}\",status=\"{}\"}} {}\n", name, hub, short_status_name(status), total);
        }
      }
    };
    per_ended_status("dtsd_orchestrations_ended_total", "Orchestrations that ended since dtsd started, per status.",
                     [](const service::partition_view& p) -> const auto& { return p.orchestrations_ended; });
    per_ended_status("dtsd_retention_purged_total",
                     "Ended orchestrations purged by the retention policy since dtsd started, per status.",
                     [](const service::partition_view& p) -> const auto& { return p.retention_purged; });
    family("dtsd_oldest_retained_instance_seconds", "gauge",
           "How long ago the ended orchestration kept longest ended (0: none is kept).");
    for (const auto& [hub, s] : hubs) {
      std::int64_t oldest = 0;
      for (const auto& p : s.partitions) {
        if (p.oldest_ended_ns != 0 && (oldest == 0 || p.oldest_ended_ns < oldest)) oldest = p.oldest_ended_ns;
      }
      const double age = oldest == 0 ? 0.0 : static_cast<double>(std::max<std::int64_t>(0, now_ns - oldest)) / 1e9;
      out += fmt::format("dtsd_oldest_retained_instance_seconds{{task_hub=\"{}\"}} {:.3f}\n", hub, age);
    }
    family("dtsd_work_items_oldest_pending_seconds", "gauge",
           "How long the longest-waiting work item of each kind has waited for a worker (0: none waits).");
    for (const auto& [hub, s] : hubs) {
      const char* kinds[] = {"orchestrator", "activity", "entity"};
      for (std::size_t kind = 0; kind < 3; ++kind) {
        std::int64_t oldest = 0;
        for (const auto& p : s.partitions) {
          const auto since = p.waiting_since_ns[kind];
          if (since != 0 && (oldest == 0 || since < oldest)) oldest = since;
        }
        const double age = oldest == 0 ? 0.0 : static_cast<double>(std::max<std::int64_t>(0, now_ns - oldest)) / 1e9;
        out += fmt::format("dtsd_work_items_oldest_pending_seconds{{task_hub=\"{}\",kind=\"{}\"}} {:.3f}\n", hub,
                           kinds[kind], age);
      }
    }
    family("dtsd_workers", "gauge", "Connected worker sessions.");
    for (const auto& [hub, s] : hubs) out += fmt::format("dtsd_workers{{task_hub=\"{}\"}} {}\n", hub, s.workers.size());
    per_kind("dtsd_work_items_pending", "Work items ready for a worker.",
             [](const service::hub_statistics& s) -> const service::session_slots& { return s.backlog; });
    per_kind("dtsd_work_items_active", "Work items leased to workers now.",
             [](const service::hub_statistics& s) -> const service::session_slots& { return s.in_use; });
    per_kind("dtsd_worker_slots", "Work items the connected workers take at once.",
             [](const service::hub_statistics& s) -> const service::session_slots& { return s.slots; });
    auto per_partition = [&](const char* name, const char* type, const char* help, auto value) {
      family(name, type, help);
      for (const auto& [hub, s] : hubs) {
        for (const auto& p : s.partitions) {
          out += fmt::format("{}{{task_hub=\"{}\",partition=\"{}\"}} {}\n", name, hub, p.index, value(p));
        }
      }
    };
    per_partition("dtsd_partition_commits_total", "counter", "Batches made durable since dtsd started.",
                  [](const service::partition_view& p) { return p.commits; });
    per_partition("dtsd_partition_committed_changes_total", "counter", "Instance changes in those batches.",
                  [](const service::partition_view& p) { return p.committed_changes; });
    // Histograms: cumulative buckets, then the sum and the count.
    auto histogram = [&](const char* name, const char* help, const auto& bounds, auto buckets, auto sum) {
      family(name, "histogram", help);
      for (const auto& [hub, s] : hubs) {
        for (const auto& p : s.partitions) {
          const auto& counts = buckets(p);
          std::uint64_t below = 0;
          for (std::size_t i = 0; i <= bounds.size(); ++i) {
            below += counts[i];
            const auto le = i < bounds.size() ? fmt::format("{}", bounds[i]) : std::string("+Inf");
            out += fmt::format("{}_bucket{{task_hub=\"{}\",partition=\"{}\",le=\"{}\"}} {}\n", name, hub, p.index,
                               le, below);
          }
          out += fmt::format("{}_sum{{task_hub=\"{}\",partition=\"{}\"}} {}\n", name, hub, p.index, sum(p));
          out += fmt::format("{}_count{{task_hub=\"{}\",partition=\"{}\"}} {}\n", name, hub, p.index, below);
        }
      }
    };
    histogram("dtsd_partition_commit_seconds", "Time from handing a batch over to its durability.",
              service::commit_seconds_bounds,
              [](const service::partition_view& p) -> const auto& { return p.commit_seconds_buckets; },
              [](const service::partition_view& p) { return static_cast<double>(p.commit_ns_total) / 1e9; });
    histogram("dtsd_partition_batch_changes", "Instance changes per committed batch.", service::batch_changes_bounds,
              [](const service::partition_view& p) -> const auto& { return p.batch_changes_buckets; },
              [](const service::partition_view& p) { return p.committed_changes; });
    per_partition("dtsd_partition_commit_seconds_max", "gauge", "The longest commit since dtsd started.",
                  [](const service::partition_view& p) { return static_cast<double>(p.commit_ns_max) / 1e9; });
    per_partition("dtsd_partition_failed_commits_total", "counter", "Commits that failed (each is retried).",
                  [](const service::partition_view& p) { return p.failed_commits; });
    per_partition("dtsd_partition_stalled", "gauge", "1 while the partition cannot write.",
                  [](const service::partition_view& p) { return p.stalled.empty() ? 0 : 1; });
    per_partition("dtsd_partition_live_instances", "gauge", "Instances held in memory.",
                  [](const service::partition_view& p) { return p.live_instances; });
    per_partition("dtsd_partition_unacknowledged_messages", "gauge",
                  "Messages it sent to instances that their partition has not acknowledged yet.",
                  [](const service::partition_view& p) { return p.unacknowledged_messages; });
    per_partition("dtsd_partition_oldest_pending_seconds", "gauge",
                  "How long its longest-waiting work item has waited for a worker (0: none waits).",
                  [](const service::partition_view& p) { return static_cast<double>(p.oldest_wait_ns) / 1e9; });
    per_partition("dtsd_partition_disk_bytes", "gauge", "Bytes its data takes on disk (LMDB pages in use; 0 in memory).",
                  [](const service::partition_view& p) { return p.disk_bytes; });
    return out;
  }

  /// dtsd's own: the hub's samples of the last minutes (the dashboard's charts).
  void recent(const std::string& hub, responder answer) {
    auto hubs = service_.task_hubs();
    if (std::find(hubs.begin(), hubs.end(), hub) == hubs.end()) {
      return answer(failure(error{errc::unknown_task_hub, fmt::format("task hub '{}' does not exist", hub)}));
    }
    json samples = json::array();
    for (const auto& taken : recent_->of(hub)) {
      samples.push_back({{"timestamp", rfc3339(taken.at_ns)},
                         {"commits", taken.commits},
                         {"changes", taken.changes},
                         {"workers", taken.workers},
                         {"pending", {{"orchestrations", taken.pending.orchestrators},
                                      {"activities", taken.pending.activities},
                                      {"entities", taken.pending.entities}}},
                         {"active", {{"orchestrations", taken.active.orchestrators},
                                     {"activities", taken.active.activities},
                                     {"entities", taken.active.entities}}}});
    }
    answer(json_answer(200, json{{"intervalSeconds", recent_samples::interval.count()}, {"samples", std::move(samples)}}));
  }

  /// GET: the hub's retention policy in DTS's shape ({"retentionPolicies": [...]}),
  /// with "source": "taskHub" or "dtsdDefault". PUT: that shape becomes the
  /// hub's own policy. DELETE: dtsd's default again.
  void retention(const std::string& hub, const std::string& method, const http_request& request, responder answer) {
    std::optional<core::retention_policy> policy;
    if (method == "PUT") {
      auto parsed = core::retention_from_json(request.body);
      if (!parsed) return answer(failure(parsed.error()));
      policy = std::move(*parsed);
    }
    service_.retention(hub, method != "GET", std::move(policy),
                       [answer = std::move(answer)](expected<service::retention_view> view) {
                         if (!view) return answer(failure(view.error()));
                         auto out = json::parse(core::to_json(view->policy));
                         out["source"] = view->own ? "taskHub" : "dtsdDefault";
                         answer(json_answer(200, std::move(out)));
                       });
  }

  /// Schedules (core/schedule.hpp): GET and POST /schedules (list, create); GET,
  /// PUT and DELETE /schedules/{id}; POST /schedules/{id}/pause ({"reason"}),
  /// /resume and /trigger. Each answers the schedule as it is after the call.
  void schedules(const std::string& hub, const std::vector<std::string>& parts, const http_request& request,
                 responder answer) {
    using verb = core::schedule_command::verb;
    const auto& method = request.method;
    core::schedule_command command;
    if (parts.size() == 1 && method == "GET") {
      command.what = verb::list;
    } else if (parts.size() == 1 && method == "POST") {
      auto spec = core::schedule_spec_from_json(request.body);
      if (!spec) return answer(failure(spec.error()));
      command = {verb::create, spec->id, std::move(*spec), {}};
    } else if (parts.size() == 2 && (method == "GET" || method == "DELETE")) {
      command = {method == "GET" ? verb::get : verb::remove, parts[1], {}, {}};
    } else if (parts.size() == 2 && method == "PUT") {
      auto body = body_object(request);
      if (!body) return answer(failure(body.error()));
      if (!body->contains("scheduleId")) (*body)["scheduleId"] = parts[1];
      auto spec = core::schedule_spec_from_json(body->dump());
      if (!spec) return answer(failure(spec.error()));
      if (spec->id != parts[1]) {
        return answer(failure(error{errc::invalid_argument, fmt::format("the body's scheduleId '{}' is not the path's '{}'",
                                                                        spec->id, parts[1])}));
      }
      command = {verb::update, parts[1], std::move(*spec), {}};
    } else if (parts.size() == 3 && method == "POST" &&
               (parts[2] == "pause" || parts[2] == "resume" || parts[2] == "trigger")) {
      command = {parts[2] == "pause" ? verb::pause : parts[2] == "resume" ? verb::resume : verb::trigger, parts[1], {}, {}};
      if (parts[2] == "pause" && !request.body.empty()) {
        auto body = body_object(request);
        if (!body) return answer(failure(body.error()));
        if (body->contains("reason") && (*body)["reason"].is_string()) command.note = (*body)["reason"].get<std::string>();
      }
    } else {
      return answer(failure(error{errc::not_found, fmt::format("no route for {} {}", method, request.path)}));
    }
    const auto what = command.what;
    service_.schedule(hub, std::move(command), [what, answer = std::move(answer)](expected<std::vector<core::schedule>> done) {
      if (!done) return answer(failure(done.error()));
      auto all = json::parse(core::to_json(*done));
      if (what == verb::list) return answer(json_answer(200, json{{"schedules", std::move(all)}}));
      answer(json_answer(what == verb::create ? 201 : 200, all.empty() ? json::object() : all[0]));
    });
  }

  /// dtsd's export jobs (export/jobs.hpp): GET and POST /exports (list, create);
  /// GET and DELETE /exports/{jobId}. Carried out on the list worker's thread: they
  /// touch files, and a delete waits for the job to stop between two pages.
  void exports(const std::string& hub, const std::vector<std::string>& parts, const http_request& request,
               responder answer) {
    auto jobs = options_.export_jobs;
    if (!jobs) return answer(failure(error{errc::unimplemented, "this dtsd runs no export jobs"}));
    const auto& method = request.method;
    std::function<http_response()> call;
    if (parts.size() == 1 && method == "GET") {
      call = [jobs, hub] {
        auto all = jobs->list(hub);
        return all ? json_answer(200, *all) : failure(all.error());
      };
    } else if (parts.size() == 1 && method == "POST") {
      auto body = body_object(request);
      if (!body) return answer(failure(body.error()));
      call = [jobs, hub, body = std::move(*body)] {
        auto made = jobs->create(hub, body);
        return made ? json_answer(201, *made) : failure(made.error());
      };
    } else if (parts.size() == 2 && method == "GET") {
      call = [jobs, hub, id = parts[1]] {
        auto found = jobs->get(hub, id);
        return found ? json_answer(200, *found) : failure(found.error());
      };
    } else if (parts.size() == 2 && method == "DELETE") {
      call = [jobs, hub, id = parts[1]] {
        auto removed = jobs->remove(hub, id);
        return removed ? json_answer(200, json::object()) : failure(removed.error());
      };
    } else {
      return answer(failure(error{errc::not_found, fmt::format("no route for {} {}", method, request.path)}));
    }
    auto shared = std::make_shared<responder>(std::move(answer));
    if (!worker_->post([call = std::move(call), shared] { (*shared)(call()); })) {
      (*shared)(failure(error{errc::resource_exhausted, "dtsd is busy: try again shortly"}));
    }
  }

  void workers(const std::string& hub, responder answer) {
    service_.workers(hub, [answer = std::move(answer)](expected<std::vector<service::worker_view>> found) {
      if (!found) return answer(failure(found.error()));
      json rows = json::array();
      for (const auto& worker : *found) rows.push_back(worker_json(worker));
      answer(json_answer(200, json{{"workers", std::move(rows)}}));
    });
  }

  void query(const std::string& hub, const http_request& request, responder answer) {
    auto spec = orchestration_list(request, options_);
    if (!spec) return answer(failure(spec.error()));
    std::make_shared<list_reading>(service_, worker_, lists_, hub, std::move(*spec), std::move(answer))->start();
  }

  void get(const std::string& hub, const std::string& id, bool payloads, responder answer) {
    service_.get(hub, id, false, [worker = worker_, id, payloads, answer = std::move(answer)](
                                     expected<std::optional<service::instance_view>> found) {
      if (!found) return answer(failure(found.error()));
      if (!*found) return answer(failure(error{errc::not_found, fmt::format("no orchestration with id '{}'", id)}));
      // Payloads can be megabytes: written out on the API's thread, not the partition's.
      auto view = std::make_shared<service::instance_view>(std::move(**found));
      if (!worker->post([view, payloads, answer] {
            answer(json_answer(200, payloads ? payloads_json(view->record) : orchestration_json(view->record)));
          })) {
        answer(failure(error{errc::resource_exhausted, "the dashboard is busy; try again"}));
      }
    });
  }

  void history(const std::string& hub, const std::string& id, const std::string& execution, responder answer) {
    service_.get(hub, id, true, [worker = worker_, id, execution, answer = std::move(answer)](
                                    expected<std::optional<service::instance_view>> found) mutable {
      if (!found) return answer(failure(found.error()));
      if (!*found) return answer(failure(error{errc::not_found, fmt::format("no orchestration with id '{}'", id)}));
      if ((*found)->record.execution_id != execution) {
        return answer(failure(error{errc::not_found, fmt::format("orchestration '{}' has no execution '{}' (its "
                                                                 "current one is '{}')",
                                                                 id, execution, (*found)->record.execution_id)}));
      }
      auto view = std::make_shared<service::instance_view>(std::move(**found));
      auto respond = [view, answer] {
        json events = json::array();
        for (const auto& event : view->history) events.push_back(history_event_json(event));
        answer(json_answer(200, events));
      };
      if (!worker->post(respond)) answer(failure(error{errc::resource_exhausted, "the dashboard is busy; try again"}));
    });
  }

  void start(const std::string& hub, const http_request& request, responder answer) {
    auto body = body_object(request);
    if (!body) return answer(failure(body.error()));
    core::start_request start;
    auto name = string_field(*body, "name", "");
    if (!name) return answer(failure(name.error()));
    if (name->empty()) return answer(bad_input("name: required"));
    start.name = *name;
    auto id = string_field(*body, "instanceId", "");
    if (!id) return answer(failure(id.error()));
    start.instance_id = id->empty() ? service::new_instance_id() : *id;
    auto execution = string_field(*body, "executionId", "");
    if (!execution) return answer(failure(execution.error()));
    start.execution_id = *execution;
    auto version = string_field(*body, "version", "");
    if (!version) return answer(failure(version.error()));
    if (!version->empty()) start.version = *version;
    if (auto input = body->find("input"); input != body->end()) start.input = payload_of(*input);
    auto scheduled = string_field(*body, "scheduledStartTimestamp", "");
    if (!scheduled) return answer(failure(scheduled.error()));
    if (!scheduled->empty()) {
      auto ns = parse_rfc3339(*scheduled);
      if (!ns) return answer(bad_input("scheduledStartTimestamp: " + ns.error().message));
      start.scheduled_start_ns = *ns;
    }
    if (auto tags = body->find("tags"); tags != body->end() && !tags->is_null()) {
      if (!tags->is_object()) return answer(bad_input("tags: must be an object of strings"));
      for (const auto& [key, value] : tags->items()) {
        if (!value.is_string()) return answer(bad_input(fmt::format("tags.{}: must be a string", key)));
        start.tags[key] = value.get<std::string>();
      }
    }
    start.replaceable_statuses = core::terminal_statuses();
    service_.start(hub, std::move(start), [answer = std::move(answer)](expected<service::started> started) {
      if (!started) return answer(failure(started.error()));
      auto response = json_answer(201, json{{"instanceId", started->instance_id},
                                            {"executionId", started->execution_id}});
      response.headers.emplace_back("Location", "/v1/taskhubs/orchestrations/" + percent_encode(started->instance_id));
      answer(std::move(response));
    });
  }

  void restart(const std::string& hub, const std::string& id, const http_request& request, responder answer) {
    auto body = body_object(request);
    if (!body) return answer(failure(body.error()));
    bool new_id = false;
    if (auto found = body->find("restartWithNewInstanceId"); found != body->end() && !found->is_null()) {
      if (!found->is_boolean()) return answer(bad_input("restartWithNewInstanceId: must be true or false"));
      new_id = found->get<bool>();
    }
    service_.restart(hub, id, new_id, [answer = std::move(answer)](expected<std::string> started) {
      if (!started) return answer(failure(started.error()));
      answer(http_response{200, "text/plain", *started, {}});
    });
  }

  /// One history event a client adds: suspend, resume, terminate, rewind or raise.
  void add_event(const std::string& hub, const std::string& id, const json& event, service::callback<void> done) {
    if (event.size() != 1) {
      return done(error{errc::invalid_argument,
                        "the body must hold exactly one of executionSuspended, executionResumed, "
                        "executionTerminated, executionRewound, eventRaised"});
    }
    const auto first = event.begin();
    const std::string kind = first.key();
    const json& fields = first.value();
    if (!fields.is_object() && !fields.is_null()) return done(error{errc::invalid_argument, kind + ": must be an object"});
    const json details = fields.is_null() ? json::object() : fields;
    // The reason is `reason` (what DTS's tools send) or `input` (the protocol's name).
    core::payload reason = std::nullopt;
    if (auto found = details.find("reason"); found != details.end()) reason = payload_of(*found);
    if (auto found = details.find("input"); !reason && found != details.end()) reason = payload_of(*found);
    if (kind == "executionSuspended") return service_.suspend(hub, id, reason, std::move(done));
    if (kind == "executionResumed") return service_.resume(hub, id, reason, std::move(done));
    if (kind == "executionRewound") return service_.rewind(hub, id, reason, std::move(done));
    if (kind == "executionTerminated") {
      core::terminate_request terminate{reason, false};
      if (auto recurse = details.find("recurse"); recurse != details.end() && recurse->is_boolean()) {
        terminate.recurse = recurse->get<bool>();
      }
      return service_.terminate(hub, id, terminate, std::move(done));
    }
    if (kind == "eventRaised") {
      auto name = string_field(details, "name", "eventRaised.");
      if (!name) return done(name.error());
      if (name->empty()) return done(error{errc::invalid_argument, "eventRaised.name: required"});
      core::payload input = std::nullopt;
      if (auto found = details.find("input"); found != details.end()) input = payload_of(*found);
      return service_.raise_event(hub, id, *name, input, std::move(done));
    }
    done(error{errc::invalid_argument, fmt::format("'{}' is not an event a client can add", kind)});
  }

  void add_history_events(const std::string& hub, const http_request& request, responder answer) {
    auto body = body_object(request);
    if (!body) return answer(failure(body.error()));
    auto events = body->find("events");
    if (events == body->end() || !events->is_object()) return answer(bad_input("events: must be an object of id -> event"));
    if (events->size() > options_.bulk_ids_max) {
      return answer(bad_input(fmt::format("events: at most {} instances at once", options_.bulk_ids_max)));
    }
    struct tally {
      std::mutex mutex;
      std::size_t left = 0;
      std::vector<std::string> failed;
      responder answer;
    };
    auto counts = std::make_shared<tally>();
    counts->left = events->size() + 1;
    counts->answer = std::move(answer);
    auto settle = [counts](const std::string* failed_id) {
      std::unique_lock lock(counts->mutex);
      if (failed_id) counts->failed.push_back(*failed_id);
      if (--counts->left != 0) return;
      auto failed = std::move(counts->failed);
      lock.unlock();
      counts->answer(json_answer(200, failed));
    };
    for (const auto& [id, event] : events->items()) {
      if (!core::validate_instance_id(id) || !event.is_object()) {
        settle(&id);
        continue;
      }
      add_event(hub, id, event, [settle, id](expected<void> done) { settle(done ? nullptr : &id); });
    }
    settle(nullptr);
  }

  void force_terminate(const std::string& hub, const http_request& request, responder answer) {
    auto body = body_object(request);
    if (!body) return answer(failure(body.error()));
    auto ids = body->find("InstanceIds");
    if (ids == body->end()) ids = body->find("instanceIds");
    if (ids == body->end() || !ids->is_array()) return answer(bad_input("instanceIds: must be a list of ids"));
    if (ids->size() > options_.bulk_ids_max) {
      return answer(bad_input(fmt::format("instanceIds: at most {} at once", options_.bulk_ids_max)));
    }
    std::vector<std::string> list;
    for (const auto& id : *ids) {
      if (!id.is_string()) return answer(bad_input("instanceIds: must be a list of strings"));
      list.push_back(id.get<std::string>());
    }
    core::payload reason = std::nullopt;
    if (auto found = body->find("Reason"); found != body->end()) reason = payload_of(*found);
    if (auto found = body->find("reason"); !reason && found != body->end()) reason = payload_of(*found);
    service_.terminate_many(hub, std::move(list), reason,
                            [answer = std::move(answer)](expected<std::vector<std::string>> failed) {
                              if (!failed) return answer(failure(failed.error()));
                              answer(json_answer(200, *failed));
                            });
  }

  void purge_one(const std::string& hub, const std::string& id, responder answer) {
    service_.purge(hub, id, false, [answer = std::move(answer)](expected<std::size_t> purged) {
      if (!purged) return answer(failure(purged.error()));
      answer(json_answer(200, json{{"deletedInstanceCount", *purged}}));
    });
  }

  void purge_many(const std::string& hub, const http_request& request, responder answer) {
    auto body = parse_body(request.body);
    if (!body) return answer(failure(body.error()));
    const auto& parsed = *body;
    if (!parsed.is_array()) return answer(bad_input("the body must be a list of instance ids"));
    if (parsed.size() > options_.bulk_ids_max) {
      return answer(bad_input(fmt::format("at most {} instance ids at once", options_.bulk_ids_max)));
    }
    std::vector<std::string> ids;
    for (const auto& id : parsed) {
      if (!id.is_string()) return answer(bad_input("the body must be a list of instance id strings"));
      ids.push_back(id.get<std::string>());
    }
    service_.purge_many(hub, std::move(ids), false, [answer = std::move(answer)](expected<std::size_t> purged) {
      if (!purged) return answer(failure(purged.error()));
      answer(json_answer(200, json{{"deletedInstanceCount", *purged}}));
    });
  }

  service::task_service& service_;  ///< Outlives the API (the server stops first).
  rest_options options_;
  std::shared_ptr<list_worker> worker_ = std::make_shared<list_worker>();
  std::shared_ptr<list_registry> lists_ = std::make_shared<list_registry>();
  std::unique_ptr<recent_samples> recent_;

 public:
  /// Ends the list scans and the sampling: nothing asks the service anything once
  /// this returns.
  void close() {
    lists_->close(std::chrono::seconds(10));
    recent_->stop();
  }
};

rest_endpoint::rest_endpoint(service::task_service& service, rest_options options)
    : api_(std::make_shared<rest_api>(service, options)) {}

rest_endpoint::~rest_endpoint() { close(); }

http_handler rest_endpoint::handler() const {
  return [api = api_](http_request request, responder answer) { api->handle(std::move(request), std::move(answer)); };
}

void rest_endpoint::close() { api_->close(); }

}  // namespace dtsd::dashboard
