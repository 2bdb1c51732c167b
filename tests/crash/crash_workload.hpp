#pragma once
// The workload shared by the crash child (which writes it) and the crash test
// (which checks it): batch n is log record n and holds everything below.

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "store/partition_store.hpp"

namespace crash_workload {

inline const dtsd::store::partition_identity identity{"crash", 0, 1};

inline int instances_in(std::uint64_t batch) { return 1 + static_cast<int>(batch % 7); }
inline std::string instance_id(std::uint64_t batch, int index) {
  return fmt::format("b{}-i{}", batch, index);
}
/// Every tenth batch carries large inputs so commits span many pages.
inline std::size_t input_bytes(std::uint64_t batch) { return batch % 10 == 0 ? 200'000 : 100; }
inline std::string input_of(std::uint64_t batch) {
  return std::string(input_bytes(batch), static_cast<char>('a' + batch % 26));
}
inline std::string log_text(std::uint64_t batch) { return fmt::format("batch {}", batch); }

}  // namespace crash_workload
