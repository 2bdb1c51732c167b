#include "service/query_merge.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <tuple>

namespace dtsd::service {

std::optional<std::pair<std::int64_t, std::string>> token_position(const std::string& token) {
  const auto dot = token.find('.');
  if (token.empty() || dot == std::string::npos) return std::nullopt;
  std::int64_t created = 0;
  if (std::from_chars(token.data(), token.data() + dot, created).ec != std::errc()) return std::nullopt;
  return std::make_pair(created, token.substr(dot + 1));
}

std::string token_at(std::int64_t created_ns, const std::string& instance_id) {
  return fmt::format("{}.{}", created_ns, instance_id);
}

void query_merge::add(core::query_page page) {
  if (auto reached = token_position(page.continuation_token)) {
    if (!horizon_ || *reached < *horizon_) horizon_ = std::move(*reached);
  }
  std::move(page.instances.begin(), page.instances.end(), std::back_inserter(records_));
}

void query_merge::fail(dtsd::error why) {
  if (!failure_) failure_ = std::move(why);
}

expected<core::query_page> query_merge::finish() {
  if (failure_) return *failure_;
  std::sort(records_.begin(), records_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_at_ns, a.instance_id) < std::tie(b.created_at_ns, b.instance_id);
  });
  if (horizon_) {
    std::erase_if(records_, [&](const core::instance_record& r) {
      return std::make_pair(r.created_at_ns, r.instance_id) > *horizon_;
    });
  }
  const bool more = horizon_.has_value() || records_.size() > page_size_;
  if (records_.size() > page_size_) records_.resize(page_size_);
  core::query_page merged;
  if (more && !records_.empty()) {
    merged.continuation_token = token_at(records_.back().created_at_ns, records_.back().instance_id);
  } else if (more) {
    // Every partition stopped at its scan budget before finding a match.
    merged.continuation_token = token_at(horizon_->first, horizon_->second);
  }
  merged.instances = std::move(records_);
  return merged;
}

entity_verdict judge_entity(const core::instance_record& entity, bool remove_empty, bool release_orphaned_locks) {
  entity_verdict verdict;
  const bool locked = !entity.entity_locked_by.empty();
  verdict.remove = remove_empty && !entity.entity_state && !locked && entity.entity_deferred.empty();
  verdict.check_lock = release_orphaned_locks && locked;
  return verdict;
}

bool lock_orphaned(const std::optional<core::instance_record>& holder) {
  return !holder || core::is_terminal(holder->status);
}

}  // namespace dtsd::service
