#include "cluster/node.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace dtsd::cluster {

namespace {
/// How often ownership is compared with what is served even without a change seen
/// (a lease that stops being surely held changes nothing in etcd).
constexpr auto reconcile_interval = std::chrono::milliseconds(200);
/// How long a claim given up may still be seen as this node's before it is served again.
constexpr auto release_grace = std::chrono::seconds(10);
}  // namespace

expected<std::unique_ptr<node>> node::start(membership& member, service::partition_host& host,
                                            const std::vector<std::string>& hubs, std::uint32_t partition_count) {
  std::unique_ptr<node> made(new node(member, host));
  for (const auto& hub : hubs) {
    auto recorded = member.register_hub(hub, partition_count);
    if (!recorded) return recorded.error();
    if (auto added = host.add_hub(hub, *recorded); !added) return added.error();
  }
  host.register_hubs_with([&member](const std::string& hub, std::uint32_t count) {
    return member.create_hub(hub, count);
  });
  host.describe_owner([n = made.get()](const std::string& hub, std::uint32_t index) { return n->describe(hub, index); });
  member.on_release([n = made.get()](const partition_ref& partition) {
    std::int64_t epoch = 0;
    if (auto claims = n->member_.claims(); claims.count(partition)) epoch = claims.at(partition).epoch;
    std::lock_guard serving(n->serving_);
    n->released_[{partition.hub, partition.index, epoch}] = std::chrono::steady_clock::now();
    n->host_.stop_partitions({{partition.hub, partition.index}}, true);
  });
  member.on_change([n = made.get()] {
    {
      std::lock_guard lock(n->mutex_);
      n->dirty_ = true;
    }
    n->wake_.notify_all();
  });
  made->reconcile();
  made->thread_ = std::thread([n = made.get()] { n->run(); });
  return made;
}

node::node(membership& member, service::partition_host& host) : member_(member), host_(host) {}

node::~node() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  member_.on_change(nullptr);
  member_.on_release(nullptr);
  host_.describe_owner(nullptr);
  host_.register_hubs_with(nullptr);
}

void node::leave() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  member_.leave();  // Each partition is committed and closed (on_release), then released.
}

void node::on_reconciled(std::function<void()> after) {
  std::lock_guard lock(mutex_);
  after_ = std::move(after);
}

void node::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    dirty_ = false;
    auto after = after_;
    lock.unlock();
    reconcile();
    if (after) after();
    lock.lock();
    // At the latest when this node may no longer act for what it serves.
    auto until = std::chrono::steady_clock::now() + reconcile_interval;
    if (const auto deadline = member_.acts_until(); deadline > std::chrono::steady_clock::now()) {
      until = std::min(until, deadline);
    }
    wake_.wait_until(lock, until, [this] { return stopping_ || dirty_; });
  }
}

void node::reconcile() {
  std::lock_guard serving(serving_);
  const auto hubs = member_.hubs();
  for (const auto& [hub, count] : hubs) {
    if (auto added = host_.add_hub(hub, count); !added) {
      spdlog::warn("cluster: task hub '{}' cannot be opened here: {}", hub, added.error().message);
    }
  }
  // Claims given up and since replaced are forgotten; so is one still this node's
  // long after it was given up (the release failed): it is served again.
  const auto claims = member_.claims();
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(released_, [&](const auto& given) {
    const auto& [key, since] = given;
    auto found = claims.find(partition_ref{std::get<0>(key), std::get<1>(key)});
    if (found == claims.end() || found->second.epoch != std::get<2>(key)) return true;
    if (now - since > release_grace) {
      spdlog::warn("cluster: partition {} of '{}' is still this node's {} s after it was given up; serving it again",
                   std::get<1>(key), std::get<0>(key),
                   std::chrono::duration_cast<std::chrono::seconds>(release_grace).count());
      return true;
    }
    return false;
  });
  // What is no longer surely this node's stops first, all at once; then what is
  // newly this node's opens.
  auto served = host_.served();
  std::vector<std::pair<std::string, std::uint32_t>> lost;
  std::vector<std::tuple<std::string, std::uint32_t, std::int64_t>> gained;
  for (const auto& [hub, count] : hubs) {
    for (std::uint32_t index = 0; index < count; ++index) {
      auto epoch = member_.epoch_of({hub, index});
      if (epoch && released_.count({hub, index, *epoch})) epoch.reset();
      auto current = served.find({hub, index});
      const bool here = current != served.end();
      if (here && (!epoch || current->second != *epoch)) lost.emplace_back(hub, index);
      if (epoch && (!here || current->second != *epoch)) gained.emplace_back(hub, index, *epoch);
    }
  }
  host_.stop_partitions(lost, false);
  for (const auto& [hub, index, epoch] : gained) {
    // Stopping (or an earlier open) may have taken a while: still this node's?
    if (member_.epoch_of({hub, index}) != epoch) continue;
    if (auto opened = host_.serve_partition(hub, index, epoch); !opened) {
      spdlog::warn("cluster: partition {} of '{}' (epoch {}) cannot be served here: {}", index, hub, epoch,
                   opened.error().message);
    }
  }
}

std::string node::describe(const std::string& hub, std::uint32_t index) const {
  const auto claims = member_.claims();
  auto found = claims.find(partition_ref{hub, index});
  if (found == claims.end()) return "no node owns it at the moment (it is moving); try again shortly";
  if (found->second.owner == member_.node_id()) return "this node owns it and is opening it; try again shortly";
  const auto nodes = member_.nodes();
  auto address = nodes.find(found->second.owner);
  return fmt::format("node '{}' at {} serves it (epoch {}); this node's view may be behind; try again shortly",
                     found->second.owner, address == nodes.end() ? std::string("?") : address->second,
                     found->second.epoch);
}

}  // namespace dtsd::cluster
