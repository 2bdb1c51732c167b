#include "store/catalog.hpp"

#include <algorithm>
#include <mutex>

#include "core/ids.hpp"

namespace dtsd::store {

catalog_entry catalog_entry_of(const core::instance_record& record) {
  catalog_entry entry;
  entry.instance_id = record.instance_id;
  const bool entity = core::is_entity_id(record.instance_id);
  entry.name = entity ? std::string(core::entity_name_of(record.instance_id)) : record.name;
  entry.version = record.version.value_or(std::string());
  entry.tags = core::tags_text(record.tags);
  entry.status = record.status;
  entry.child = record.parent.has_value();
  entry.created_at_ns = record.created_at_ns;
  entry.last_updated_at_ns = record.last_updated_at_ns;
  entry.start_at_ns = record.scheduled_start_ns;
  entry.completed_at_ns = record.completed_at_ns;
  return entry;
}

// ------------------------------------------------------------------ string pool

instance_catalog::string_pool::string_pool() {
  texts_.emplace_back();
  lowered_.emplace_back();
  references_.push_back(1);  // "" is never released.
  ids_.emplace(std::string(), 0);
}

std::uint32_t instance_catalog::string_pool::acquire(const std::string& text) {
  if (text.empty()) return 0;
  if (auto found = ids_.find(text); found != ids_.end()) {
    ++references_[found->second];
    return found->second;
  }
  std::uint32_t id = 0;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
    texts_[id] = text;
    lowered_[id] = core::lower_ascii(text);
    references_[id] = 1;
  } else {
    id = static_cast<std::uint32_t>(texts_.size());
    texts_.push_back(text);
    lowered_.push_back(core::lower_ascii(text));
    references_.push_back(1);
  }
  ids_.emplace(text, id);
  return id;
}

void instance_catalog::string_pool::release(std::uint32_t id) {
  if (id == 0 || --references_[id] != 0) return;
  ids_.erase(texts_[id]);
  texts_[id].clear();
  texts_[id].shrink_to_fit();
  lowered_[id].clear();
  lowered_[id].shrink_to_fit();
  free_.push_back(id);
}

// ------------------------------------------------------------------ changes

std::vector<instance_catalog::row>::iterator instance_catalog::position(std::int64_t created_at_ns,
                                                                        const std::string& instance_id) {
  return std::lower_bound(rows_.begin(), rows_.end(), std::pair{created_at_ns, std::string_view(instance_id)},
                          [](const row& r, const std::pair<std::int64_t, std::string_view>& key) {
                            if (r.created_at_ns != key.first) return r.created_at_ns < key.first;
                            return std::string_view(r.instance_id) < key.second;
                          });
}

void instance_catalog::count(const row& r, int by) {
  auto& counted = counts_[r.entity ? 1 : 0][static_cast<std::size_t>(r.status)];
  counted = static_cast<std::uint64_t>(static_cast<std::int64_t>(counted) + by);
}

void instance_catalog::index_ended(const row& r, bool add) {
  if (r.entity || !core::is_terminal(r.status)) return;
  auto& index = ended_[static_cast<std::size_t>(r.status)];
  // An instance that ended without a completion time counts from its last update.
  std::pair<std::int64_t, std::string> key{r.completed_at_ns != 0 ? r.completed_at_ns : r.last_updated_at_ns,
                                           r.instance_id};
  if (add) {
    index.insert(std::move(key));
  } else {
    index.erase(key);
  }
}

std::optional<std::int64_t> instance_catalog::oldest_ended_ns() const {
  std::shared_lock lock(mutex_);
  std::optional<std::int64_t> oldest;
  for (const auto& index : ended_) {
    if (!index.empty() && (!oldest || index.begin()->first < *oldest)) oldest = index.begin()->first;
  }
  return oldest;
}

void instance_catalog::remove(std::int64_t created_at_ns, const std::string& instance_id) {
  auto it = position(created_at_ns, instance_id);
  if (it == rows_.end() || !it->live || it->created_at_ns != created_at_ns || it->instance_id != instance_id) return;
  index_ended(*it, false);
  count(*it, -1);
  strings_.release(it->name);
  strings_.release(it->version);
  strings_.release(it->tags);
  it->name = it->version = it->tags = 0;
  it->live = false;
  ++tombstones_;
}

