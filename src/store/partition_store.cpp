#include "store/partition_store.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "core/ids.hpp"
#include "store/keys.hpp"

namespace dtsd::store {
namespace {

constexpr std::string_view format_version = "dtsd-partition-1";
constexpr std::string_view meta_identity = "identity";
constexpr std::string_view meta_outbox_next = "outbox_next";
constexpr std::string_view meta_status_counts = "status_counts";
/// The epoch of the partition's owner in a cluster (absent on a single node).
constexpr std::string_view meta_epoch = "owner_epoch";
/// The hub's retention policy (JSON, core/retention.hpp), if it has one of its own.
constexpr std::string_view meta_retention = "retention";
/// The schedules this partition keeps: "schedule/" + id -> JSON (core/schedule.hpp).
constexpr std::string_view meta_schedule = "schedule/";
constexpr std::string_view meta_schedule_end = "schedule0";  // '/' + 1

/// Changes of the status counts one commit makes.
using count_deltas = std::array<std::int64_t, core::runtime_status_count>;

std::string encode_counts(const status_counts& counts) {
  std::string bytes;
  for (auto count : counts) bytes += keys::u64(count);
  return bytes;
}

std::optional<status_counts> decode_counts(std::string_view bytes) {
  if (bytes.size() != 8 * core::runtime_status_count) return std::nullopt;
  status_counts counts{};
  for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = keys::get_u64(bytes.substr(8 * i, 8));
  return counts;
}

/// Counts every orchestration of the by_status index (a store written before counts were kept).
status_counts count_by_status(kv_reader& reader) {
  status_counts counts{};
  reader.scan(table::by_status, {}, {}, [&](std::string_view key, std::string_view) {
    // status (1 byte), created time (8), id: entities ("@name@key") are not counted.
    const auto status = static_cast<std::uint8_t>(key[0]);
    if (key.size() > 9 && key[9] != '@' && status < counts.size()) ++counts[status];
    return true;
  });
  return counts;
}
constexpr std::size_t consistency_problems_max = 20;
/// More chunks than this and the instance's history is merged into one chunk, so a
/// history read costs at most this many lookups. Merging costs O(history) once per
/// this many commits of the instance.
constexpr std::size_t history_segment_count_max = 32;

/// Carries an error out of an engine callback; caught at the store's boundary.
struct store_failure {
  dtsd::error failure;
};

template <class T>
T unwrap(expected<T> value) {
  if (!value) throw store_failure{value.error()};
  return std::move(value).value();
}

/// Runs `body` on a snapshot and turns a store_failure into an error.
template <class T, class Body>
expected<T> read_with(kv_engine& engine, Body body) {
  std::optional<T> result;
  try {
    auto done = engine.read([&](kv_reader& reader) { result.emplace(body(reader)); });
    if (!done) return done.error();
  } catch (const store_failure& failed) {
    return failed.failure;
  }
  return std::move(*result);
}

std::string identity_value(const partition_identity& identity) {
  return fmt::format("{} hub={} partition={} count={}", format_version, identity.task_hub,
                     identity.partition_index, identity.partition_count);
}

std::optional<stored_instance> read_instance(kv_reader& reader, std::string_view id) {
  auto bytes = reader.get(table::instances, id);
  if (!bytes) return std::nullopt;
  return unwrap(decode_stored_instance(*bytes));
}

struct index_fields {
  core::runtime_status status;
  std::int64_t created_at_ns;
};

void put_indexes(kv_writer& writer, std::string_view id, index_fields fields) {
  writer.put(table::by_status,
             keys::by_status(static_cast<std::uint8_t>(fields.status), fields.created_at_ns, id),
             {});
  writer.put(table::by_created, keys::by_created(fields.created_at_ns, id), {});
}

void erase_indexes(kv_writer& writer, std::string_view id, index_fields fields) {
  writer.erase(table::by_status,
               keys::by_status(static_cast<std::uint8_t>(fields.status), fields.created_at_ns, id));
  writer.erase(table::by_created, keys::by_created(fields.created_at_ns, id));
}

/// The stored bytes of one history chunk of an instance; a missing one is corrupt.
std::string_view segment_bytes(kv_reader& reader, std::string_view id, std::uint64_t segment) {
  auto bytes = reader.get(table::history, keys::history_segment(segment, id));
  if (!bytes) {
    throw store_failure{
        error{errc::corrupt, fmt::format("instance '{}' lost history segment {}", id, segment)}};
  }
  return *bytes;
}

std::vector<core::history_event> read_history(kv_reader& reader, std::string_view id,
                                              const std::vector<std::uint64_t>& segments) {
  std::vector<core::history_event> events;
  for (auto segment : segments) {
    auto chunk = unwrap(decode_history_chunk(segment_bytes(reader, id, segment)));
    if (chunk.first_index != events.size()) {
      throw store_failure{error{
          errc::corrupt, fmt::format("instance '{}' history segment {} starts at event {}, "
                                     "expected {}",
                                     id, segment, chunk.first_index, events.size())}};
    }
    std::move(chunk.events.begin(), chunk.events.end(), std::back_inserter(events));
  }
  return events;
}

void erase_history(kv_writer& writer, std::string_view id,
                   const std::vector<std::uint64_t>& segments) {
  for (auto segment : segments) writer.erase(table::history, keys::history_segment(segment, id));
}

/// Appends the new history rows as one chunk at `segment`, merging all chunks into
/// one when there are too many. Returns the instance's segment list.
std::vector<std::uint64_t> append_history(kv_writer& writer, const instance_write& change,
                                          std::vector<std::uint64_t> segments,
                                          std::uint64_t segment) {
  const auto& id = change.instance_id;
  if (change.history_rows.empty()) return segments;
  history_chunk chunk{change.history_first_index, change.history_rows};
  if (segments.size() < history_segment_count_max) {
    writer.put(table::history, keys::history_segment(segment, id), encode(chunk));
    segments.push_back(segment);
    return segments;
  }
  // Merging copies the stored events as they are; the views stay valid because
  // nothing is written until the merged chunk exists.
  std::vector<std::string_view> stored;
  for (auto old_segment : segments) stored.push_back(segment_bytes(writer, id, old_segment));
  auto merged = unwrap(merge_history_chunks(stored, chunk));
  erase_history(writer, id, segments);
  writer.put(table::history, keys::history_segment(segment, id), merged);
  return {segment};
}

void write_instance(kv_writer& writer, const instance_write& change, std::uint64_t segment, count_deltas& counted,
                    std::vector<catalog_change>& listed, lifecycle_counts& happened) {
  const auto& id = change.instance_id;
  const bool orchestration = !core::is_entity_id(id);
  auto count = [&](core::runtime_status status, int by) {
    if (orchestration) counted[static_cast<std::size_t>(status)] += by;
  };
  std::optional<stored_instance_header> previous;
  if (auto bytes = writer.get(table::instances, id)) {
    previous = unwrap(decode_stored_instance_header(*bytes));
  }
  std::vector<std::uint64_t> segments;
  if (previous) segments = previous->history_segments;
  if (change.purged || change.reset) {
    erase_history(writer, id, segments);
    segments.clear();
    writer.erase_range(table::inbox, keys::rows_begin(id), keys::rows_end(id));
  }
  if (change.purged) {
    if (previous) erase_indexes(writer, id, {previous->status, previous->created_at_ns});
    if (previous) count(previous->status, -1);
    if (previous) listed.push_back({id, previous->created_at_ns, std::nullopt});
    writer.erase(table::instances, id);
    return;
  }
  segments = append_history(writer, change, std::move(segments), segment);

  // Rows the instance consumed lie below its first inbox sequence.
  if (previous && previous->inbox_first_sequence < change.row.inbox_first_sequence) {
    writer.erase_range(table::inbox, keys::inbox(id, previous->inbox_first_sequence),
                       keys::inbox(id, change.row.inbox_first_sequence));
  }
  for (std::size_t i = 0; i < change.inbox_rows.size(); ++i) {
    writer.put(table::inbox, keys::inbox(id, change.inbox_rows_first_sequence + i),
               encode(change.inbox_rows[i]));
  }
  const index_fields current{change.row.record.status, change.row.record.created_at_ns};
  if (orchestration) {
    const bool was_running = previous && !core::is_terminal(previous->status);
    if (!was_running && !core::is_terminal(current.status)) ++happened.started;
    if (was_running || !previous) {
      if (core::is_terminal(current.status)) ++happened.ended[static_cast<std::size_t>(current.status)];
    }
  }
  bool same_index = previous && previous->status == current.status &&
                    previous->created_at_ns == current.created_at_ns;
  if (!same_index) {
    if (previous) erase_indexes(writer, id, {previous->status, previous->created_at_ns});
    put_indexes(writer, id, current);
    if (previous) count(previous->status, -1);
    count(current.status, +1);
  }
  listed.push_back({id, previous ? std::optional(previous->created_at_ns) : std::nullopt,
                    catalog_entry_of(change.row.record)});
  auto row = change.row;
  row.history_segments = std::move(segments);
  writer.put(table::instances, id, encode(row));
}

// ---------------------------------------------------------------------------
// Queries

struct query_position {
  std::int64_t created_at_ns = std::numeric_limits<std::int64_t>::min();
  std::string instance_id;
  friend auto operator<=>(const query_position&, const query_position&) = default;
};

std::string token_of(const query_position& position) {
  return fmt::format("{}.{}", position.created_at_ns, position.instance_id);
}

expected<std::optional<query_position>> parse_token(std::string_view token) {
  if (token.empty()) return std::optional<query_position>();
  auto bad = [&] {
    return error{errc::invalid_argument,
                 fmt::format("continuation token '{}' is not one this server issued", token)};
  };
  auto dot = token.find('.');
  if (dot == std::string_view::npos) return bad();
  query_position position;
  auto parsed = std::from_chars(token.data(), token.data() + dot, position.created_at_ns);
  if (parsed.ec != std::errc() || parsed.ptr != token.data() + dot) return bad();
  position.instance_id = std::string(token.substr(dot + 1));
  if (!core::validate_instance_id(position.instance_id)) return bad();
  return std::optional<query_position>(std::move(position));
}

bool matches(const core::instance_record& record, const core::instance_query& query) {
  if (core::is_entity_id(record.instance_id) != query.entities) return false;
  if (!record.name.starts_with(query.name_prefix)) return false;
  if (query.version && record.version.value_or(std::string()) != *query.version) return false;
  if (!record.instance_id.starts_with(query.instance_id_prefix)) return false;
  for (const auto& [key, value] : query.tags) {
    auto found = record.tags.find(key);
    if (found == record.tags.end() || found->second != value) return false;
  }
  return true;
}

struct stream_result {
  std::vector<std::pair<query_position, core::instance_record>> hits;
  bool exhausted = true;
  query_position last_scanned;
};

/// Scans one index (by_created, or by_status for one status) from `after`.
stream_result scan_index(kv_reader& reader, std::optional<std::uint8_t> status,
                         const core::instance_query& query, const std::optional<query_position>& after,
                         std::size_t scan_budget) {
  std::string prefix = status ? std::string(1, static_cast<char>(*status)) : std::string();
  const table index = status ? table::by_status : table::by_created;
  std::string from = prefix + keys::by_created(query.created_from_ns.value_or(
                                                   std::numeric_limits<std::int64_t>::min()),
                                               "");
  if (after) {
    // The smallest key after the token's own key.
    auto resume = prefix + keys::by_created(after->created_at_ns, after->instance_id);
    resume.push_back('\0');
    from = std::max(from, resume);
  }
  std::string to;
  if (query.created_to_ns && *query.created_to_ns < std::numeric_limits<std::int64_t>::max()) {
    to = prefix + keys::by_created(*query.created_to_ns + 1, "");
  } else if (status) {
    to = std::string(1, static_cast<char>(*status + 1));
  }

  stream_result result;
  std::size_t scanned = 0;
  reader.scan(index, from, to, [&](std::string_view key, std::string_view) {
    auto rest = key.substr(prefix.size());
    query_position position{keys::get_time(rest), std::string(rest.substr(8))};
    result.last_scanned = position;
    ++scanned;
    auto row = read_instance(reader, position.instance_id);
    if (row && matches(row->record, query)) {
      result.hits.emplace_back(std::move(position), std::move(row->record));
    }
    if (result.hits.size() >= query.page_size || scanned >= scan_budget) {
      result.exhausted = false;
      return false;
    }
    return true;
  });
  return result;
}

core::query_page run_query(kv_reader& reader, const core::instance_query& query,
                     const std::optional<query_position>& after) {
  std::vector<std::optional<std::uint8_t>> streams;
  if (query.statuses.empty()) {
    streams.push_back(std::nullopt);
  } else {
    std::set<std::uint8_t> unique;
    for (auto status : query.statuses) unique.insert(static_cast<std::uint8_t>(status));
    streams.assign(unique.begin(), unique.end());
  }
  const std::size_t budget = std::max<std::size_t>(1, query.scan_count_max / streams.size());

  std::vector<std::pair<query_position, core::instance_record>> hits;
  std::optional<query_position> horizon;  // Nothing past it has been looked at in every stream.
  for (const auto& status : streams) {
    auto stream = scan_index(reader, status, query, after, budget);
    if (!stream.exhausted && (!horizon || stream.last_scanned < *horizon)) {
      horizon = stream.last_scanned;
    }
    std::move(stream.hits.begin(), stream.hits.end(), std::back_inserter(hits));
  }
  std::sort(hits.begin(), hits.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  core::query_page page;
  std::optional<query_position> last;
  for (auto& [position, record] : hits) {
    if (page.instances.size() == query.page_size) break;
    if (horizon && *horizon < position) break;
    if (!query.fetch_payloads) {
      record.input.reset();
      record.output.reset();
      record.custom_status.reset();
      record.entity_state.reset();
    }
    page.instances.push_back(std::move(record));
    last = position;
  }
  if (page.instances.size() == query.page_size && (horizon || hits.size() > query.page_size)) {
    page.continuation_token = token_of(*last);
  } else if (horizon) {
    page.continuation_token = token_of(page.instances.size() == query.page_size ? *last : *horizon);
  }
  return page;
}

// ---------------------------------------------------------------------------
// Consistency

class problem_list {
 public:
  void add(std::string problem) {
    ++count_;
    if (problems_.size() < consistency_problems_max) problems_.push_back(std::move(problem));
  }
  expected<void> result() const {
    if (count_ == 0) return {};
    return error{errc::corrupt, fmt::format("{} consistency problem(s): {}", count_,
                                            fmt::join(problems_, "; "))};
  }

 private:
  std::vector<std::string> problems_;
  std::size_t count_ = 0;
};

void check_instances(kv_reader& reader, problem_list& problems, std::set<std::string>& ids) {
  reader.scan(table::instances, {}, {}, [&](std::string_view key, std::string_view value) {
    auto decoded = decode_stored_instance(value);
    if (!decoded) {
      problems.add(fmt::format("instance '{}': {}", key, decoded.error().message));
      return true;
    }
    const auto& row = *decoded;
    const auto& record = row.record;
    ids.emplace(key);
    if (record.instance_id != key) {
      problems.add(fmt::format("instance row '{}' holds id '{}'", key, record.instance_id));
    }
    auto status_key = keys::by_status(static_cast<std::uint8_t>(record.status),
                                      record.created_at_ns, record.instance_id);
    if (!reader.get(table::by_status, status_key)) {
      problems.add(fmt::format("instance '{}' is missing from by_status", key));
    }
    if (!reader.get(table::by_created, keys::by_created(record.created_at_ns, record.instance_id))) {
      problems.add(fmt::format("instance '{}' is missing from by_created", key));
    }
    try {
      auto history = read_history(reader, key, row.history_segments);
      if (history.size() != row.history_count) {
        problems.add(fmt::format("instance '{}' has {} history events, its record says {}", key,
                                 history.size(), row.history_count));
      }
    } catch (const store_failure& failed) {
      problems.add(failed.failure.message);
    }
    std::uint64_t inbox_sequence = row.inbox_first_sequence;
    reader.scan(table::inbox, keys::rows_begin(key), keys::rows_end(key),
                [&](std::string_view row_key, std::string_view) {
                  auto sequence = keys::get_u64(row_key, key.size() + 1);
                  if (sequence != inbox_sequence) {
                    problems.add(fmt::format("instance '{}' inbox row {} where {} was due", key,
                                             sequence, inbox_sequence));
                  }
                  ++inbox_sequence;
                  return true;
                });
    if (inbox_sequence - row.inbox_first_sequence != row.inbox_count) {
      problems.add(fmt::format("instance '{}' has {} inbox rows, its record says {}", key,
                               inbox_sequence - row.inbox_first_sequence, row.inbox_count));
    }
    return true;
  });
}

void check_index(kv_reader& reader, table index, bool has_status_byte,
                 const std::set<std::string>& ids, problem_list& problems) {
  reader.scan(index, {}, {}, [&](std::string_view key, std::string_view) {
    auto rest = key.substr(has_status_byte ? 1 : 0);
    std::string id(rest.substr(8));
    auto row = ids.count(id) ? read_instance(reader, id) : std::nullopt;
    if (!row) {
      problems.add(fmt::format("{} names '{}', which has no instance row", table_name(index), id));
      return true;
    }
    bool agrees = row->record.created_at_ns == keys::get_time(rest) &&
                  (!has_status_byte ||
                   static_cast<std::uint8_t>(row->record.status) ==
                       static_cast<std::uint8_t>(key[0]));
    if (!agrees) {
      problems.add(fmt::format("{} entry of '{}' disagrees with its record", table_name(index), id));
    }
    return true;
  });
}

void check_owned_rows(kv_reader& reader, table t, const std::set<std::string>& ids,
                      problem_list& problems) {
  reader.scan(t, {}, {}, [&](std::string_view key, std::string_view) {
    auto owner = keys::owner(key);
    if (!ids.count(std::string(owner))) {
      problems.add(fmt::format("{} row of '{}', which has no instance row", table_name(t), owner));
    }
    return true;
  });
}

/// Every history chunk belongs to an instance that lists it.
void check_history_chunks(kv_reader& reader, problem_list& problems) {
  reader.scan(table::history, {}, {}, [&](std::string_view key, std::string_view) {
    auto segment = keys::get_u64(key);
    auto id = key.substr(8);
    auto bytes = reader.get(table::instances, id);
    auto header = bytes ? decode_stored_instance_header(*bytes) : error{errc::not_found, ""};
    const auto& listed = header ? header->history_segments : std::vector<std::uint64_t>{};
    if (std::find(listed.begin(), listed.end(), segment) == listed.end()) {
      problems.add(fmt::format("history segment {} of '{}' belongs to no instance row", segment, id));
    }
    return true;
  });
}

/// The summaries kept for lists are what the records say, row for row.
void check_catalog(kv_reader& reader, const instance_catalog& kept, problem_list& problems) {
  std::vector<catalog_entry> listed;
  reader.scan(table::instances, {}, {}, [&](std::string_view, std::string_view value) {
    if (auto row = decode_stored_instance(value)) listed.push_back(catalog_entry_of(row->record));
    return true;
  });
  instance_catalog rebuilt;
  rebuilt.load(std::move(listed));
  if (kept.size() != rebuilt.size()) {
    problems.add(fmt::format("the list catalog holds {} instances, the store {}", kept.size(), rebuilt.size()));
    return;
  }
  for (bool entities : {false, true}) {
    core::list_query all;
    all.entities = entities;
    all.rows = std::clamp<std::size_t>(rebuilt.size(), 1, core::list_rows_max);
    auto a = kept.list(all), b = rebuilt.list(all);
    if (a.rows != b.rows || a.total != b.total || a.by_status != b.by_status) {
      problems.add(fmt::format("the list catalog's {} disagree with their records", entities ? "entities" : "orchestrations"));
    }
  }
}

void check_log(kv_reader& reader, problem_list& problems) {
  std::optional<std::uint64_t> expected_sequence;
  reader.scan(table::log, {}, {}, [&](std::string_view key, std::string_view value) {
    auto sequence = keys::get_u64(key);
    if (expected_sequence && sequence != *expected_sequence) {
      problems.add(fmt::format("log record {} follows {}", sequence, *expected_sequence - 1));
    }
    auto record = decode_log_record(value);
    if (!record) {
      problems.add(fmt::format("log record {}: {}", sequence, record.error().message));
    } else if (record->sequence != sequence) {
      problems.add(fmt::format("log key {} holds record {}", sequence, record->sequence));
    }
    expected_sequence = sequence + 1;
    return true;
  });
}

}  // namespace

std::string partition_directory(std::string_view data_dir, const partition_identity& identity) {
  return fmt::format("{}/{}/p{}", data_dir, identity.task_hub, identity.partition_index);
}

bool write_batch::empty() const {
  return events.empty() && instances.empty() && activities_added.empty() &&
         activities_removed.empty() && timers_added.empty() && timers_removed.empty() &&
         outbox_added.empty() && outbox_removed.empty() && dedup_marks.empty() && !retention &&
         schedules.empty();
}

instance_write make_instance_write(std::string_view instance_id,
                                   const core::orchestration_state* state,
                                   const core::instance_change& change) {
  instance_write out;
  out.instance_id = std::string(instance_id);
  if (change.purged || state == nullptr) {
    out.purged = true;
    return out;
  }
  out.row = stored_instance{state->record, static_cast<std::uint32_t>(state->history.size()),
                            state->inbox_first_sequence,
                            static_cast<std::uint32_t>(state->inbox.size()), {}};
  out.reset = change.history_reset;
  const auto history_new = std::min(change.history_appended, state->history.size());
  out.history_first_index = static_cast<std::uint32_t>(state->history.size() - history_new);
  out.history_rows.assign(state->history.end() - static_cast<long>(history_new),
                          state->history.end());
  const auto inbox_new =
      change.history_reset ? state->inbox.size() : std::min(change.inbox_appended, state->inbox.size());
  out.inbox_rows_first_sequence = state->inbox_first_sequence + (state->inbox.size() - inbox_new);
  out.inbox_rows.assign(state->inbox.end() - static_cast<long>(inbox_new), state->inbox.end());
  return out;
}

expected<std::unique_ptr<partition_store>> partition_store::open(
    std::unique_ptr<kv_engine> engine, const partition_identity& identity) {
  if (auto valid = core::validate_task_hub_name(identity.task_hub); !valid) return valid.error();
  if (identity.partition_count == 0 || identity.partition_count > core::partition_count_max ||
      identity.partition_index >= identity.partition_count) {
    return error{errc::invalid_argument,
                 fmt::format("partition {} of {} is not a valid partition (count must be 1..{})",
                             identity.partition_index, identity.partition_count,
                             core::partition_count_max)};
  }
  std::unique_ptr<partition_store> store(new partition_store(std::move(engine), identity));
  if (auto ready = store->initialize(); !ready) return ready.error();
  return store;
}

expected<void> partition_store::initialize() {
  const auto wanted = identity_value(identity_);
  std::optional<std::string> found;
  try {
    auto written = engine_->write([&](kv_writer& writer) {
      auto existing = writer.get(table::meta, meta_identity);
      if (existing) {
        found = std::string(*existing);
      } else {
        writer.put(table::meta, meta_identity, wanted);
      }
      auto last = writer.last_key(table::log);
      next_log_sequence_ = last ? keys::get_u64(*last) + 1 : 1;
      auto last_segment = writer.last_key(table::history);
      next_segment_sequence_ = last_segment ? keys::get_u64(*last_segment) + 1 : 1;
      if (auto epoch = writer.get(table::meta, meta_epoch); epoch && epoch->size() == 8) {
        epoch_ = static_cast<std::int64_t>(keys::get_u64(*epoch));  // Last owned in a cluster: checked from now on.
      }
      auto stored = writer.get(table::meta, meta_status_counts);
      auto decoded = stored ? decode_counts(*stored) : std::nullopt;
      if (decoded) {
        counts_ = *decoded;
      } else {
        counts_ = count_by_status(writer);
        counts_unwritten_ = true;
      }
    });
    if (!written) return written;
  } catch (const store_failure& failed) {
    return failed.failure;
  }
  if (found && *found != wanted) {
    return error{errc::invalid_argument,
                 fmt::format("this data directory holds '{}', not '{}'", *found, wanted)};
  }
  return load_catalog();
}

expected<void> partition_store::load_catalog() {
  std::vector<catalog_entry> listed;
  auto read = read_with<bool>(*engine_, [&](kv_reader& reader) {
    reader.scan(table::instances, {}, {}, [&](std::string_view, std::string_view value) {
      listed.push_back(catalog_entry_of(unwrap(decode_stored_instance(value)).record));
      return true;
    });
    return true;
  });
  if (!read) return read.error();
  catalog_.load(std::move(listed));
  return {};
}

expected<commit_info> partition_store::commit(const write_batch& batch, std::int64_t now_ns) {
  std::set<std::string_view> written;
  for (const auto& change : batch.instances) {
    if (!written.insert(change.instance_id).second) {
      return error{errc::invalid_argument,
                   fmt::format("a write batch holds instance '{}' twice; merge its changes first",
                               change.instance_id)};
    }
  }
  const auto segment = next_segment_sequence_;
  status_counts counts = counts_;  ///< As they will be once this commits.
  std::vector<catalog_change> listed;  ///< Listed once this commits.
  lifecycle_counts happened;
  std::optional<std::uint64_t> trimmed_to;
  commit_info info;
  std::string log_bytes;
  if (!batch.events.empty()) {
    info.log_sequence = next_log_sequence_;
    log_bytes = encode(log_record{info.log_sequence, now_ns, batch.events});
  }
  try {
    auto written = engine_->write([&](kv_writer& writer) {
      if (epoch_.load() != 0) check_epoch(writer);
      if (info.log_sequence != 0) {
        writer.put(table::log, keys::u64(info.log_sequence), log_bytes);
        if (log_retention_ != 0 && info.log_sequence > log_retention_) {
          const auto floor = info.log_sequence - log_retention_ + 1;
          if (floor > log_trimmed_below_) {
            writer.erase_range(table::log, keys::u64(log_trimmed_below_), keys::u64(floor));
            trimmed_to = floor;
          }
        }
      }
      count_deltas counted{};
      listed.clear();
      happened = {};
      for (const auto& change : batch.instances) write_instance(writer, change, segment, counted, listed, happened);
      bool changed = counts_unwritten_;
      for (std::size_t i = 0; i < counts.size(); ++i) {
        counts[i] = static_cast<std::uint64_t>(static_cast<std::int64_t>(counts_[i]) + counted[i]);
        changed = changed || counted[i] != 0;
      }
      if (changed) writer.put(table::meta, meta_status_counts, encode_counts(counts));
      for (const auto& activity : batch.activities_added) {
        writer.put(table::activities,
                   keys::activity(activity.instance_id, activity.execution_id, activity.task_id),
                   encode(activity));
      }
      for (const auto& key : batch.activities_removed) {
        writer.erase(table::activities,
                     keys::activity(key.instance_id, key.execution_id, key.task_id));
      }
      for (const auto& timer : batch.timers_added) {
        writer.put(table::timers,
                   keys::timer(timer.fire_at_ns, timer.instance_id, timer.execution_id,
                               timer.timer_id),
                   encode(timer));
      }
      for (const auto& timer : batch.timers_removed) {
        writer.erase(table::timers, keys::timer(timer.fire_at_ns, timer.instance_id,
                                                timer.execution_id, timer.timer_id));
      }
      std::uint64_t outbox_next = 0;
      for (const auto& entry : batch.outbox_added) {
        writer.put(table::outbox, keys::u64(entry.sequence), encode(entry));
        outbox_next = std::max(outbox_next, entry.sequence + 1);
      }
      if (outbox_next != 0) writer.put(table::meta, meta_outbox_next, keys::u64(outbox_next));
      for (auto sequence : batch.outbox_removed) writer.erase(table::outbox, keys::u64(sequence));
      for (const auto& [source, sequence] : batch.dedup_marks) {
        writer.put(table::dedup, keys::u32(source), keys::u64(sequence));
      }
      if (batch.retention && batch.retention->empty()) {
        writer.erase(table::meta, meta_retention);
      } else if (batch.retention) {
        writer.put(table::meta, meta_retention, *batch.retention);
      }
      for (const auto& [id, json] : batch.schedules) {
        const auto key = std::string(meta_schedule) + id;
        if (json.empty()) {
          writer.erase(table::meta, key);
        } else {
          writer.put(table::meta, key, json);
        }
      }
    });
    if (!written) return written.error();
  } catch (const store_failure& failed) {
    return failed.failure;
  }
  if (info.log_sequence != 0) ++next_log_sequence_;
  if (trimmed_to) log_trimmed_below_ = *trimmed_to;
  counts_ = counts;
  counts_unwritten_ = false;
  catalog_.apply(std::move(listed));
  lifecycle_.started += happened.started;
  for (std::size_t i = 0; i < happened.ended.size(); ++i) lifecycle_.ended[i] += happened.ended[i];
  ++next_segment_sequence_;
  return info;
}

expected<std::optional<core::instance_record>> partition_store::get_instance(
    std::string_view instance_id) {
  return read_with<std::optional<core::instance_record>>(*engine_, [&](kv_reader& reader) {
    auto row = read_instance(reader, instance_id);
    return row ? std::optional(std::move(row->record)) : std::nullopt;
  });
}

expected<std::optional<core::orchestration_state>> partition_store::load_instance(
    std::string_view instance_id) {
  return read_with<std::optional<core::orchestration_state>>(
      *engine_, [&](kv_reader& reader) -> std::optional<core::orchestration_state> {
        auto row = read_instance(reader, instance_id);
        if (!row) return std::nullopt;
        core::orchestration_state state;
        state.record = std::move(row->record);
        state.inbox_first_sequence = row->inbox_first_sequence;
        state.history = read_history(reader, instance_id, row->history_segments);
        reader.scan(table::inbox, keys::inbox(instance_id, row->inbox_first_sequence),
                    keys::rows_end(instance_id), [&](std::string_view, std::string_view value) {
                      state.inbox.push_back(unwrap(decode_history_event(value)));
                      return true;
                    });
        if (state.history.size() != row->history_count || state.inbox.size() != row->inbox_count) {
          throw store_failure{error{
              errc::corrupt,
              fmt::format("instance '{}' has {} history and {} inbox rows; its record says {} "
                          "and {}",
                          instance_id, state.history.size(), state.inbox.size(),
                          row->history_count, row->inbox_count)}};
        }
        return state;
      });
}

expected<std::vector<core::history_event>> partition_store::history(std::string_view instance_id) {
  auto state = load_instance(instance_id);
  if (!state) return state.error();
  if (!*state) {
    return error{errc::not_found, fmt::format("no instance with id '{}'", instance_id)};
  }
  return std::move((*state)->history);
}

expected<core::query_page> partition_store::query(const core::instance_query& query) {
  if (query.page_size == 0 || query.page_size > core::query_page_size_max) {
    return error{errc::invalid_argument,
                 fmt::format("page size {} is not in 1..{}", query.page_size, core::query_page_size_max)};
  }
  auto after = parse_token(query.continuation_token);
  if (!after) return after.error();
  return read_with<core::query_page>(*engine_,
                               [&](kv_reader& reader) { return run_query(reader, query, *after); });
}

void partition_store::check_epoch(kv_writer& writer) const {
  auto stored = writer.get(table::meta, meta_epoch);
  const auto newest = stored && stored->size() == 8 ? static_cast<std::int64_t>(keys::get_u64(*stored)) : 0;
  if (newest != epoch_.load()) {
    throw store_failure{error{errc::failed_precondition,
                              fmt::format("partition {} of '{}' is owned under epoch {} now, not {}: this node lost "
                                          "it and writes nothing more",
                                          identity_.partition_index, identity_.task_hub, newest, epoch_.load())}};
  }
}

expected<void> partition_store::fence(std::int64_t epoch) {
  if (epoch <= 0) return error{errc::invalid_argument, "an owner epoch is positive"};
  try {
    auto written = engine_->write([&](kv_writer& writer) {
      auto stored = writer.get(table::meta, meta_epoch);
      const auto newest = stored && stored->size() == 8 ? static_cast<std::int64_t>(keys::get_u64(*stored)) : 0;
      if (newest > epoch) {
        throw store_failure{error{errc::failed_precondition,
                                  fmt::format("partition {} of '{}' was taken under epoch {}, newer than {}",
                                              identity_.partition_index, identity_.task_hub, newest, epoch)}};
      }
      // Another owner wrote since this store read its state (at open, or at its own
      // last fence): what it holds in memory (sequences, counts, summaries) is stale.
      if (newest != epoch_.load()) {
        throw store_failure{error{
            errc::failed_precondition,
            fmt::format("partition {} of '{}' was owned under epoch {} since this store was opened: open it again "
                        "to own it",
                        identity_.partition_index, identity_.task_hub, newest)}};
      }
      writer.put(table::meta, meta_epoch, keys::u64(static_cast<std::uint64_t>(epoch)));
    });
    if (!written) return written.error();
  } catch (const store_failure& failed) {
    return failed.failure;
  }
  epoch_ = epoch;
  return {};
}

expected<core::list_page> partition_store::list(const core::list_query& query) const {
  if (auto valid = core::validate(query); !valid) return valid.error();
  return catalog_.list(query);
}

expected<std::vector<core::timer_entry>> partition_store::due_timers(std::int64_t now_ns,
                                                                     std::size_t count_max) {
  return read_with<std::vector<core::timer_entry>>(*engine_, [&](kv_reader& reader) {
    std::vector<core::timer_entry> due;
    std::string to;
    if (now_ns < std::numeric_limits<std::int64_t>::max()) keys::put_time(to, now_ns + 1);
    reader.scan(table::timers, {}, to, [&](std::string_view, std::string_view value) {
      due.push_back(unwrap(decode_timer_entry(value)));
      return due.size() < count_max;
    });
    return due;
  });
}

expected<std::vector<core::activity_request>> partition_store::queued_activities(
    std::size_t count_max) {
  return read_with<std::vector<core::activity_request>>(*engine_, [&](kv_reader& reader) {
    std::vector<core::activity_request> queued;
    reader.scan(table::activities, {}, {}, [&](std::string_view, std::string_view value) {
      queued.push_back(unwrap(decode_activity_request(value)));
      return queued.size() < count_max;
    });
    return queued;
  });
}

expected<std::vector<log_record>> partition_store::read_log(std::uint64_t from_sequence,
                                                            std::size_t count_max) {
  return read_with<std::vector<log_record>>(*engine_, [&](kv_reader& reader) {
    std::vector<log_record> records;
    reader.scan(table::log, keys::u64(from_sequence), {},
                [&](std::string_view, std::string_view value) {
                  records.push_back(unwrap(decode_log_record(value)));
                  return records.size() < count_max;
                });
    return records;
  });
}

expected<recovered_state> partition_store::recover() {
  return read_with<recovered_state>(*engine_, [&](kv_reader& reader) {
    recovered_state state;
    std::string last_owner;
    reader.scan(table::inbox, {}, {}, [&](std::string_view key, std::string_view) {
      auto owner = keys::owner(key);
      if (owner != last_owner) {
        last_owner = std::string(owner);
        state.instances_with_inbox.push_back(last_owner);
      }
      return true;
    });
    reader.scan(table::activities, {}, {}, [&](std::string_view, std::string_view value) {
      state.activities.push_back(unwrap(decode_activity_request(value)));
      return true;
    });
    reader.scan(table::timers, {}, {}, [&](std::string_view, std::string_view value) {
      state.timers.push_back(unwrap(decode_timer_entry(value)));
      return true;
    });
    reader.scan(table::outbox, {}, {}, [&](std::string_view, std::string_view value) {
      state.outbox.push_back(unwrap(decode_outbox_entry(value)));
      return true;
    });
    reader.scan(table::dedup, {}, {}, [&](std::string_view key, std::string_view value) {
      state.dedup_marks[keys::get_u32(key)] = keys::get_u64(value);
      return true;
    });
    reader.scan(table::instances, {}, {}, [&](std::string_view, std::string_view) {
      ++state.instance_count;
      return true;
    });
    state.next_log_sequence = next_log_sequence_;
    if (auto next = reader.get(table::meta, meta_outbox_next)) {
      state.next_outbox_sequence = keys::get_u64(*next);
    }
    if (auto retention = reader.get(table::meta, meta_retention)) state.retention = std::string(*retention);
    reader.scan(table::meta, meta_schedule, meta_schedule_end, [&](std::string_view key, std::string_view value) {
      state.schedules.emplace(std::string(key.substr(meta_schedule.size())), std::string(value));
      return true;
    });
    return state;
  });
}

expected<void> partition_store::check_consistency() {
  auto checked = read_with<expected<void>>(*engine_, [&](kv_reader& reader) -> expected<void> {
    problem_list problems;
    std::set<std::string> ids;
    check_instances(reader, problems, ids);
    check_index(reader, table::by_status, true, ids, problems);
    check_index(reader, table::by_created, false, ids, problems);
    const auto counted = count_by_status(reader);
    if (auto stored = reader.get(table::meta, meta_status_counts)) {
      auto kept = decode_counts(*stored);
      if (!kept || *kept != counted) problems.add("the stored status counts do not match by_status");
    }
    if (counts_ != counted) problems.add("the status counts in memory do not match by_status");
    check_catalog(reader, catalog_, problems);
    check_history_chunks(reader, problems);
    check_owned_rows(reader, table::inbox, ids, problems);
    check_log(reader, problems);
    reader.scan(table::timers, {}, {}, [&](std::string_view, std::string_view value) {
      if (!decode_timer_entry(value)) problems.add("a timer row does not decode");
      return true;
    });
    reader.scan(table::activities, {}, {}, [&](std::string_view, std::string_view value) {
      if (!decode_activity_request(value)) problems.add("an activity row does not decode");
      return true;
    });
    reader.scan(table::outbox, {}, {}, [&](std::string_view key, std::string_view value) {
      auto entry = decode_outbox_entry(value);
      if (!entry || entry->sequence != keys::get_u64(key)) {
        problems.add(fmt::format("outbox row {} is damaged", keys::get_u64(key)));
      }
      return true;
    });
    return problems.result();
  });
  if (!checked) return checked.error();
  return *checked;
}

}  // namespace dtsd::store
