#pragma once
/// Key encoding for the partition tables. Integers are big-endian so byte order is
/// numeric order and ranges scan in order; signed times have the sign bit flipped.
/// Instance ids are printable ASCII, so a 0x00 byte ends an id inside a key and
/// `id + 0x01` bounds the rows of one id. This is on-disk format.

#include <cstdint>
#include <string>
#include <string_view>

namespace dtsd::store::keys {

inline void put_u32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}
inline void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}
inline void put_time(std::string& out, std::int64_t ns) {
  put_u64(out, static_cast<std::uint64_t>(ns) ^ (std::uint64_t{1} << 63));
}
inline std::uint64_t get_u64(std::string_view bytes, std::size_t offset = 0) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  }
  return value;
}
inline std::uint32_t get_u32(std::string_view bytes, std::size_t offset = 0) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  }
  return value;
}
inline std::int64_t get_time(std::string_view bytes, std::size_t offset = 0) {
  return static_cast<std::int64_t>(get_u64(bytes, offset) ^ (std::uint64_t{1} << 63));
}

inline std::string u64(std::uint64_t value) {
  std::string key;
  put_u64(key, value);
  return key;
}
inline std::string u32(std::uint32_t value) {
  std::string key;
  put_u32(key, value);
  return key;
}

/// All rows of one instance in a table keyed `id 0x00 ...` lie in [begin, end).
inline std::string rows_begin(std::string_view id) {
  std::string key(id);
  key.push_back('\0');
  return key;
}
inline std::string rows_end(std::string_view id) {
  std::string key(id);
  key.push_back('\1');
  return key;
}
/// The instance id in front of the 0x00 of a per-instance key.
inline std::string_view owner(std::string_view key) { return key.substr(0, key.find('\0')); }

/// History chunks are keyed by segment sequence first, so the chunks one commit
/// writes are neighbours on disk.
inline std::string history_segment(std::uint64_t segment, std::string_view id) {
  auto key = u64(segment);
  key.append(id);
  return key;
}
inline std::string inbox(std::string_view id, std::uint64_t sequence) {
  auto key = rows_begin(id);
  put_u64(key, sequence);
  return key;
}
inline std::string activity(std::string_view id, std::string_view execution_id,
                            std::int32_t task_id) {
  auto key = rows_begin(id);
  key.append(execution_id);
  key.push_back('\0');
  put_u32(key, static_cast<std::uint32_t>(task_id));
  return key;
}
inline std::string timer(std::int64_t fire_at_ns, std::string_view id,
                         std::string_view execution_id, std::int32_t timer_id) {
  std::string key;
  put_time(key, fire_at_ns);
  key.append(id);
  key.push_back('\0');
  key.append(execution_id);
  key.push_back('\0');
  put_u32(key, static_cast<std::uint32_t>(timer_id));
  return key;
}
inline std::string by_created(std::int64_t created_at_ns, std::string_view id) {
  std::string key;
  put_time(key, created_at_ns);
  key.append(id);
  return key;
}
inline std::string by_status(std::uint8_t status, std::int64_t created_at_ns,
                             std::string_view id) {
  std::string key(1, static_cast<char>(status));
  key.append(by_created(created_at_ns, id));
  return key;
}

}  // namespace dtsd::store::keys
