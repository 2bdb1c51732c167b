#include "cluster/membership.hpp"

#include <xxhash.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>

namespace dtsd::cluster {

namespace {

bool valid_node_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (unsigned char c : id) {
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

/// A hub key's value; 0 when it is not a partition count.
std::uint32_t partition_count_of(const std::string& text) {
  std::uint32_t count = 0;
  auto [end, failed] = std::from_chars(text.data(), text.data() + text.size(), count);
  if (failed != std::errc() || end != text.data() + text.size()) return 0;
  return count;
}

std::string partition_key(const std::string& prefix, const partition_ref& p) {
  return fmt::format("{}partitions/{}/{}", prefix, p.hub, p.index);
}

}  // namespace

std::string rendezvous_owner(const std::vector<std::string>& nodes, const partition_ref& partition) {
  std::string best;
  std::uint64_t best_score = 0;
  for (const auto& node : nodes) {
    const auto text = fmt::format("{}\n{}\n{}", node, partition.hub, partition.index);
    const auto score = XXH3_64bits(text.data(), text.size());
    if (best.empty() || score > best_score || (score == best_score && node < best)) {
      best = node;
      best_score = score;
    }
  }
  return best;
}

expected<std::unique_ptr<membership>> membership::join(etcd_client& client, member_options options) {
  if (!valid_node_id(options.node_id)) {
    return error{errc::invalid_argument,
                 fmt::format("--node-id '{}': use 1 to 64 letters, digits, '-', '_' or '.'", options.node_id)};
  }
  if (options.lease_ttl < std::chrono::seconds(2)) {
    return error{errc::invalid_argument, "the node lease must be at least 2 s (etcd's minimum)"};
  }
  const auto granted_at = std::chrono::steady_clock::now();
  auto lease = client.grant(options.lease_ttl);
  if (!lease) return lease.error();
  const auto key = options.prefix + "nodes/" + options.node_id;
  auto created = client.create(key, options.advertise, *lease);
  if (!created || !created->created) {
    (void)client.revoke(*lease);
    if (!created) return created.error();
    return error{errc::already_exists,
                 fmt::format("node id '{}' is in use by a live node at {}; give this one another --node-id",
                             options.node_id, created->existing ? created->existing->value : "?")};
  }
  std::unique_ptr<membership> member(
      new membership(client, std::move(options), *lease, created->revision, granted_at));
  auto first = client.list(member->options_.prefix);  // Once, so that a failure is the answer.
  if (!first) return first.error();  // (The destructor revokes the lease.)
  const auto revision = member->reload();
  member->watch_ = std::make_unique<prefix_watch>(
      client, member->options_.prefix, revision,
      [m = member.get()](const std::vector<watch_event>& events, std::int64_t) { m->apply(events); },
      [m = member.get()] { return m->reload(); });
  member->thread_ = std::thread([m = member.get()] { m->run(); });
  spdlog::info("cluster: node '{}' joined (lease {:x}, {} s)", member->options_.node_id, *lease,
               member->options_.lease_ttl.count());
  return member;
}

membership::membership(etcd_client& client, member_options options, std::int64_t lease, std::int64_t registered,
                       std::chrono::steady_clock::time_point granted_at)
    : client_(client), options_(std::move(options)), lease_(lease), registered_(registered),
      keeper_(std::make_shared<lease_keeper>(client, lease, options_.lease_ttl, granted_at)) {}

membership::~membership() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  watch_.reset();
  std::shared_ptr<lease_keeper> keeper;
  {
    std::lock_guard lock(mutex_);
    keeper = std::move(keeper_);
  }
  keeper.reset();
  (void)client_.revoke(lease_);  // Its node key and claims go at once.
}

void membership::rejoin() {
  const auto granted_at = std::chrono::steady_clock::now();
  auto lease = client_.grant(options_.lease_ttl);
  if (!lease) return;  // etcd still out of reach: tried again at the next balance.
  auto created = client_.create(options_.prefix + "nodes/" + options_.node_id, options_.advertise, *lease);
  if (!created || !created->created) {
    (void)client_.revoke(*lease);
    std::lock_guard lock(mutex_);
    if (created && !rejoin_refused_) {
      spdlog::error("cluster: node '{}' cannot join again: another live process holds the id (at {})",
                    options_.node_id, created->existing ? created->existing->value : "?");
      rejoin_refused_ = true;
    }
    return;
  }
  auto keeper = std::make_shared<lease_keeper>(client_, *lease, options_.lease_ttl, granted_at);
  {
    std::lock_guard lock(mutex_);
    lease_ = *lease;
    registered_ = created->revision;
    std::swap(keeper_, keeper);  // The lost one is dropped outside the lock.
    rejoin_refused_ = false;
    // Its claims under the old lease are gone (or going) in etcd.
    std::erase_if(claims_, [&](const auto& held) {
      return held.second.owner == options_.node_id && held.second.epoch < registered_;
    });
    dirty_ = true;
  }
  spdlog::warn("cluster: node '{}' lost its etcd lease and joined again (lease {:x})", options_.node_id, *lease);
  notify_changed();
}

void membership::serve_hub(const std::string& hub, std::uint32_t partition_count) {
  {
    std::lock_guard lock(mutex_);
    hubs_[hub] = partition_count;
    dirty_ = true;
  }
  wake_.notify_all();
}

std::chrono::steady_clock::time_point membership::acts_until() const {
  std::shared_ptr<lease_keeper> keeper;
  {
    std::lock_guard lock(mutex_);
    keeper = keeper_;
  }
  if (!keeper || keeper->lost()) return std::chrono::steady_clock::time_point::min();
  // A margin before the deadline: a partition takes a moment to stop.
  const auto margin = std::min<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) / 4, std::chrono::milliseconds(500));
  return keeper->held_until() - margin;
}