void instance_catalog::add(catalog_entry entry) {
  auto it = position(entry.created_at_ns, entry.instance_id);
  const bool same_key =
      it != rows_.end() && it->created_at_ns == entry.created_at_ns && it->instance_id == entry.instance_id;
  if (!same_key) {
    it = rows_.insert(it, row{});
    it->instance_id = std::move(entry.instance_id);
    it->created_at_ns = entry.created_at_ns;
  }
  // The new strings first, so that a name kept by the only instance that uses it stays interned.
  const auto name = strings_.acquire(entry.name), version = strings_.acquire(entry.version),
             tags = strings_.acquire(entry.tags);
  if (same_key && it->live) {
    index_ended(*it, false);
    count(*it, -1);
    strings_.release(it->name);
    strings_.release(it->version);
    strings_.release(it->tags);
  } else if (same_key) {
    --tombstones_;
  }
  it->name = name;
  it->version = version;
  it->tags = tags;
  it->status = entry.status;
  it->entity = core::is_entity_id(it->instance_id);
  it->child = entry.child;
  it->last_updated_at_ns = entry.last_updated_at_ns;
  it->start_at_ns = entry.start_at_ns;
  it->completed_at_ns = entry.completed_at_ns;
  it->live = true;
  count(*it, +1);
  index_ended(*it, true);
}

void instance_catalog::compact_if_worth_it() {
  constexpr std::size_t tombstones_min = 1024;
  if (tombstones_ < tombstones_min || tombstones_ * 4 < rows_.size()) return;
  std::erase_if(rows_, [](const row& r) { return !r.live; });
  tombstones_ = 0;
}

void instance_catalog::apply(std::vector<catalog_change> changes) {
  std::unique_lock lock(mutex_);
  for (auto& change : changes) {
    const bool in_place = change.added && change.removed_created_at_ns == change.added->created_at_ns;
    if (change.removed_created_at_ns && !in_place) remove(*change.removed_created_at_ns, change.instance_id);
    if (change.added) add(std::move(*change.added));
  }
  compact_if_worth_it();
}

void instance_catalog::load(std::vector<catalog_entry> entries) {
  std::unique_lock lock(mutex_);
  // Sorted first, so that each is appended.
  std::sort(entries.begin(), entries.end(), [](const catalog_entry& a, const catalog_entry& b) {
    return std::pair{a.created_at_ns, std::string_view(a.instance_id)} <
           std::pair{b.created_at_ns, std::string_view(b.instance_id)};
  });
  rows_.reserve(rows_.size() + entries.size());
  for (auto& entry : entries) add(std::move(entry));
}

// ------------------------------------------------------------------ lists

core::list_key instance_catalog::key_of(const row& r) const {
  return {r.instance_id,   strings_.text(r.name),  strings_.text(r.version), strings_.text(r.tags),
          r.status,        r.created_at_ns,        r.last_updated_at_ns,     r.start_at_ns,
          r.completed_at_ns};
}

core::list_row instance_catalog::list_row_of(const row& r) const {
  return {r.instance_id,    strings_.text(r.name), strings_.text(r.version), strings_.text(r.tags), r.status,
          r.created_at_ns,  r.last_updated_at_ns,  r.start_at_ns,            r.completed_at_ns};
}

namespace {

/// Whether each interned string passes a test, each string tested once per list.
class pool_matches {
 public:
  template <class Test>
  bool operator()(std::uint32_t id, std::size_t slots, const std::string& lowered, Test test) {
    if (known_.empty()) known_.assign(slots, -1);
    auto& known = known_[id];
    if (known < 0) known = test(lowered) ? 1 : 0;
    return known == 1;
  }

 private:
  std::vector<std::int8_t> known_;
};

}  // namespace

