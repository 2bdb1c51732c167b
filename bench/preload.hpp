#pragma once
// Writing instances straight into the partition stores of a data directory, as a
// busy hub would have them, without running them: for benches that need a hub of
// a million instances (big_hub's lists, retention's purging).

#include <cstdio>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/ids.hpp"
#include "store/partition_store.hpp"

namespace dtsd::bench {

/// Writes `count` instances, record_of(0..count-1), into fresh stores of `hub` in
/// `data_dir` (which is emptied first), partition by partition, in batches, with
/// progress on stderr. Throws std::runtime_error when a store cannot be written.
inline void preload_stores(const std::string& data_dir, const std::string& hub, std::uint32_t partitions,
                           std::size_t count, const std::function<core::instance_record(std::size_t)>& record_of,
                           const char* label) {
  constexpr std::size_t batch_instances = 5000;
  std::filesystem::remove_all(data_dir);
  std::vector<std::vector<core::instance_record>> owned(partitions);
  for (std::size_t i = 0; i < count; ++i) {
    auto record = record_of(i);
    owned[core::partition_of(record.instance_id, partitions)].push_back(std::move(record));
  }
  std::size_t written = 0;
  for (std::uint32_t p = 0; p < partitions; ++p) {
    store::partition_identity identity{hub, p, partitions};
    auto engine = store::open_lmdb({store::partition_directory(data_dir, identity), store::durability::nosync});
    if (!engine) throw std::runtime_error(engine.error().message);
    auto opened = store::partition_store::open(std::move(*engine), identity);
    if (!opened) throw std::runtime_error(opened.error().message);
    auto& target = **opened;
    for (std::size_t from = 0; from < owned[p].size(); from += batch_instances) {
      store::write_batch batch;
      for (std::size_t k = from; k < std::min(owned[p].size(), from + batch_instances); ++k) {
        store::instance_write write;
        write.row.record = std::move(owned[p][k]);
        write.instance_id = write.row.record.instance_id;
        batch.instances.push_back(std::move(write));
      }
      written += batch.instances.size();
      auto committed = target.commit(batch, batch.instances.front().row.record.created_at_ns);
      if (!committed) throw std::runtime_error(committed.error().message);
    }
    owned[p] = {};
    std::fprintf(stderr, "%s: %zu of %zu instances written\n", label, written, count);
  }
}

}  // namespace dtsd::bench
