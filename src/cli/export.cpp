#include "cli/export.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <csignal>
#include <thread>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/schedule.hpp"
#include "dashboard/rest_json.hpp"

namespace dtsd::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

/// Set by SIGINT or SIGTERM: a following export stops between pages.
volatile std::sig_atomic_t stop_asked = 0;
extern "C" void ask_stop(int) { stop_asked = 1; }

int fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "\ndtsctl: %s\n", message.c_str());
  return code;
}

/// The filter as the progress file keeps it: a resume must ask for the same.
json filter_json(const export_options& o) {
  json statuses = json::array();
  for (auto status : o.filter.statuses) statuses.push_back(std::string(core::to_string(status)));
  auto time = [](const std::optional<std::chrono::system_clock::time_point>& at) {
    return at ? json(std::chrono::duration_cast<std::chrono::nanoseconds>(at->time_since_epoch()).count()) : json();
  };
  return {{"statuses", statuses},
          {"namePrefix", o.filter.name_prefix},
          {"instanceIdPrefix", o.filter.instance_id_prefix},
          {"createdFrom", time(o.filter.created_from)},
          {"createdTo", time(o.filter.created_to)},
          {"completedFrom", o.completed_from},
          {"completedTo", o.completed_to},
          {"gzip", o.gzip},
          {"purge", o.purge}};
}

/// One gzip member holding `text` (members back to back are one gzip file).
expected<std::string> gzip_member(const std::string& text) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return error{errc::io, "zlib could not start a gzip stream"};
  }
  std::string out(deflateBound(&stream, text.size()) + 64, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  stream.avail_in = static_cast<uInt>(text.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const auto done = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (done != Z_STREAM_END) return error{errc::io, "zlib could not compress a page"};
  return out;
}

/// Appends `bytes` to `path` and makes them durable.
expected<void> append_durably(const fs::path& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return error{errc::io, fmt::format("cannot open {}: {}", path.string(), std::strerror(errno))};
  std::size_t written = 0;
  while (written < bytes.size()) {
    const auto n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const auto why = std::strerror(errno);
      ::close(fd);
      return error{errc::io, fmt::format("cannot write {}: {}", path.string(), why)};
    }
    written += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) return error{errc::io, fmt::format("cannot sync {}", path.string())};
  return {};
}

/// Replaces the progress file in one rename, durably.
expected<void> save_progress(const fs::path& path, const json& progress) {
  const auto temporary = path.string() + ".tmp";
  std::remove(temporary.c_str());
  if (auto written = append_durably(temporary, progress.dump() + "\n"); !written) return written;
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    return error{errc::io, fmt::format("cannot replace {}: {}", path.string(), std::strerror(errno))};
  }
  const int dir = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return {};
}

/// Purges what a page exported; an id already gone (purged before a crash cut the
/// page's purges short) counts as purged. One started again under its id since it
/// was exported is left alone (its new run is not in the file).
expected<std::size_t> purge_all(sdk::client& client, const std::vector<std::string>& ids) {
  std::size_t purged = 0;
  for (const auto& id : ids) {
    auto done = client.purge(id);
    if (!done && done.error().code == errc::failed_precondition) continue;
    if (!done && done.error().code != errc::not_found) return done.error();
    ++purged;
  }
  return purged;
}

}  // namespace