bool membership::surely_held() const { return std::chrono::steady_clock::now() < acts_until(); }

std::optional<std::int64_t> membership::epoch_of(const partition_ref& partition) const {
  if (!surely_held()) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto found = claims_.find(partition);
  // A claim older than the node's registration was made under a lease it lost.
  if (found == claims_.end() || found->second.owner != options_.node_id || found->second.epoch < registered_) {
    return std::nullopt;
  }
  return found->second.epoch;
}

std::optional<std::string> membership::owner_elsewhere(const partition_ref& partition) const {
  std::lock_guard lock(mutex_);
  auto held = claims_.find(partition);
  if (held == claims_.end() || held->second.owner == options_.node_id) return std::nullopt;
  auto address = nodes_.find(held->second.owner);
  if (address == nodes_.end()) return std::nullopt;
  return address->second;
}

std::map<partition_ref, claim> membership::claims() const {
  std::lock_guard lock(mutex_);
  return claims_;
}

std::map<std::string, std::uint32_t> membership::hubs() const {
  std::lock_guard lock(mutex_);
  return hubs_;
}

expected<std::uint32_t> membership::create_hub(const std::string& hub, std::uint32_t partition_count) {
  auto created = client_.create(options_.prefix + "hubs/" + hub, std::to_string(partition_count), 0);
  if (!created) return created.error();
  if (!created->created) return error{errc::already_exists, fmt::format("task hub '{}' already exists", hub)};
  serve_hub(hub, partition_count);
  return partition_count;
}

expected<std::uint32_t> membership::register_hub(const std::string& hub, std::uint32_t partition_count) {
  auto created = client_.create(options_.prefix + "hubs/" + hub, std::to_string(partition_count), 0);
  if (!created) return created.error();
  if (!created->created && created->existing) {
    partition_count = partition_count_of(created->existing->value);
    if (partition_count == 0) {
      return error{errc::corrupt, fmt::format("etcd holds '{}' as the partition count of hub '{}'",
                                              created->existing->value, hub)};
    }
  }
  serve_hub(hub, partition_count);
  return partition_count;
}

void membership::on_release(std::function<void(const partition_ref&)> releasing) {
  std::lock_guard lock(callback_mutex_);
  releasing_ = std::move(releasing);
}

std::map<std::string, std::string> membership::nodes() const {
  std::lock_guard lock(mutex_);
  return nodes_;
}

