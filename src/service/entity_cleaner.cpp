#include "service/entity_cleaner.hpp"

#include <spdlog/spdlog.h>

#include <future>

namespace dtsd::service {

namespace {
/// How long one page may take before the pass gives up until the next period.
constexpr auto page_limit = std::chrono::seconds(60);
}  // namespace

entity_cleaner::entity_cleaner(task_service& service, std::chrono::seconds period)
    : service_(service), period_(period), thread_([this] { run(); }) {}

entity_cleaner::~entity_cleaner() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool entity_cleaner::stopping() {
  std::lock_guard lock(mutex_);
  return stop_;
}

void entity_cleaner::run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, period_, [this] { return stop_; })) return;
    }
    auto done = clean_all();
    if (done.removed + done.released != 0) {
      spdlog::info("entity storage cleaned: {} empty entities removed, {} orphaned locks released", done.removed,
                   done.released);
    }
  }
}

entity_clean_result entity_cleaner::clean_all() {
  entity_clean_result total;
  for (const auto& hub : service_.task_hubs()) {
    entity_clean_request request;
    request.remove_empty = true;
    request.release_orphaned_locks = true;
    request.idle_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(period_).count();
    do {
      if (stopping()) return total;
      auto answer = std::make_shared<std::promise<expected<entity_clean_result>>>();
      auto future = answer->get_future();
      service_.clean_entity_storage(hub, request, [answer](expected<entity_clean_result> page) {
        answer->set_value(std::move(page));
      });
      // In short steps, so that stopping dtsd does not wait for a slow page.
      auto waited = std::chrono::milliseconds(0);
      while (future.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready && waited < page_limit) {
        waited += std::chrono::milliseconds(100);
        if (stopping()) return total;
      }
      if (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        spdlog::warn("cleaning the entities of task hub '{}' took more than {} s a page; trying again later", hub,
                     page_limit.count());
        break;
      }
      auto page = future.get();
      if (!page) {
        // A hub deleted meanwhile, a partition moving: the next pass tries again.
        spdlog::debug("cleaning the entities of task hub '{}': {}", hub, page.error().message);
        break;
      }
      total.removed += page->removed;
      total.released += page->released;
      request.continuation_token = page->continuation_token;
    } while (!request.continuation_token.empty());
  }
  return total;
}

}  // namespace dtsd::service
