#pragma once
/// Translation between the core model and its Cap'n Proto storage records
/// (schema/model.capnp, schema/log.capnp). Encoded values are packed Cap'n Proto
/// messages: smaller rows mean fewer pages per commit, and unpacking also frees
/// decoding from LMDB's unaligned values. Malformed bytes are reported as
/// `errc::corrupt`, never thrown.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/model.hpp"

namespace dtsd::store {

/// A message written to a partition's outbox, addressed to another instance.
struct outbox_entry {
  std::uint64_t sequence = 0;
  std::uint32_t source_partition = 0;
  std::uint32_t destination_partition = 0;
  core::instance_message message;
  /// The source's previous message to the same destination (0: none unacknowledged
  /// then): the receiver applies this one only after that one.
  std::uint64_t previous = 0;
  friend bool operator==(const outbox_entry&, const outbox_entry&) = default;
};

/// The materialized row of one instance (key: instance id).
struct stored_instance {
  core::instance_record record;
  std::uint32_t history_count = 0;
  std::uint64_t inbox_first_sequence = 0;
  std::uint32_t inbox_count = 0;
  /// Managed by the store: where the instance's history chunks are.
  std::vector<std::uint64_t> history_segments;
  friend bool operator==(const stored_instance&, const stored_instance&) = default;
};

/// The history events one commit appended to one instance.
struct history_chunk {
  std::uint32_t first_index = 0;
  std::vector<core::history_event> events;
  friend bool operator==(const history_chunk&, const history_chunk&) = default;
};

/// Inputs the partition applied, as logged. Replaying them through the core in
/// order rebuilds the materialized state.
namespace logged {
struct orchestrator_completed {
  core::orchestrator_completion completion;
  std::string new_execution_id;
  std::uint32_t consumed_event_count = 0;  ///< Inbox events the work item held.
  std::int64_t started_at_ns = 0;  ///< The OrchestratorStarted time the work item gave.
  friend bool operator==(const orchestrator_completed&, const orchestrator_completed&) = default;
};
struct event_raised {
  std::string instance_id;
  std::string name;
  core::payload input;
  friend bool operator==(const event_raised&, const event_raised&) = default;
};
struct terminated {
  std::string instance_id;
  core::terminate_request request;
  friend bool operator==(const terminated&, const terminated&) = default;
};
struct suspended {
  std::string instance_id;
  core::payload reason;
  friend bool operator==(const suspended&, const suspended&) = default;
};
struct resumed {
  std::string instance_id;
  core::payload reason;
  friend bool operator==(const resumed&, const resumed&) = default;
};
struct delivered {
  core::instance_message message;
  friend bool operator==(const delivered&, const delivered&) = default;
};
struct rewound {
  std::string instance_id;
  core::payload reason;
  friend bool operator==(const rewound&, const rewound&) = default;
};
struct purged {
  std::string instance_id;
  friend bool operator==(const purged&, const purged&) = default;
};
/// A client deleted an entity, its state with it.
struct entity_deleted {
  std::string instance_id;
  friend bool operator==(const entity_deleted&, const entity_deleted&) = default;
};
/// Bytes the store does not interpret (store tests and benchmarks).
struct opaque {
  std::string data;
  friend bool operator==(const opaque&, const opaque&) = default;
};
}  // namespace logged

struct partition_event {
  std::int64_t timestamp_ns = 0;
  std::variant<core::start_request, logged::orchestrator_completed, core::activity_result,
               core::timer_entry, outbox_entry, logged::event_raised, logged::terminated,
               logged::suspended, logged::resumed, logged::purged, logged::opaque, logged::rewound,
               logged::delivered, logged::entity_deleted>
      body;
  friend bool operator==(const partition_event&, const partition_event&) = default;
};

struct log_record {
  std::uint64_t sequence = 0;
  std::int64_t committed_at_ns = 0;
  std::vector<partition_event> events;
  friend bool operator==(const log_record&, const log_record&) = default;
};

std::string encode(const core::history_event& event);
std::string encode(const stored_instance& instance);
std::string encode(const core::timer_entry& timer);
std::string encode(const core::activity_request& activity);
std::string encode(const outbox_entry& entry);
std::string encode(const log_record& record);
std::string encode(const history_chunk& chunk);

expected<core::history_event> decode_history_event(std::string_view bytes);
expected<stored_instance> decode_stored_instance(std::string_view bytes);
expected<core::timer_entry> decode_timer_entry(std::string_view bytes);
expected<core::activity_request> decode_activity_request(std::string_view bytes);
expected<outbox_entry> decode_outbox_entry(std::string_view bytes);
expected<log_record> decode_log_record(std::string_view bytes);
expected<history_chunk> decode_history_chunk(std::string_view bytes);

/// Merges encoded chunks (oldest first, contiguous) and `appended` into one encoded
/// chunk starting at event 0, copying the stored events without decoding them.
expected<std::string> merge_history_chunks(const std::vector<std::string_view>& chunks,
                                           const history_chunk& appended);

/// What a commit needs of the previous row of an instance, read without decoding
/// the record's payloads.
struct stored_instance_header {
  core::runtime_status status;
  std::int64_t created_at_ns;
  std::uint64_t inbox_first_sequence;
  std::vector<std::uint64_t> history_segments;
};
expected<stored_instance_header> decode_stored_instance_header(std::string_view bytes);

}  // namespace dtsd::store