void membership::on_change(std::function<void()> changed) {
  std::lock_guard lock(callback_mutex_);
  changed_ = std::move(changed);
}

void membership::notify_changed() {
  std::lock_guard lock(callback_mutex_);
  if (changed_) changed_();
}

void membership::notify_releasing(const partition_ref& partition) {
  std::lock_guard lock(callback_mutex_);
  if (releasing_) releasing_(partition);
}

namespace {

/// What a key under the prefix names.
struct parsed_key {
  std::optional<std::string> node;
  std::optional<std::string> drained;
  std::optional<std::pair<std::string, std::uint32_t>> hub;
  std::optional<partition_ref> partition;
};

parsed_key parse(const std::string& prefix, const std::string& key) {
  parsed_key out;
  if (key.rfind(prefix, 0) != 0) return out;
  const auto rest = std::string_view(key).substr(prefix.size());
  if (rest.rfind("nodes/", 0) == 0) {
    out.node = std::string(rest.substr(6));
  } else if (rest.rfind("drain/", 0) == 0) {
    out.drained = std::string(rest.substr(6));
  } else if (rest.rfind("hubs/", 0) == 0) {
    out.hub = std::pair<std::string, std::uint32_t>{std::string(rest.substr(5)), 0};
  } else if (rest.rfind("partitions/", 0) == 0) {
    const auto tail = rest.substr(11);
    const auto slash = tail.rfind('/');
    std::uint32_t index = 0;
    if (slash == std::string_view::npos) return out;
    const auto digits = tail.substr(slash + 1);
    auto [end, failed] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (failed != std::errc() || end != digits.data() + digits.size()) return out;
    out.partition = partition_ref{std::string(tail.substr(0, slash)), index};
  }
  return out;
}

}  // namespace

expected<cluster_view> read_cluster(etcd_client& client, const std::string& prefix) {
  auto listed = client.list(prefix);
  if (!listed) return listed.error();
  cluster_view view;
  view.revision = listed->second;
  for (const auto& kv : listed->first) {
    auto named = parse(prefix, kv.key);
    if (named.node) view.nodes[*named.node] = kv.value;
    if (named.drained) view.drained.insert(*named.drained);
    if (named.hub) {
      if (auto count = partition_count_of(kv.value)) view.hubs[named.hub->first] = count;
    }
    if (named.partition) view.claims[*named.partition] = claim{kv.value, kv.create_revision};
  }
  return view;
}

expected<void> set_drained(etcd_client& client, const std::string& node_id, bool drained,
                           const std::string& prefix) {
  const auto key = prefix + "drain/" + node_id;
  if (drained) {
    auto put = client.put(key, "drained");
    if (!put) return put.error();
    return {};
  }
  auto found = client.get(key);
  if (!found) return found.error();
  if (!*found) return {};
  auto erased = client.erase_if(key, (*found)->mod_revision);
  if (!erased) return erased.error();
  return {};
}

std::int64_t membership::reload() {
  for (;;) {
    auto listed = read_cluster(client_, options_.prefix);
    if (listed) {
      {
        std::lock_guard lock(mutex_);
        nodes_ = std::move(listed->nodes);
        claims_ = std::move(listed->claims);
        drained_ = std::move(listed->drained);
        hubs_.merge(listed->hubs);
        dirty_ = true;
      }
      wake_.notify_all();
      notify_changed();
      return listed->revision;
    }
    spdlog::warn("cluster: {}", listed.error().message);
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; })) return 0;
    // Meanwhile this node acts for nothing: its view may be old.
  }
}

void membership::apply(const std::vector<watch_event>& events) {
  {
    std::lock_guard lock(mutex_);
    for (const auto& event : events) {
      auto named = parse(options_.prefix, event.kv.key);
      if (named.node) {
        if (event.deleted) {
          nodes_.erase(*named.node);
        } else {
          nodes_[*named.node] = event.kv.value;
        }
      }
      if (named.drained) {
        if (event.deleted) {
          drained_.erase(*named.drained);
        } else {
          drained_.insert(*named.drained);
        }
      }
      if (named.hub && !event.deleted) {
        if (auto count = partition_count_of(event.kv.value)) hubs_.emplace(named.hub->first, count);
      }
      if (named.partition) {
        if (event.deleted) {
          claims_.erase(*named.partition);
        } else {
          claims_[*named.partition] = claim{event.kv.value, event.kv.create_revision};
        }
      }
    }
    dirty_ = true;
  }
  wake_.notify_all();
  notify_changed();
}

