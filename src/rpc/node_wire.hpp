#pragma once
/// Conversions of what crosses between nodes (schema/rpc.capnp NodeLink) and the
/// query of the native API: changes to one instance and instance queries.
/// Readers throw kj::Exception on malformed data.

#include <capnp/message.h>

#include <string>

#include "codec/wire.hpp"
#include "core/limits.hpp"
#include "core/overloaded.hpp"
#include "core/query.hpp"
#include "rpc.capnp.h"
#include "service/types.hpp"

namespace dtsd::rpc::node_wire {

inline std::string text(capnp::Text::Reader value) { return {value.cStr(), value.size()}; }
inline capnp::Text::Reader text(const std::string& value) { return {value.data(), value.size()}; }

inline core::payload payload(bool has, capnp::Text::Reader value) {
  return has ? core::payload(text(value)) : core::payload();
}

inline void write(schema::Change::Builder b, const service::change& change) {
  b.setInstanceId(text(service::target_of(change)));
  std::visit(overloaded{
                 [&](const service::changes::raise_event& x) {
                   auto raise = b.initRaiseEvent();
                   raise.setName(text(x.name));
                   if (x.input) raise.setInput(text(*x.input));
                 },
                 [&](const service::changes::terminate& x) { codec::wire::write(b.initTerminate(), x.request); },
                 [&](const service::changes::suspend& x) { b.setSuspend(text(x.reason.value_or(""))); },
                 [&](const service::changes::resume& x) { b.setResume(text(x.reason.value_or(""))); },
                 [&](const service::changes::rewind& x) { b.setRewind(text(x.reason.value_or(""))); },
                 [&](const service::changes::deliver& x) { codec::wire::write(b.initDeliver(), x.message); },
                 [&](const service::changes::delete_entity&) { b.setDeleteEntity(); },
             },
             change);
}

inline service::change read(schema::Change::Reader r) {
  const auto id = text(r.getInstanceId());
  // A reason travels as text; an empty one is none.
  auto reason = [](capnp::Text::Reader value) { return value.size() ? core::payload(text(value)) : core::payload(); };
  using W = schema::Change::Which;
  switch (r.which()) {
    case W::RAISE_EVENT: {
      auto raise = r.getRaiseEvent();
      return service::changes::raise_event{id, text(raise.getName()), payload(raise.hasInput(), raise.getInput())};
    }
    case W::TERMINATE: return service::changes::terminate{id, codec::wire::read(r.getTerminate())};
    case W::SUSPEND: return service::changes::suspend{id, reason(r.getSuspend())};
    case W::RESUME: return service::changes::resume{id, reason(r.getResume())};
    case W::REWIND: return service::changes::rewind{id, reason(r.getRewind())};
    case W::DELIVER: return service::changes::deliver{codec::wire::read(r.getDeliver())};
    case W::DELETE_ENTITY: return service::changes::delete_entity{id};
  }
  throw KJ_EXCEPTION(FAILED, "invalid_argument: an unknown kind of change");
}

inline void write(schema::InstanceQuery::Builder q, const core::instance_query& query) {
  auto statuses = q.initStatuses(static_cast<unsigned>(query.statuses.size()));
  for (unsigned i = 0; i < query.statuses.size(); ++i) statuses.set(i, codec::wire::write(query.statuses[i]));
  q.setCreatedFromNs(query.created_from_ns.value_or(0));
  q.setCreatedToNs(query.created_to_ns.value_or(0));
  q.setNamePrefix(text(query.name_prefix));
  q.setInstanceIdPrefix(text(query.instance_id_prefix));
  if (query.version) q.setVersion(text(*query.version));
  codec::wire::write(q.initTags(static_cast<unsigned>(query.tags.size())), query.tags);
  q.setPageSize(static_cast<std::uint32_t>(query.page_size));
  q.setContinuationToken(text(query.continuation_token));
  q.setFetchPayloads(query.fetch_payloads);
  q.setEntities(query.entities);
}

inline core::instance_query read(schema::InstanceQuery::Reader q) {
  core::instance_query query;
  for (auto status : q.getStatuses()) query.statuses.push_back(codec::wire::read(status));
  if (q.getCreatedFromNs() != 0) query.created_from_ns = q.getCreatedFromNs();
  if (q.getCreatedToNs() != 0) query.created_to_ns = q.getCreatedToNs();
  query.name_prefix = text(q.getNamePrefix());
  query.instance_id_prefix = text(q.getInstanceIdPrefix());
  if (q.hasVersion()) query.version = text(q.getVersion());
  query.tags = codec::wire::read(q.getTags());
  // The same rule as the gRPC endpoint: 0 is 100, more than the maximum is the maximum.
  query.page_size = q.getPageSize() == 0 ? 100 : std::min<std::size_t>(q.getPageSize(), core::query_page_size_max);
  query.continuation_token = text(q.getContinuationToken());
  query.fetch_payloads = q.getFetchPayloads();
  query.entities = q.getEntities();
  return query;
}

}  // namespace dtsd::rpc::node_wire
