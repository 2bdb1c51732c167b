// The LMDB engine. One environment per partition directory, one named database per
// table. A write transaction begins and commits inside `write` on the calling
// thread (LMDB transactions belong to one thread). The map is large and virtual;
// when it fills anyway, the write is retried after doubling it.

#include <fcntl.h>
#include <lmdb.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

#include "store/kv.hpp"

namespace dtsd::store {
namespace {

constexpr int map_grow_count_max = 16;

struct lmdb_failure {
  int code;
  const char* operation;
};

void check(int rc, const char* operation) {
  if (rc != MDB_SUCCESS) throw lmdb_failure{rc, operation};
}

MDB_val to_val(std::string_view bytes) {
  return MDB_val{bytes.size(), const_cast<char*>(bytes.data())};
}
std::string_view to_view(const MDB_val& val) {
  return {static_cast<const char*>(val.mv_data), val.mv_size};
}

using dbi_set = std::array<MDB_dbi, table_count>;

/// Closes a cursor on every path out of a scope.
class cursor_guard {
 public:
  cursor_guard(MDB_txn* txn, MDB_dbi dbi) { check(mdb_cursor_open(txn, dbi, &cursor_), "cursor_open"); }
  ~cursor_guard() { mdb_cursor_close(cursor_); }
  cursor_guard(const cursor_guard&) = delete;
  cursor_guard& operator=(const cursor_guard&) = delete;
  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_ = nullptr;
};

/// Positions at the first key >= from; false when there is none.
bool seek(MDB_cursor* cursor, std::string_view from, MDB_val& key, MDB_val& value) {
  int rc;
  if (from.empty()) {
    rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
  } else {
    key = to_val(from);
    rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
  }
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "cursor_get");
  return true;
}

bool next(MDB_cursor* cursor, MDB_val& key, MDB_val& value) {
  int rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "cursor_next");
  return true;
}

class lmdb_txn_access : public kv_writer {
 public:
  lmdb_txn_access(MDB_txn* txn, const dbi_set& dbis) : txn_(txn), dbis_(dbis) {}

  std::optional<std::string_view> get(table t, std::string_view key) override {
    MDB_val k = to_val(key);
    MDB_val v;
    int rc = mdb_get(txn_, dbi(t), &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "get");
    return to_view(v);
  }

  void scan(table t, std::string_view from, std::string_view to,
            const row_visitor& visit) override {
    cursor_guard cursor(txn_, dbi(t));
    MDB_val k, v;
    for (bool more = seek(cursor.get(), from, k, v); more; more = next(cursor.get(), k, v)) {
      auto key = to_view(k);
      if (!to.empty() && key >= to) break;
      if (!visit(key, to_view(v))) break;
    }
  }

  std::optional<std::string> last_key(table t) override {
    cursor_guard cursor(txn_, dbi(t));
    MDB_val k, v;
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_LAST);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "cursor_last");
    return std::string(to_view(k));
  }

  void put(table t, std::string_view key, std::string_view value) override {
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    check(mdb_put(txn_, dbi(t), &k, &v, 0), "put");
  }

  void erase(table t, std::string_view key) override {
    MDB_val k = to_val(key);
    int rc = mdb_del(txn_, dbi(t), &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "del");
  }

  void erase_range(table t, std::string_view from, std::string_view to) override {
    cursor_guard cursor(txn_, dbi(t));
    MDB_val k, v;
    if (!seek(cursor.get(), from, k, v)) return;
    while (to.empty() || to_view(k) < to) {
      check(mdb_cursor_del(cursor.get(), 0), "cursor_del");
      // After a delete, MDB_NEXT yields the row that followed the deleted one.
      if (!next(cursor.get(), k, v)) return;
    }
  }

 private:
  MDB_dbi dbi(table t) const { return dbis_[static_cast<std::size_t>(t)]; }
  MDB_txn* txn_;
  const dbi_set& dbis_;
};

