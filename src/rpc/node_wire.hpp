#pragma once
/// Conversions of what crosses between nodes (schema/rpc.capnp NodeLink) and the
/// query of the native API: changes to one instance and instance queries.
/// Readers throw kj::Exception on malformed data.

#include <capnp/message.h>

#include <string>

#include "codec/wire.hpp"
#include "core/limits.hpp"
#include "core/list.hpp"
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

inline void write(schema::ListQuery::Builder b, const core::list_query& query) {
  b.setEntities(query.entities);
  auto statuses = b.initStatuses(static_cast<unsigned>(query.statuses.size()));
  for (unsigned i = 0; i < query.statuses.size(); ++i) statuses.set(i, codec::wire::write(query.statuses[i]));
  b.setIdPart(text(query.id_part));
  b.setNamePart(text(query.name_part));
  b.setVersionPart(text(query.version_part));
  b.setTagPart(text(query.tag_part));
  b.setNameExact(text(query.name_exact));
  b.setNamePrefix(text(query.name_prefix));
  b.setKeyPart(text(query.key_part));
  auto windows = b.initWindows(4);
  unsigned i = 0;
  for (const auto* window : {&query.created, &query.last_updated, &query.started, &query.completed}) {
    auto w = windows[i++];
    w.setHasFrom(window->from_ns.has_value());
    w.setFromNs(window->from_ns.value_or(0));
    w.setHasTo(window->to_ns.has_value());
    w.setToNs(window->to_ns.value_or(0));
  }
  b.setTopLevelOnly(query.top_level_only);
  auto sort = b.initSort(static_cast<unsigned>(query.sort.size()));
  for (unsigned k = 0; k < query.sort.size(); ++k) {
    sort[k].setColumn(static_cast<std::uint8_t>(query.sort[k].column));
    sort[k].setDescending(query.sort[k].descending);
  }
  b.setRows(query.rows);
}

inline core::list_query read(schema::ListQuery::Reader r) {
  core::list_query query;
  query.entities = r.getEntities();
  for (auto status : r.getStatuses()) query.statuses.push_back(codec::wire::read(status));
  query.id_part = text(r.getIdPart());
  query.name_part = text(r.getNamePart());
  query.version_part = text(r.getVersionPart());
  query.tag_part = text(r.getTagPart());
  query.name_exact = text(r.getNameExact());
  query.name_prefix = text(r.getNamePrefix());
  query.key_part = text(r.getKeyPart());
  auto windows = r.getWindows();
  unsigned i = 0;
  for (auto* window : {&query.created, &query.last_updated, &query.started, &query.completed}) {
    if (i >= windows.size()) break;
    auto w = windows[i++];
    if (w.getHasFrom()) window->from_ns = w.getFromNs();
    if (w.getHasTo()) window->to_ns = w.getToNs();
  }
  query.top_level_only = r.getTopLevelOnly();
  for (auto sort : r.getSort()) {
    if (sort.getColumn() > static_cast<std::uint8_t>(core::list_column::entity_key)) {
      throw KJ_EXCEPTION(FAILED, "invalid_argument: an unknown list column");
    }
    query.sort.push_back({static_cast<core::list_column>(sort.getColumn()), sort.getDescending()});
  }
  query.rows = static_cast<std::size_t>(r.getRows());
  return query;
}

inline void write(schema::ListPage::Builder b, const core::list_page& page) {
  auto rows = b.initRows(static_cast<unsigned>(page.rows.size()));
  for (unsigned i = 0; i < page.rows.size(); ++i) {
    const auto& row = page.rows[i];
    auto out = rows[i];
    out.setInstanceId(text(row.instance_id));
    out.setName(text(row.name));
    out.setVersion(text(row.version));
    out.setTags(text(row.tags));
    out.setStatus(codec::wire::write(row.status));
    out.setCreatedAtNs(row.created_at_ns);
    out.setLastUpdatedAtNs(row.last_updated_at_ns);
    out.setStartAtNs(row.start_at_ns);
    out.setCompletedAtNs(row.completed_at_ns);
  }
  b.setTotal(page.total);
  auto counts = b.initByStatus(static_cast<unsigned>(page.by_status.size()));
  for (unsigned i = 0; i < page.by_status.size(); ++i) counts.set(i, page.by_status[i]);
}

inline core::list_page read(schema::ListPage::Reader r) {
  core::list_page page;
  for (auto row : r.getRows()) {
    page.rows.push_back({text(row.getInstanceId()), text(row.getName()), text(row.getVersion()), text(row.getTags()),
                         codec::wire::read(row.getStatus()), row.getCreatedAtNs(), row.getLastUpdatedAtNs(),
                         row.getStartAtNs(), row.getCompletedAtNs()});
  }
  page.total = r.getTotal();
  auto counts = r.getByStatus();
  for (unsigned i = 0; i < counts.size() && i < page.by_status.size(); ++i) page.by_status[i] = counts[i];
  return page;
}

}  // namespace dtsd::rpc::node_wire