int export_instances(sdk::client& client, const export_options& asked, bool as_json) {
  auto o = asked;
  if (o.purge) {
    // Only what has ended may be purged: a running one written now would be
    // purged later, once ended, without its end ever written.
    if (o.filter.statuses.empty()) o.filter.statuses = core::terminal_statuses();
    for (auto status : o.filter.statuses) {
      if (!core::is_terminal(status)) {
        return fail(fmt::format("--purge exports ended orchestrations only; --status {} has not ended",
                                core::to_string(status)),
                    2);
      }
    }
  }
  if (o.to.empty()) return fail("say where to write: --to FILE (FILE.gz, or --gzip, compresses)", 2);
  if (o.follow_s != 0 && !o.purge) {
    return fail("--follow needs --purge: each pass exports what is new because what it exported is gone", 2);
  }
  if (o.follow_s != 0) {
    std::signal(SIGINT, ask_stop);
    std::signal(SIGTERM, ask_stop);
  }
  const fs::path out = o.to;
  const fs::path progress_path = o.to + ".progress";
  std::optional<std::int64_t> completed_from, completed_to;
  for (auto [text, bound] : {std::pair{&o.completed_from, &completed_from}, {&o.completed_to, &completed_to}}) {
    if (text->empty()) continue;
    auto at = core::parse_time(*text);
    if (!at) return fail(at.error().message, 2);
    *bound = *at;
  }
  const auto filter = filter_json(o);

  json progress{{"filter", filter}, {"token", ""}, {"bytes", 0}, {"exported", 0}, {"purged", 0},
                {"purgePending", json::array()}, {"done", false}};
  std::error_code ec;
  if (o.restart && fs::exists(progress_path, ec)) {
    std::ifstream in(progress_path);
    auto kept = json::parse(in, nullptr, false);
    if (!kept.is_discarded() && kept.is_object() && kept.value("purged", std::uint64_t{0}) != 0 && fs::exists(out, ec)) {
      return fail(fmt::format("{} holds the only copy of {} orchestrations its export purged: move it away before "
                              "--restart",
                              o.to, kept["purged"].get<std::uint64_t>()),
                  2);
    }
  }
  if (!o.restart && fs::exists(progress_path, ec)) {
    std::ifstream in(progress_path);
    auto kept = json::parse(in, nullptr, false);
    if (kept.is_discarded() || !kept.is_object() || !kept.contains("filter")) {
      return fail(fmt::format("{} cannot be read: give --restart to export again from the start", progress_path.string()));
    }
    if (kept["filter"] != filter) {
      return fail(fmt::format("{} belongs to an export with other options ({}): run it with the same ones, or give "
                              "--restart",
                              progress_path.string(), kept["filter"].dump()),
                  2);
    }
    progress = std::move(kept);
    if (progress.value("done", false)) {
      std::fprintf(stderr, "dtsctl: the export to %s is complete already (--restart writes it again)\n", o.to.c_str());
    } else {
      std::fprintf(stderr, "dtsctl: resuming the export to %s after %llu orchestrations\n", o.to.c_str(),
                   static_cast<unsigned long long>(progress["exported"].get<std::uint64_t>()));
    }
  } else if (!o.restart && fs::exists(out, ec)) {
    return fail(fmt::format("{} exists and no export is in progress there: give --restart to replace it", o.to), 2);
  } else {
    fs::remove(out, ec);
    if (auto saved = save_progress(progress_path, progress); !saved) return fail(saved.error().message);
  }

  // What the last page wrote whole stays; anything after it (a crash mid-page) goes.
  const auto whole = progress["bytes"].get<std::uint64_t>();
  const auto size = fs::exists(out, ec) ? fs::file_size(out, ec) : 0;
  if (size < whole) {
    return fail(fmt::format("{} has {} bytes where its export wrote {}: it was moved or cut; give --restart to "
                            "export again",
                            o.to, size, whole),
                2);
  }
  if (size > whole) fs::resize_file(out, whole, ec);
  if (ec) return fail(fmt::format("cannot cut {} back to {} bytes: {}", o.to, whole, ec.message()));

  // A purge the last run did not finish comes first.
  if (o.purge && !progress["purgePending"].empty()) {
    auto purged = purge_all(client, progress["purgePending"].get<std::vector<std::string>>());
    if (!purged) return fail(purged.error().message);
    progress["purged"] = progress["purged"].get<std::uint64_t>() + *purged;
    progress["purgePending"] = json::array();
    if (auto saved = save_progress(progress_path, progress); !saved) return fail(saved.error().message);
  }

  auto query = o.filter;
  const auto started = std::chrono::steady_clock::now();
  // On a terminal the progress line is redrawn after each page; in a log, a line every 5 s.
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  auto last_line = started;
  if (o.follow_s != 0 && progress["done"].get<bool>()) progress["done"] = false;  // Another pass.
  while (!progress["done"].get<bool>() && !stop_asked) {
    query.continuation_token = progress["token"].get<std::string>();
    auto page = client.query(query);
    if (!page) return fail(page.error().message + " (run the same command again to resume)");
    std::string lines;
    std::vector<std::string> exported;
    std::vector<const core::instance_record*> chosen;
    std::vector<std::string> chosen_ids;
    for (const auto& record : page->instances) {
      if (o.purge && !core::is_terminal(record.status)) continue;
      if (completed_from || completed_to) {
        if (record.completed_at_ns == 0) continue;
        if (completed_from && record.completed_at_ns < *completed_from) continue;
        if (completed_to && record.completed_at_ns > *completed_to) continue;
      }
      chosen.push_back(&record);
      chosen_ids.push_back(record.instance_id);
    }
    auto histories = client.histories(chosen_ids);
    if (!histories) return fail(histories.error().message + " (run the same command again to resume)");
    for (std::size_t i = 0; i < chosen.size(); ++i) {
      const auto& record = *chosen[i];
      const auto& history = (*histories)[i];
      if (!history) continue;  // Purged meanwhile.
      auto line = dashboard::orchestration_json(record);
      line.update(dashboard::payloads_json(record));
      auto events = json::array();
      for (const auto& event : *history) events.push_back(dashboard::history_event_json(event));
      line["history"] = std::move(events);
      lines += line.dump();
      lines += '\n';
      exported.push_back(record.instance_id);
    }
    std::string bytes = std::move(lines);
    if (o.gzip && !bytes.empty()) {
      auto packed = gzip_member(bytes);
      if (!packed) return fail(packed.error().message);
      bytes = std::move(*packed);
    }
    if (!bytes.empty()) {
      if (auto written = append_durably(out, bytes); !written) return fail(written.error().message);
    }
    progress["bytes"] = progress["bytes"].get<std::uint64_t>() + bytes.size();
    progress["exported"] = progress["exported"].get<std::uint64_t>() + exported.size();
    progress["token"] = page->continuation_token;
    progress["done"] = page->continuation_token.empty() && o.follow_s == 0;
    if (o.purge) progress["purgePending"] = exported;
    if (auto saved = save_progress(progress_path, progress); !saved) return fail(saved.error().message);
    if (o.purge && !exported.empty()) {
      auto purged = purge_all(client, exported);
      if (!purged) return fail(purged.error().message + " (run the same command again to resume)");
      progress["purged"] = progress["purged"].get<std::uint64_t>() + *purged;
      progress["purgePending"] = json::array();
      if (auto saved = save_progress(progress_path, progress); !saved) return fail(saved.error().message);
    }
    if (o.follow_s != 0 && page->continuation_token.empty()) {
      // The end of a pass: wait for more (in short steps, to stop soon when asked).
      for (std::uint32_t waited = 0; waited < o.follow_s * 10 && !stop_asked; ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (!terminal && now - last_line < std::chrono::seconds(5)) continue;
    last_line = now;
    const double seconds = std::chrono::duration<double>(now - started).count();
    std::fprintf(stderr, terminal ? "\rexported %llu orchestrations, %.1f MiB%s (%.0f s)   "
                                  : "exported %llu orchestrations, %.1f MiB%s (%.0f s)\n",
                 static_cast<unsigned long long>(progress["exported"].get<std::uint64_t>()),
                 static_cast<double>(progress["bytes"].get<std::uint64_t>()) / 1048576.0,
                 o.purge ? fmt::format(", purged {}", progress["purged"].get<std::uint64_t>()).c_str() : "", seconds);
  }
  if (terminal) std::fprintf(stderr, "\n");
  if (as_json) {
    std::printf("%s\n", json{{"to", o.to},
                             {"exported", progress["exported"]},
                             {"purged", progress["purged"]},
                             {"bytes", progress["bytes"]},
                             {"gzip", o.gzip}}
                            .dump()
                            .c_str());
  } else {
    std::printf("exported %llu orchestrations to %s (%.1f MiB%s)%s\n",
                static_cast<unsigned long long>(progress["exported"].get<std::uint64_t>()), o.to.c_str(),
                static_cast<double>(progress["bytes"].get<std::uint64_t>()) / 1048576.0, o.gzip ? ", gzip" : "",
                o.purge ? fmt::format("; purged {}", progress["purged"].get<std::uint64_t>()).c_str() : "");
  }
  return 0;
}

}  // namespace dtsd::cli