class lmdb_engine final : public kv_engine {
 public:
  std::uint64_t disk_bytes() const override {
    MDB_envinfo info{};
    MDB_stat stat{};
    if (mdb_env_info(env_, &info) != 0 || mdb_env_stat(env_, &stat) != 0) return 0;
    return (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * stat.ms_psize;
  }

  ~lmdb_engine() override {
    if (env_ != nullptr) mdb_env_close(env_);
    if (in_use_ >= 0) ::close(in_use_);  // Its shared lock goes with it.
  }

  expected<void> open(const lmdb_options& options) {
    std::error_code failed;
    std::filesystem::create_directories(options.directory, failed);
    if (failed) {
      return error{errc::io, fmt::format("cannot create directory '{}': {}", options.directory,
                                         failed.message())};
    }
    // Held (shared: nodes of a cluster on one machine may share a directory) while
    // the environment is open, so that `dtsctl compact` knows not to touch it.
    auto locked = lock_directory(options.directory, LOCK_SH);
    if (!locked) return locked.error();
    in_use_ = *locked;
    map_size_bytes_ = options.map_size_bytes;
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (options.mode == durability::nosync) flags |= MDB_NOSYNC;
    try {
      check(mdb_env_create(&env_), "env_create");
      check(mdb_env_set_maxdbs(env_, table_count), "env_set_maxdbs");
      check(mdb_env_set_mapsize(env_, map_size_bytes_), "env_set_mapsize");
      check(mdb_env_open(env_, options.directory.c_str(), flags, 0644), "env_open");
      MDB_txn* txn = nullptr;
      check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
      for (std::size_t i = 0; i < table_count; ++i) {
        int rc = mdb_dbi_open(txn, table_name(static_cast<table>(i)), MDB_CREATE, &dbis_[i]);
        if (rc != MDB_SUCCESS) {
          mdb_txn_abort(txn);
          check(rc, "dbi_open");
        }
      }
      check(mdb_txn_commit(txn), "txn_commit");
    } catch (const lmdb_failure& failure) {
      return error{errc::io, fmt::format("cannot open LMDB environment '{}': {} failed: {}",
                                         options.directory, failure.operation,
                                         mdb_strerror(failure.code))};
    }
    return {};
  }

  expected<void> write(const std::function<void(kv_writer&)>& body) override {
    for (int attempt = 0; attempt <= map_grow_count_max; ++attempt) {
      std::shared_lock resize_guard(resize_mutex_);
      MDB_txn* txn = nullptr;
      try {
        check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
        lmdb_txn_access access(txn, dbis_);
        body(access);
        MDB_txn* committing = txn;
        txn = nullptr;  // mdb_txn_commit frees the transaction even when it fails.
        check(mdb_txn_commit(committing), "txn_commit");
        return {};
      } catch (const lmdb_failure& failure) {
        if (txn != nullptr) mdb_txn_abort(txn);
        if (failure.code != MDB_MAP_FULL) {
          // A full disk or an I/O error leaves the environment as it was before the
          // transaction, and may clear up: errc::io (the commit pool retries). Any
          // other failure (LMDB's fatal states, a transaction too large, a bad
          // value) fails the same way again: errc::corrupt (dtsd stops).
          const bool may_clear = failure.code == ENOSPC || failure.code == EDQUOT || failure.code == EIO;
          return error{may_clear ? errc::io : errc::corrupt,
                       fmt::format("LMDB {} failed: {}", failure.operation, mdb_strerror(failure.code))};
        }
      } catch (...) {
        if (txn != nullptr) mdb_txn_abort(txn);
        throw;
      }
      resize_guard.unlock();
      if (auto grown = grow_map(); !grown) return grown;
    }
    return error{errc::corrupt, "LMDB map is full and could not be grown further"};
  }

  expected<void> read(const std::function<void(kv_reader&)>& body) override {
    std::shared_lock resize_guard(resize_mutex_);
    MDB_txn* txn = nullptr;
    try {
      check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "txn_begin");
      lmdb_txn_access access(txn, dbis_);
      body(access);
      mdb_txn_abort(txn);
      return {};
    } catch (const lmdb_failure& failure) {
      if (txn != nullptr) mdb_txn_abort(txn);
      return error{errc::io, fmt::format("LMDB {} failed: {}", failure.operation,
                                         mdb_strerror(failure.code))};
    } catch (...) {
      if (txn != nullptr) mdb_txn_abort(txn);
      throw;
    }
  }

 private:
  /// mdb_env_set_mapsize needs no transaction active in this process.
  /// A failure may leave the environment without a map: errc::corrupt (dtsd stops).
  expected<void> grow_map() {
    std::unique_lock exclusive(resize_mutex_);
    const auto grown = map_size_bytes_ * 2;
    int rc = mdb_env_set_mapsize(env_, grown);
    if (rc != MDB_SUCCESS) {
      return error{errc::corrupt, fmt::format("cannot grow LMDB map to {} bytes: {}", grown, mdb_strerror(rc))};
    }
    map_size_bytes_ = grown;
    return {};
  }

  MDB_env* env_ = nullptr;
  int in_use_ = -1;  ///< The directory's dtsd.lock, locked shared.
  dbi_set dbis_{};
  std::uint64_t map_size_bytes_ = 0;
  std::shared_mutex resize_mutex_;
};

}  // namespace