void membership::balance() {
  std::vector<std::string> live;
  std::map<std::string, std::uint32_t> hubs;
  std::map<partition_ref, claim> claims;
  {
    std::lock_guard lock(mutex_);
    // A drained node owns nothing, unless every node is drained.
    for (const auto& [id, address] : nodes_) {
      if (!drained_.count(id)) live.push_back(id);
    }
    if (live.empty()) {
      for (const auto& [id, address] : nodes_) live.push_back(id);
    }
    hubs = hubs_;
    claims = claims_;
  }
  std::int64_t lease = 0, registered = 0;
  {
    std::lock_guard lock(mutex_);
    if (keeper_->lost()) {
      lease = -1;
    } else {
      lease = lease_;
      registered = registered_;
    }
  }
  if (lease < 0) {
    rejoin();
    return;  // The next balance works under the new lease.
  }
  for (const auto& [hub, count] : hubs) {
    for (std::uint32_t index = 0; index < count; ++index) {
      // Only a node whose lease surely holds takes or gives anything; one that stops
      // does not wait for etcd once per partition.
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      if (!surely_held()) return;
      const partition_ref partition{hub, index};
      const auto wanted = rendezvous_owner(live, partition);
      auto held = claims.find(partition);
      if (held != claims.end() && held->second.owner == options_.node_id && held->second.epoch < registered) {
        continue;  // Made under a lost lease: etcd takes it away; claimed afresh after that.
      }
      if (held == claims.end() && wanted == options_.node_id) {
        auto created = client_.create(partition_key(options_.prefix, partition), options_.node_id, lease);
        if (!created) {
          spdlog::warn("cluster: claiming partition {} of '{}': {}", index, hub, created.error().message);
        } else if (created->created) {
          std::lock_guard lock(mutex_);
          // The watch may have brought it (or a newer claim) already.
          auto& seen = claims_[partition];
          if (seen.epoch <= created->revision) seen = claim{options_.node_id, created->revision};
          spdlog::info("cluster: node '{}' owns partition {} of '{}' (epoch {})", options_.node_id, index, hub,
                       created->revision);
        }
      } else if (held != claims.end() && held->second.owner == options_.node_id && wanted != options_.node_id) {
        // A planned move: the node it belongs to now is live; hand it over, once
        // this node has stopped serving it.
        notify_releasing(partition);
        auto released = client_.erase_if(partition_key(options_.prefix, partition), held->second.epoch);
        if (released && *released) {
          std::lock_guard lock(mutex_);
          // Unless the watch already brought the next owner's claim.
          if (auto seen = claims_.find(partition); seen != claims_.end() && seen->second.epoch == held->second.epoch) {
            claims_.erase(seen);
          }
          spdlog::info("cluster: node '{}' released partition {} of '{}' to '{}'", options_.node_id, index, hub,
                       wanted);
        }
      }
    }
  }
}

void membership::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    balance();
    lock.lock();
    wake_.wait_for(lock, options_.balance_interval, [this] { return stopping_ || dirty_; });
    dirty_ = false;
  }
}

void membership::leave() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::int64_t registered = 0;
  bool refused = false;
  {
    std::lock_guard lock(mutex_);
    registered = registered_;
    refused = rejoin_refused_ || !keeper_ || keeper_->lost();
  }
  if (refused) return;  // Its claims went with its lease (any under its id now are another process's).
  for (const auto& [partition, held] : claims()) {
    if (held.owner != options_.node_id || held.epoch < registered) continue;
    notify_releasing(partition);
    (void)client_.erase_if(partition_key(options_.prefix, partition), held.epoch);
  }
}

}  // namespace dtsd::cluster
