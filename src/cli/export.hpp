#pragma once
/// `dtsctl export`: orchestrations matching a filter, each with its full history,
/// written to a file as JSON Lines (one orchestration a line, in DTS's REST shapes),
/// gzip-compressed when asked. One page is in memory at a time. Progress is kept
/// beside the file (FILE.progress: the filter, where the walk is, the bytes written
/// that are whole), so an export interrupted at any point (a crash, Ctrl-C, a
/// lost connection) resumes when the same command runs again, without a line
/// missing or written twice. With --purge, each page's orchestrations are purged
/// once the page is on disk (a purge cut short is done first on resume).

#include <cstdint>
#include <string>
#include <vector>

#include "sdk/client.hpp"

namespace dtsd::cli {

struct export_options {
  std::string to;  ///< The file; gzip when it ends in .gz or `gzip` is set.
  bool gzip = false;
  sdk::query_options filter;  ///< Statuses, name and id prefixes, created range (server side).
  /// Completed between these (RFC 3339 text; empty: no bound), checked here.
  std::string completed_from, completed_to;
  bool purge = false;
  bool restart = false;  ///< Start over, replacing the file and its progress.
  /// Continuous: after the last page, look again every this many seconds for new
  /// matches, until SIGINT or SIGTERM (0: one pass). Needs `purge`: what was
  /// exported is gone, so each pass finds only what is new.
  std::uint32_t follow_s = 0;
};

/// Runs (or resumes) the export; prints progress on stderr and the summary on
/// stdout. Exit code as dtsctl's: 0 done, 1 refused or failed, 2 bad options.
int export_instances(sdk::client& client, const export_options& options, bool as_json);

}  // namespace dtsd::cli
