#include "export/history_export.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/schedule.hpp"
#include "dashboard/rest_json.hpp"

namespace dtsd::history_export {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

error refused(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

progress view_of(const json& kept) {
  return progress{kept.value("exported", std::uint64_t{0}), kept.value("purged", std::uint64_t{0}),
                  kept.value("bytes", std::uint64_t{0}), kept.value("done", false)};
}

/// The filter as the progress file keeps it: a resume must ask for the same.
json filter_json(const options& o) {
  json statuses = json::array();
  for (auto status : o.filter.statuses) statuses.push_back(std::string(core::to_string(status)));
  auto time = [](const std::optional<std::int64_t>& at) { return at ? json(*at) : json(); };
  return {{"statuses", statuses},
          {"namePrefix", o.filter.name_prefix},
          {"instanceIdPrefix", o.filter.instance_id_prefix},
          {"createdFrom", time(o.filter.created_from_ns)},
          {"createdTo", time(o.filter.created_to_ns)},
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
  return replace_durably(path.string(), progress.dump() + "\n");
}

/// Purges what a page exported (each entry: {"id", "executionId"}; a bare id from
/// an older progress file purges whichever run is there). An id already gone
/// (purged before a crash cut the page's purges short) counts as purged; one whose
/// run was replaced since it was exported is left alone.
expected<std::size_t> purge_all(source& from, const json& pending) {
  std::size_t purged = 0;
  for (const auto& entry : pending) {
    const auto id = entry.is_string() ? entry.get<std::string>() : entry.value("id", std::string());
    const auto execution = entry.is_object() ? entry.value("executionId", std::string()) : std::string();
    auto done = from.purge(id, execution);
    if (!done && done.error().code == errc::failed_precondition) continue;
    if (!done && done.error().code != errc::not_found) return done.error();
    ++purged;
  }
  return purged;
}

}  // namespace

expected<void> replace_durably(const std::string& path, const std::string& text) {
  const auto temporary = path + ".tmp";
  std::remove(temporary.c_str());
  if (auto written = append_durably(temporary, text); !written) return written;
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    return error{errc::io, fmt::format("cannot replace {}: {}", path, std::strerror(errno))};
  }
  const auto parent = fs::path(path).parent_path();
  const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return {};
}

std::optional<progress> read_progress(const std::string& to) {
  std::ifstream in(to + ".progress");
  if (!in) return std::nullopt;
  auto kept = json::parse(in, nullptr, false);
  if (kept.is_discarded() || !kept.is_object()) return std::nullopt;
  return view_of(kept);
}

expected<progress> run(source& from, options o, const hooks& hooks) {
  auto stop_asked = [&] { return hooks.stop_asked && hooks.stop_asked(); };
  auto note = [&](const std::string& line) {
    if (hooks.note) hooks.note(line);
  };
  if (o.purge) {
    // Only what has ended may be purged: a running one written now would be
    // purged later, once ended, without its end ever written.
    if (o.filter.statuses.empty()) o.filter.statuses = core::terminal_statuses();
    for (auto status : o.filter.statuses) {
      if (!core::is_terminal(status)) {
        return refused(fmt::format("a purging export takes ended orchestrations only; status {} has not ended",
                                   core::to_string(status)));
      }
    }
  }
  if (o.to.empty()) return refused("say where to write: a file (FILE.gz, or gzip, compresses)");
  if (o.follow_s != 0 && !o.purge) {
    return refused("a continuous export needs purge: each pass exports what is new because what it exported is gone");
  }
  const fs::path out = o.to;
  const fs::path progress_path = o.to + ".progress";
  std::optional<std::int64_t> completed_from, completed_to;
  for (auto [text, bound] : {std::pair{&o.completed_from, &completed_from}, {&o.completed_to, &completed_to}}) {
    if (text->empty()) continue;
    auto at = core::parse_time(*text);
    if (!at) return refused(at.error().message);
    *bound = *at;
  }
  const auto filter = filter_json(o);

  json progress{{"filter", filter}, {"token", ""}, {"bytes", 0}, {"exported", 0}, {"purged", 0},
                {"purgePending", json::array()}, {"done", false}};
  std::error_code ec;
  if (o.restart && fs::exists(progress_path, ec)) {
    std::ifstream in(progress_path);
    auto kept = json::parse(in, nullptr, false);
    const bool purging = !kept.is_discarded() && kept.is_object() &&
                         (kept.value("purged", std::uint64_t{0}) != 0 ||
                          (kept.contains("purgePending") && !kept["purgePending"].empty()));
    if (purging && fs::exists(out, ec)) {
      return refused(fmt::format("{} holds the only copy of {} orchestrations its export purged: move it away before "
                                 "starting over",
                                 o.to, kept["purged"].get<std::uint64_t>()));
    }
  }
  if (!o.restart && fs::exists(progress_path, ec)) {
    std::ifstream in(progress_path);
    auto kept = json::parse(in, nullptr, false);
    if (kept.is_discarded() || !kept.is_object() || !kept.contains("filter")) {
      return error{errc::io, fmt::format("{} cannot be read: start the export over", progress_path.string())};
    }
    if (kept["filter"] != filter) {
      return refused(fmt::format("{} belongs to an export with other options ({}): run it with the same ones, or "
                                 "start over",
                                 progress_path.string(), kept["filter"].dump()));
    }
    progress = std::move(kept);
    if (progress.value("done", false) && o.follow_s == 0) {
      note(fmt::format("the export to {} is complete already", o.to));
    } else {
      note(fmt::format("resuming the export to {} after {} orchestrations", o.to,
                       progress["exported"].get<std::uint64_t>()));
    }
  } else if (!o.restart && fs::exists(out, ec)) {
    return refused(fmt::format("{} exists and no export is in progress there: start over to replace it", o.to));
  } else {
    fs::remove(out, ec);
    if (auto saved = save_progress(progress_path, progress); !saved) return saved.error();
  }

  // What the last page wrote whole stays; anything after it (a crash mid-page) goes.
  const auto whole = progress["bytes"].get<std::uint64_t>();
  const auto size = fs::exists(out, ec) ? fs::file_size(out, ec) : 0;
  if (size < whole) {
    return refused(fmt::format("{} has {} bytes where its export wrote {}: it was moved or cut; start the export "
                               "over",
                               o.to, size, whole));
  }
  if (size > whole) fs::resize_file(out, whole, ec);
  if (ec) return error{errc::io, fmt::format("cannot cut {} back to {} bytes: {}", o.to, whole, ec.message())};

  // A purge the last run did not finish comes first.
  if (o.purge && !progress["purgePending"].empty()) {
    auto purged = purge_all(from, progress["purgePending"]);
    if (!purged) return purged.error();
    progress["purged"] = progress["purged"].get<std::uint64_t>() + *purged;
    progress["purgePending"] = json::array();
    if (auto saved = save_progress(progress_path, progress); !saved) return saved.error();
  }

  auto query = o.filter;
  if (o.follow_s != 0 && progress["done"].get<bool>()) progress["done"] = false;  // Another pass.
  while (!progress["done"].get<bool>() && !stop_asked()) {
    query.continuation_token = progress["token"].get<std::string>();
    auto page = from.query(query);
    if (!page) return page.error();
    std::string lines;
    json exported = json::array();  // {"id", "executionId"} of each line.
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
    auto histories = from.histories(chosen_ids);
    if (!histories) return histories.error();
    for (std::size_t i = 0; i < chosen.size(); ++i) {
      const auto& record = *chosen[i];
      const auto& history = (*histories)[i];
      if (!history) continue;  // Purged meanwhile.
      // Started again under its id between the page and this read: the run the page
      // saw is gone, and the new one's history does not belong to its record.
      const auto started = std::find_if(history->begin(), history->end(), [](const core::history_event& event) {
        return std::holds_alternative<core::events::execution_started>(event.body);
      });
      if (started != history->end() &&
          std::get<core::events::execution_started>(started->body).instance.execution_id != record.execution_id) {
        continue;
      }
      auto line = dashboard::orchestration_json(record);
      line.update(dashboard::payloads_json(record));
      auto events = json::array();
      for (const auto& event : *history) events.push_back(dashboard::history_event_json(event));
      line["history"] = std::move(events);
      lines += line.dump();
      lines += '\n';
      exported.push_back({{"id", record.instance_id}, {"executionId", record.execution_id}});
    }
    std::string bytes = std::move(lines);
    if (o.gzip && !bytes.empty()) {
      auto packed = gzip_member(bytes);
      if (!packed) return packed.error();
      bytes = std::move(*packed);
    }
    if (!bytes.empty()) {
      if (auto written = append_durably(out, bytes); !written) return written.error();
    }
    progress["bytes"] = progress["bytes"].get<std::uint64_t>() + bytes.size();
    progress["exported"] = progress["exported"].get<std::uint64_t>() + exported.size();
    progress["token"] = page->continuation_token;
    progress["done"] = page->continuation_token.empty() && o.follow_s == 0;
    if (o.purge) progress["purgePending"] = exported;
    if (auto saved = save_progress(progress_path, progress); !saved) return saved.error();
    if (o.purge && !exported.empty()) {
      auto purged = purge_all(from, exported);
      if (!purged) return purged.error();
      progress["purged"] = progress["purged"].get<std::uint64_t>() + *purged;
      progress["purgePending"] = json::array();
      if (auto saved = save_progress(progress_path, progress); !saved) return saved.error();
    }
    if (hooks.page_done) hooks.page_done(view_of(progress));
    if (o.follow_s != 0 && page->continuation_token.empty()) {
      // The end of a pass: wait for more (in short steps, to stop soon when asked).
      for (std::uint32_t waited = 0; waited < o.follow_s * 10 && !stop_asked(); ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  return view_of(progress);
}

}  // namespace dtsd::history_export
