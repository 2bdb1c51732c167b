#include "cli/export.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "export/history_export.hpp"

namespace dtsd::cli {
namespace {

using json = nlohmann::json;

/// Set by SIGINT or SIGTERM: a following export stops between pages.
volatile std::sig_atomic_t stop_asked = 0;
extern "C" void ask_stop(int) { stop_asked = 1; }

std::int64_t ns_of(std::chrono::system_clock::time_point at) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
}
std::chrono::system_clock::time_point time_of(std::int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
}

/// A dtsd over the native API.
class client_source final : public history_export::source {
 public:
  explicit client_source(sdk::client& client) : client_(client) {}

  expected<core::query_page> query(const core::instance_query& query) override {
    sdk::query_options asked;
    asked.statuses = query.statuses;
    if (query.created_from_ns) asked.created_from = time_of(*query.created_from_ns);
    if (query.created_to_ns) asked.created_to = time_of(*query.created_to_ns);
    asked.name_prefix = query.name_prefix;
    asked.instance_id_prefix = query.instance_id_prefix;
    asked.version = query.version;
    asked.page_size = static_cast<std::uint32_t>(query.page_size);
    asked.continuation_token = query.continuation_token;
    auto page = client_.query(asked);
    if (!page) return page.error();
    return core::query_page{std::move(page->instances), std::move(page->continuation_token)};
  }
  expected<std::vector<std::optional<std::vector<core::history_event>>>> histories(
      const std::vector<std::string>& ids) override {
    return client_.histories(ids);
  }
  expected<void> purge(const std::string& instance_id, const std::string& execution_id) override {
    if (!execution_id.empty()) {
      auto now = client_.get(instance_id);
      if (!now) return now.error();
      if (!*now) return error{errc::not_found, instance_id};
      if ((*now)->execution_id != execution_id) return error{errc::failed_precondition, instance_id};
    }
    auto done = client_.purge(instance_id);
    if (!done) return done.error();
    return {};
  }

 private:
  sdk::client& client_;
};

}  // namespace

int export_instances(sdk::client& client, const export_options& asked, bool as_json) {
  history_export::options o;
  o.to = asked.to;
  o.gzip = asked.gzip;
  o.filter.statuses = asked.filter.statuses;
  if (asked.filter.created_from) o.filter.created_from_ns = ns_of(*asked.filter.created_from);
  if (asked.filter.created_to) o.filter.created_to_ns = ns_of(*asked.filter.created_to);
  o.filter.name_prefix = asked.filter.name_prefix;
  o.filter.instance_id_prefix = asked.filter.instance_id_prefix;
  o.filter.version = asked.filter.version;
  o.filter.page_size = asked.filter.page_size;
  o.completed_from = asked.completed_from;
  o.completed_to = asked.completed_to;
  o.purge = asked.purge;
  o.restart = asked.restart;
  o.follow_s = asked.follow_s;
  if (o.follow_s != 0) {
    std::signal(SIGINT, ask_stop);
    std::signal(SIGTERM, ask_stop);
  }

  // On a terminal the progress line is redrawn after each page; in a log, a line every 5 s.
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  const auto started = std::chrono::steady_clock::now();
  auto last_line = started;
  history_export::hooks hooks;
  hooks.stop_asked = [] { return stop_asked != 0; };
  hooks.note = [](const std::string& line) { std::fprintf(stderr, "dtsctl: %s\n", line.c_str()); };
  hooks.page_done = [&](const history_export::progress& now_at) {
    const auto now = std::chrono::steady_clock::now();
    if (!terminal && now - last_line < std::chrono::seconds(5)) return;
    last_line = now;
    const double seconds = std::chrono::duration<double>(now - started).count();
    const auto purged = o.purge ? fmt::format(", purged {}", now_at.purged) : std::string();
    std::fprintf(stderr, terminal ? "\rexported %llu orchestrations, %.1f MiB%s (%.0f s)   "
                                  : "exported %llu orchestrations, %.1f MiB%s (%.0f s)\n",
                 static_cast<unsigned long long>(now_at.exported), static_cast<double>(now_at.bytes) / 1048576.0,
                 purged.c_str(), seconds);
  };
  client_source from(client);
  auto done = history_export::run(from, o, hooks);
  if (terminal) std::fprintf(stderr, "\n");
  if (!done) {
    const bool bad_options = done.error().code == errc::invalid_argument;
    std::fprintf(stderr, "dtsctl: %s%s\n", done.error().message.c_str(),
                 bad_options ? "" : " (run the same command again to resume)");
    if (bad_options && done.error().message.find(" over") != std::string::npos) {
      std::fprintf(stderr, "dtsctl: --restart starts the export over\n");
    }
    return bad_options ? 2 : 1;
  }
  if (as_json) {
    std::printf("%s\n", json{{"to", o.to},
                             {"exported", done->exported},
                             {"purged", done->purged},
                             {"bytes", done->bytes},
                             {"gzip", o.gzip}}
                            .dump()
                            .c_str());
  } else {
    const auto purged = o.purge ? fmt::format("; purged {}", done->purged) : std::string();
    std::printf("exported %llu orchestrations to %s (%.1f MiB%s)%s\n", static_cast<unsigned long long>(done->exported),
                o.to.c_str(), static_cast<double>(done->bytes) / 1048576.0, o.gzip ? ", gzip" : "", purged.c_str());
  }
  return 0;
}

}  // namespace dtsd::cli
