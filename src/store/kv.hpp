#pragma once
/// The key-value engine under a partition store: named tables of ordered byte
/// keys, one writer at a time, readers that never block it. Two engines implement
/// it: LMDB (durable) and memory (the emulator-like mode and tests). Everything
/// above it (tables, indexes, queries, recovery) is shared, so one conformance
/// suite covers both.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace dtsd::store {

enum class table : std::uint8_t {
  meta,
  log,
  instances,
  history,
  inbox,
  timers,
  activities,
  outbox,
  dedup,
  entities,
  by_status,
  by_created,
};
inline constexpr std::size_t table_count = 12;
const char* table_name(table t);

/// Visits rows in key order; returning false stops the scan.
using row_visitor = std::function<bool(std::string_view key, std::string_view value)>;

/// A consistent snapshot. Views returned by `get` and given to visitors are valid
/// until the transaction ends.
class kv_reader {
 public:
  virtual ~kv_reader() = default;
  virtual std::optional<std::string_view> get(table t, std::string_view key) = 0;
  /// Rows with from <= key < to, in order; an empty `to` means "to the end".
  virtual void scan(table t, std::string_view from, std::string_view to,
                    const row_visitor& visit) = 0;
  /// The largest key in the table, if any.
  virtual std::optional<std::string> last_key(table t) = 0;
};

class kv_writer : public kv_reader {
 public:
  virtual void put(table t, std::string_view key, std::string_view value) = 0;
  virtual void erase(table t, std::string_view key) = 0;
  /// Deletes rows with from <= key < to (empty `to`: to the end).
  virtual void erase_range(table t, std::string_view from, std::string_view to) = 0;
};

enum class durability : std::uint8_t {
  fsync,   ///< Every commit is on disk before it returns (the default).
  nosync,  ///< Commits reach the OS but are not flushed: survives a process crash only.
  memory,  ///< No disk at all, like the DTS emulator.
};

class kv_engine {
 public:
  virtual ~kv_engine() = default;
  /// Runs `body` in one write transaction and commits it. `body` may run more than
  /// once (LMDB: after growing a full map), so it must only write through `writer`.
  /// Exceptions thrown by `body` abort the transaction and propagate.
  virtual expected<void> write(const std::function<void(kv_writer&)>& body) = 0;
  virtual expected<void> read(const std::function<void(kv_reader&)>& body) = 0;
  /// Bytes the data takes on disk (LMDB: the pages in use); 0 in memory.
  virtual std::uint64_t disk_bytes() const { return 0; }
};

struct lmdb_options {
  std::string directory;  ///< Created if missing.
  durability mode = durability::fsync;
  std::uint64_t map_size_bytes = std::uint64_t{1} << 30;  ///< Grows on demand.
};

expected<std::unique_ptr<kv_engine>> open_lmdb(const lmdb_options& options);

/// An LMDB environment's directory locked with flock(`how`) on its dtsd.lock:
/// shared while dtsd has it open, exclusive while it is compacted. Returns the
/// descriptor that holds the lock; errc::failed_precondition when the other kind
/// holds it.
expected<int> lock_directory(const std::string& directory, int how);

struct compacted {
  std::uint64_t bytes_before = 0, bytes_after = 0;
};
/// Rewrites the environment in `directory` without its free pages (mdb_env_copy2
/// with MDB_CP_COMPACT), replacing its data file in one rename. Refused
/// (errc::failed_precondition) while a dtsd has it open.
expected<compacted> compact_lmdb(const std::string& directory);

/// The partition store directories under a data directory (`<hub>/p<k>` holding
/// a data.mdb), of `only_hub` or of every hub, in order.
expected<std::vector<std::string>> partition_directories(const std::string& data_dir, const std::string& only_hub = {});
std::unique_ptr<kv_engine> open_memory();

}  // namespace dtsd::store
