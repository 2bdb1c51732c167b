#pragma once
/// History export: orchestrations matching a filter, each with its full history,
/// written to a file as JSON Lines (one orchestration a line, in DTS's REST
/// shapes), gzip-compressed when asked (one gzip member a page). One page is in
/// memory at a time. Progress is kept beside the file (FILE.progress: the filter,
/// where the walk is, the bytes written that are whole), replaced durably after
/// each page, so an export interrupted at any point (a crash, a stop, a lost
/// connection) resumes without a line missing or written twice. With `purge`, each
/// page's orchestrations are purged once the page is on disk (a purge cut short is
/// done first on resume).
///
/// `dtsctl export` runs it against a dtsd over the native API; dtsd's export jobs
/// (export/jobs.hpp) run it in dtsd against its own service.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/model.hpp"
#include "core/query.hpp"

namespace dtsd::history_export {

/// Where an export reads and purges: a dtsd, through whatever reaches it.
class source {
 public:
  virtual ~source() = default;
  /// One page of `query` (its continuation token says where).
  virtual expected<core::query_page> query(const core::instance_query& query) = 0;
  /// The history of each id, in order; none for an id that is gone.
  virtual expected<std::vector<std::optional<std::vector<core::history_event>>>> histories(
      const std::vector<std::string>& ids) = 0;
  /// Purges the run `execution_id` of an ended orchestration (empty: whichever run
  /// it has): errc::not_found when it is gone already, errc::failed_precondition
  /// when another run has taken its place (started anew under its id: that run is
  /// not in the file, and stays).
  virtual expected<void> purge(const std::string& instance_id, const std::string& execution_id) = 0;
};

struct options {
  std::string to;  ///< The file; gzip when it ends in .gz or `gzip` is set.
  bool gzip = false;
  /// Statuses, name and id prefixes, created range and page size (server side).
  core::instance_query filter;
  /// Ended between these (RFC 3339 text; empty: no bound), checked on each page.
  std::string completed_from, completed_to;
  bool purge = false;
  bool restart = false;  ///< Start over, replacing the file and its progress.
  /// Continuous: after the last page, look again every this many seconds for new
  /// matches, until stopped (0: one pass). Needs `purge`: what was exported is
  /// gone, so each pass finds only what is new.
  std::uint32_t follow_s = 0;
};

/// Where an export stands (what its progress file says).
struct progress {
  std::uint64_t exported = 0;
  std::uint64_t purged = 0;
  std::uint64_t bytes = 0;  ///< Of the file, whole pages only.
  bool done = false;
};

struct hooks {
  /// Asked between pages (and while a continuous export waits): true stops it.
  std::function<bool()> stop_asked;
  /// After each page is durable (and purged).
  std::function<void(const progress&)> page_done;
  /// A line worth telling whoever runs it ("resuming after N").
  std::function<void(const std::string&)> note;
};

/// Checks the options (errc::invalid_argument names what is wrong), then runs or
/// resumes the export until it is done or stopped. Any other error leaves the
/// file and its progress as they were after the last whole page: running the same
/// export again goes on from there.
expected<progress> run(source& from, options asked, const hooks& hooks = {});

/// Replaces `path` with `text` durably: written beside it, synced, renamed over it,
/// and the directory synced (a crash leaves the old text or the new, whole).
expected<void> replace_durably(const std::string& path, const std::string& text);

/// What FILE.progress says of the export to `to`; none when there is none.
std::optional<progress> read_progress(const std::string& to);

}  // namespace dtsd::history_export
