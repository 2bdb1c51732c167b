#pragma once
/// Work item filters on the native API (rpc.capnp's WorkFilters), both ways.
/// Header-only: the server and the C++ SDK (worker, dtsctl) share it.

#include <string>

#include "core/work_filter.hpp"
#include "rpc.capnp.h"

namespace dtsd::rpc_wire {

inline core::kind_filter read(capnp::List<schema::NameFilter>::Reader list) {
  std::vector<core::name_filter> names;
  names.reserve(list.size());
  for (auto entry : list) {
    core::name_filter name{entry.getName().cStr(), {}};
    for (auto version : entry.getVersions()) name.versions.emplace_back(version.cStr());
    names.push_back(std::move(name));
  }
  return names;
}

inline core::work_filters read(schema::WorkFilters::Reader filters) {
  if (!filters.getFiltered()) return {};
  return {read(filters.getOrchestrations()), read(filters.getActivities()), read(filters.getEntities())};
}

inline void write(capnp::List<schema::NameFilter>::Builder list, const std::vector<core::name_filter>& names) {
  for (unsigned i = 0; i < names.size(); ++i) {
    list[i].setName(names[i].name);
    auto versions = list[i].initVersions(static_cast<unsigned>(names[i].versions.size()));
    for (unsigned j = 0; j < names[i].versions.size(); ++j) versions.set(j, names[i].versions[j]);
  }
}

/// A kind that accepts everything cannot be said on the wire next to filtered
/// kinds; SDKs list names for every kind or filter nothing, so `filters` must
/// either accept everything or name each kind.
inline void write(schema::WorkFilters::Builder out, const core::work_filters& filters) {
  if (filters.accepts_everything()) return;
  out.setFiltered(true);
  auto put = [](auto init, const core::kind_filter& kind) {
    const auto& names = kind ? *kind : std::vector<core::name_filter>{};
    write(init(static_cast<unsigned>(names.size())), names);
  };
  put([&](unsigned n) { return out.initOrchestrations(n); }, filters.orchestrations);
  put([&](unsigned n) { return out.initActivities(n); }, filters.activities);
  put([&](unsigned n) { return out.initEntities(n); }, filters.entities);
}

}  // namespace dtsd::rpc_wire