expected<int> lock_directory(const std::string& directory, int how) {
  const auto path = directory + "/dtsd.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return error{errc::io, fmt::format("cannot open '{}': {}", path, std::strerror(errno))};
  if (::flock(fd, how | LOCK_NB) != 0) {
    const int why = errno;
    ::close(fd);
    if (why == EWOULDBLOCK) {
      return error{errc::failed_precondition,
                   how == LOCK_EX ? fmt::format("'{}' is open in a running dtsd: stop it first", directory)
                                  : fmt::format("'{}' is being compacted (dtsctl compact): start dtsd once it is done",
                                                directory)};
    }
    return error{errc::io, fmt::format("cannot lock '{}': {}", path, std::strerror(why))};
  }
  return fd;
}

expected<compacted> compact_lmdb(const std::string& directory) {
  auto locked = lock_directory(directory, LOCK_EX);
  if (!locked) return locked.error();
  struct closer {
    int fd;
    MDB_env* env = nullptr;
    ~closer() {
      if (env != nullptr) mdb_env_close(env);
      ::close(fd);
    }
  } held{*locked};
  namespace fs = std::filesystem;
  const auto data = fs::path(directory) / "data.mdb";
  const auto copy_dir = fs::path(directory) / "compacting";
  std::error_code failed;
  compacted sizes;
  sizes.bytes_before = fs::file_size(data, failed);
  if (failed) return error{errc::io, fmt::format("cannot read '{}': {}", data.string(), failed.message())};
  fs::remove_all(copy_dir, failed);
  fs::create_directories(copy_dir, failed);
  if (failed) return error{errc::io, fmt::format("cannot create '{}': {}", copy_dir.string(), failed.message())};
  const auto copy = copy_dir / "data.mdb";
  const int out = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) return error{errc::io, fmt::format("cannot create '{}': {}", copy.string(), std::strerror(errno))};
  try {
    check(mdb_env_create(&held.env), "env_create");
    check(mdb_env_set_maxdbs(held.env, table_count), "env_set_maxdbs");
    check(mdb_env_set_mapsize(held.env, std::max<std::uint64_t>(sizes.bytes_before, std::uint64_t{1} << 30)),
          "env_set_mapsize");
    check(mdb_env_open(held.env, directory.c_str(), MDB_NOTLS | MDB_RDONLY, 0644), "env_open");
    // A consistent copy of the last commit without its free pages.
    check(mdb_env_copyfd2(held.env, out, MDB_CP_COMPACT), "env_copyfd2");
  } catch (const lmdb_failure& failure) {
    ::close(out);
    fs::remove_all(copy_dir, failed);
    return error{errc::io, fmt::format("cannot compact '{}': {} failed: {}", directory, failure.operation,
                                       mdb_strerror(failure.code))};
  }
  // On disk before it takes the old file's place: a crash then leaves one or the other, whole.
  const bool synced = ::fsync(out) == 0;
  const int sync_errno = errno;
  ::close(out);
  if (!synced) {
    fs::remove_all(copy_dir, failed);
    return error{errc::io, fmt::format("cannot sync '{}': {}", copy.string(), std::strerror(sync_errno))};
  }
  mdb_env_close(held.env);
  held.env = nullptr;
  // The copy replaces the file in one rename; a crash before it leaves the old one.
  fs::rename(copy, data, failed);
  if (failed) return error{errc::io, fmt::format("cannot replace '{}': {}", data.string(), failed.message())};
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool renamed_durably = dir >= 0 && ::fsync(dir) == 0;
  if (dir >= 0) ::close(dir);
  if (!renamed_durably) {
    return error{errc::io, fmt::format("cannot sync the directory '{}' after replacing its data file: {}", directory,
                                       std::strerror(errno))};
  }
  fs::remove_all(copy_dir, failed);
  sizes.bytes_after = fs::file_size(data, failed);
  return sizes;
}

expected<std::vector<std::string>> partition_directories(const std::string& data_dir, const std::string& only_hub) {
  namespace fs = std::filesystem;
  std::vector<std::string> found;
  std::error_code failed;
  for (const auto& hub : fs::directory_iterator(data_dir, failed)) {
    if (!hub.is_directory() || (!only_hub.empty() && hub.path().filename() != only_hub)) continue;
    for (const auto& partition : fs::directory_iterator(hub.path(), failed)) {
      if (fs::exists(partition.path() / "data.mdb")) found.push_back(partition.path().string());
    }
  }
  if (failed) return error{errc::io, fmt::format("cannot read '{}': {}", data_dir, failed.message())};
  std::sort(found.begin(), found.end());
  return found;
}

expected<std::unique_ptr<kv_engine>> open_lmdb(const lmdb_options& options) {
  auto engine = std::make_unique<lmdb_engine>();
  if (auto opened = engine->open(options); !opened) return opened.error();
  return std::unique_ptr<kv_engine>(std::move(engine));
}

}  // namespace dtsd::store
