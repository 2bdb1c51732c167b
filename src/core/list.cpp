#include "list.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace dtsd::core {

bool list_query::counted_by_status() const {
  return id_part.empty() && name_part.empty() && version_part.empty() && tag_part.empty() && name_exact.empty() &&
         name_prefix.empty() && key_part.empty() && !created.any() && !last_updated.any() && !started.any() &&
         !completed.any() && !top_level_only;
}

expected<void> validate(const list_query& query) {
  if (query.rows == 0 || query.rows > list_rows_max) {
    return error{errc::invalid_argument,
                 fmt::format("a list reaches {} rows deep; it may reach 1 to {} (narrow the filter to page further)",
                             query.rows, list_rows_max)};
  }
  if (query.sort.size() > 10) return error{errc::invalid_argument, "sort: at most 10 columns"};
  return {};
}

std::string_view entity_key_of(std::string_view id) {
  const auto second = id.size() > 1 && id[0] == '@' ? id.find('@', 1) : std::string_view::npos;
  return second == std::string_view::npos ? std::string_view() : id.substr(second + 1);
}

std::string_view entity_name_of(std::string_view id) {
  const auto second = id.size() > 1 && id[0] == '@' ? id.find('@', 1) : std::string_view::npos;
  return second == std::string_view::npos ? id : id.substr(1, second - 1);
}

int list_compare(const list_key& a, const list_key& b, list_column column) {
  auto three_way = [](const auto& x, const auto& y) { return x < y ? -1 : (y < x ? 1 : 0); };
  switch (column) {
    case list_column::instance_id: return three_way(a.instance_id, b.instance_id);
    case list_column::name: return three_way(a.name, b.name);
    case list_column::version: return three_way(a.version, b.version);
    case list_column::created_at: return three_way(a.created_at_ns, b.created_at_ns);
    case list_column::last_updated_at: return three_way(a.last_updated_at_ns, b.last_updated_at_ns);
    case list_column::start_at: return three_way(a.start_at_ns, b.start_at_ns);
    case list_column::completed_at: return three_way(a.completed_at_ns, b.completed_at_ns);
    case list_column::status: return three_way(to_string(a.status), to_string(b.status));
    case list_column::tags: return three_way(a.tags, b.tags);
    case list_column::entity_key: return three_way(entity_key_of(a.instance_id), entity_key_of(b.instance_id));
  }
  return 0;
}

bool list_before(const list_key& a, const list_key& b, const std::vector<list_sort>& sort) {
  for (const auto& key : sort) {
    if (int c = list_compare(a, b, key.column); c != 0) return key.descending ? c > 0 : c < 0;
  }
  const bool descending = sort.empty() || sort.front().descending;
  return descending ? b.instance_id < a.instance_id : a.instance_id < b.instance_id;
}

std::string tags_text(const tag_map& tags) {
  std::string out;
  for (const auto& [key, value] : tags) {
    if (!out.empty()) out += ", ";
    out += key;
    out += '=';
    out += value;
  }
  return out;
}

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool contains_ignoring_case(std::string_view text, std::string_view lowered_part) {
  if (lowered_part.empty()) return true;
  if (lowered_part.size() > text.size()) return false;
  auto lowered = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  const auto last = text.size() - lowered_part.size();
  for (std::size_t at = 0; at <= last; ++at) {
    if (lowered(text[at]) != lowered_part[0]) continue;
    std::size_t i = 1;
    while (i < lowered_part.size() && lowered(text[at + i]) == lowered_part[i]) ++i;
    if (i == lowered_part.size()) return true;
  }
  return false;
}

list_page merge_list_pages(std::vector<list_page> pages, const std::vector<list_sort>& sort, std::size_t start,
                           std::size_t count) {
  list_page out;
  std::size_t rows = 0;
  for (const auto& page : pages) rows += page.rows.size();
  out.rows.reserve(rows);
  for (auto& page : pages) {
    out.total += page.total;
    for (std::size_t i = 0; i < out.by_status.size(); ++i) out.by_status[i] += page.by_status[i];
    std::move(page.rows.begin(), page.rows.end(), std::back_inserter(out.rows));
  }
  const auto end = std::min(out.rows.size(), start + count);
  auto before = [&sort](const list_row& a, const list_row& b) { return list_before(a.key(), b.key(), sort); };
  if (start >= out.rows.size()) {
    out.rows.clear();
    return out;
  }
  std::partial_sort(out.rows.begin(), out.rows.begin() + static_cast<long>(end), out.rows.end(), before);
  out.rows.erase(out.rows.begin() + static_cast<long>(end), out.rows.end());
  out.rows.erase(out.rows.begin(), out.rows.begin() + static_cast<long>(start));
  return out;
}

}  // namespace dtsd::core