core::list_page instance_catalog::list(const core::list_query& query) const {
  std::shared_lock lock(mutex_);
  std::uint32_t status_mask = 0;  // 0: any.
  for (auto status : query.statuses) status_mask |= 1u << static_cast<unsigned>(status);
  auto status_kept = [status_mask](core::runtime_status s) {
    return status_mask == 0 || ((status_mask >> static_cast<unsigned>(s)) & 1u) != 0;
  };
  const bool by_counters = query.counted_by_status();
  pool_matches name_ok, version_ok, tags_ok;
  const auto slots = strings_.slots();
  auto kept = [&](const row& r) {
    if (!r.live || r.entity != query.entities) return false;
    if (by_counters) return true;
    if (query.top_level_only && r.child) return false;
    if (!query.created.holds(r.created_at_ns) || !query.last_updated.holds(r.last_updated_at_ns) ||
        !query.started.holds(r.start_at_ns)) {
      return false;
    }
    if (query.completed.any() && (r.completed_at_ns == 0 || !query.completed.holds(r.completed_at_ns))) return false;
    const bool name_filtered = !query.name_part.empty() || !query.name_exact.empty() || !query.name_prefix.empty();
    if (name_filtered && !name_ok(r.name, slots, strings_.lowered(r.name), [&](const std::string& name) {
          return name.find(query.name_part) != std::string::npos &&
                 (query.name_exact.empty() || name == query.name_exact) && name.starts_with(query.name_prefix);
        })) {
      return false;
    }
    if (!query.version_part.empty() &&
        !version_ok(r.version, slots, strings_.lowered(r.version),
                    [&](const std::string& v) { return v.find(query.version_part) != std::string::npos; })) {
      return false;
    }
    if (!query.tag_part.empty() &&
        !tags_ok(r.tags, slots, strings_.lowered(r.tags),
                 [&](const std::string& t) { return t.find(query.tag_part) != std::string::npos; })) {
      return false;
    }
    if (!core::contains_ignoring_case(r.instance_id, query.id_part)) return false;
    return core::contains_ignoring_case(core::entity_key_of(r.instance_id), query.key_part);
  };

  core::list_page page;
  if (by_counters) {
    page.by_status = counts_[query.entities ? 1 : 0];
    for (std::size_t s = 0; s < page.by_status.size(); ++s) {
      if (status_kept(static_cast<core::runtime_status>(s))) page.total += page.by_status[s];
    }
  }
  // Only rows created in the window are looked at.
  auto first = rows_.begin(), last = rows_.end();
  if (query.created.from_ns) {
    first = std::partition_point(rows_.begin(), rows_.end(),
                                 [&](const row& r) { return r.created_at_ns < *query.created.from_ns; });
  }
  if (query.created.to_ns) {
    last = std::partition_point(first, rows_.end(), [&](const row& r) { return r.created_at_ns < *query.created.to_ns; });
  }
  // Counts each kept row; answers whether it is a match (of the statuses too).
  auto matched = [&](const row& r) {
    if (!kept(r)) return false;
    if (by_counters) return status_kept(r.status);
    ++page.by_status[static_cast<std::size_t>(r.status)];
    if (!status_kept(r.status)) return false;
    ++page.total;
    return true;
  };

  const std::vector<core::list_sort> newest_first{{core::list_column::created_at, true}};
  const auto& sort = query.sort.empty() ? newest_first : query.sort;
  if (sort.size() == 1 && sort.front().column == core::list_column::created_at) {
    // The rows' own order: the first matches are the page; with counted counts, nothing more is read.
    auto visit = [&](const row& r) {
      if (!matched(r)) return true;
      if (page.rows.size() < query.rows) page.rows.push_back(list_row_of(r));
      return !by_counters || page.rows.size() < query.rows;
    };
    if (sort.front().descending) {
      for (auto it = last; it != first;) {
        if (!visit(*--it)) break;
      }
    } else {
      for (auto it = first; it != last; ++it) {
        if (!visit(*it)) break;
      }
    }
    return page;
  }
  std::vector<std::uint32_t> matches;
  for (auto it = first; it != last; ++it) {
    if (matched(*it)) matches.push_back(static_cast<std::uint32_t>(it - rows_.begin()));
  }
  auto before = [&](std::uint32_t a, std::uint32_t b) { return core::list_before(key_of(rows_[a]), key_of(rows_[b]), sort); };
  if (matches.size() > query.rows) {
    std::nth_element(matches.begin(), matches.begin() + static_cast<long>(query.rows), matches.end(), before);
    matches.resize(query.rows);
  }
  std::sort(matches.begin(), matches.end(), before);
  page.rows.reserve(matches.size());
  for (auto index : matches) page.rows.push_back(list_row_of(rows_[index]));
  return page;
}

std::size_t instance_catalog::size() const {
  std::shared_lock lock(mutex_);
  return rows_.size() - tombstones_;
}

core::list_status_counts instance_catalog::counts(bool entities) const {
  std::shared_lock lock(mutex_);
  return counts_[entities ? 1 : 0];
}

}  // namespace dtsd::store
