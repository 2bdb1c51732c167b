#include "cluster/etcd_client.hpp"

#include <grpcpp/grpcpp.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "etcd.grpc.pb.h"

namespace dtsd::cluster {

namespace pb = etcdserverpb;
using steady = std::chrono::steady_clock;

namespace {

std::int64_t steady_ns(steady::time_point at) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
}

key_value from(const pb::KeyValue& kv) {
  return {kv.key(), kv.value(), kv.create_revision(), kv.mod_revision(), kv.lease()};
}

/// How long a broken stream waits before it is opened again.
constexpr auto reconnect_delay = std::chrono::milliseconds(200);

}  // namespace

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xff) end.pop_back();
  if (end.empty()) return std::string(1, '\0');  // Every key.
  end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  return end;
}

expected<etcd_options> parse_etcd_url(const std::string& url) {
  std::string rest = url;
  const std::string scheme = "etcd://";
  if (rest.rfind(scheme, 0) == 0) rest = rest.substr(scheme.size());
  etcd_options options;
  std::size_t begin = 0;
  while (begin <= rest.size()) {
    const auto comma = rest.find(',', begin);
    const auto endpoint = rest.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    const auto colon = endpoint.rfind(':');
    if (endpoint.empty() || colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size() ||
        endpoint.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      return error{errc::invalid_argument,
                   fmt::format("--cluster: '{}' is not host:port (expected etcd://host:port[,host:port...])", endpoint)};
    }
    options.endpoints.push_back(endpoint);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return options;
}

// ------------------------------------------------------------------ calls

struct etcd_client::stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Lease::Stub> lease;
  std::unique_ptr<pb::Watch::Stub> watch;
};

etcd_client::etcd_client(etcd_options options, std::unique_ptr<stubs> s)
    : options_(std::move(options)), stubs_(std::move(s)) {}

etcd_client::~etcd_client() = default;

expected<std::unique_ptr<etcd_client>> etcd_client::connect(const etcd_options& options) {
  if (options.endpoints.empty()) return error{errc::invalid_argument, "no etcd endpoint"};
  // Several endpoints: one channel that moves to the next when one fails.
  std::string target = "ipv4:";
  bool numeric = true;
  for (std::size_t i = 0; i < options.endpoints.size(); ++i) {
    const auto& endpoint = options.endpoints[i];
    numeric = numeric && endpoint.find_first_not_of("0123456789.:") == std::string::npos;
    target += (i ? "," : "") + endpoint;
  }
  if (!numeric) {
    if (options.endpoints.size() > 1) {
      return error{errc::invalid_argument,
                   fmt::format("etcd endpoints {}: give several endpoints as IP addresses (one name is fine)",
                               fmt::join(options.endpoints, ","))};
    }
    target = "dns:///" + options.endpoints.front();
  }
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto s = std::make_unique<stubs>();
  s->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  s->kv = pb::KV::NewStub(s->channel);
  s->lease = pb::Lease::NewStub(s->channel);
  s->watch = pb::Watch::NewStub(s->channel);
  return std::unique_ptr<etcd_client>(new etcd_client(options, std::move(s)));
}

namespace {

/// Runs one unary call with the client's deadline; a failure names etcd and the call.
template <class Call>
expected<void> call(const etcd_options& options, const char* what, Call&& run) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options.call_timeout);
  context.set_wait_for_ready(true);  // Through a reconnect, within the deadline.
  const auto status = run(context);
  if (status.ok()) return {};
  return error{errc::io, fmt::format("etcd ({}) {}: {} ({})", fmt::join(options.endpoints, ","), what,
                                     status.error_message(), static_cast<int>(status.error_code()))};
}

}  // namespace

expected<std::int64_t> etcd_client::grant(std::chrono::seconds ttl) {
  pb::LeaseGrantRequest request;
  request.set_ttl(ttl.count());
  pb::LeaseGrantResponse response;
  auto done = call(options_, "LeaseGrant",
                   [&](grpc::ClientContext& c) { return stubs_->lease->LeaseGrant(&c, request, &response); });
  if (!done) return done.error();
  if (!response.error().empty()) return error{errc::io, "etcd LeaseGrant: " + response.error()};
  return response.id();
}

expected<void> etcd_client::revoke(std::int64_t lease) {
  pb::LeaseRevokeRequest request;
  request.set_id(lease);
  pb::LeaseRevokeResponse response;
  return call(options_, "LeaseRevoke",
              [&](grpc::ClientContext& c) { return stubs_->lease->LeaseRevoke(&c, request, &response); });
}

expected<std::int64_t> etcd_client::put(const std::string& key, const std::string& value, std::int64_t lease) {
  pb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease);
  pb::PutResponse response;
  auto done = call(options_, "Put", [&](grpc::ClientContext& c) { return stubs_->kv->Put(&c, request, &response); });
  if (!done) return done.error();
  return response.header().revision();
}

expected<std::optional<key_value>> etcd_client::get(const std::string& key) {
  pb::RangeRequest request;
  request.set_key(key);
  pb::RangeResponse response;
  auto done = call(options_, "Range", [&](grpc::ClientContext& c) { return stubs_->kv->Range(&c, request, &response); });
  if (!done) return done.error();
  if (response.kvs_size() == 0) return std::optional<key_value>();
  return std::optional<key_value>(from(response.kvs(0)));
}

expected<std::pair<std::vector<key_value>, std::int64_t>> etcd_client::list(const std::string& prefix) {
  pb::RangeRequest request;
  request.set_key(prefix);
  request.set_range_end(prefix_end(prefix));
  pb::RangeResponse response;
  auto done = call(options_, "Range", [&](grpc::ClientContext& c) { return stubs_->kv->Range(&c, request, &response); });
  if (!done) return done.error();
  std::vector<key_value> out;
  out.reserve(static_cast<std::size_t>(response.kvs_size()));
  for (const auto& kv : response.kvs()) out.push_back(from(kv));
  return std::pair{std::move(out), response.header().revision()};
}

expected<create_result> etcd_client::create(const std::string& key, const std::string& value, std::int64_t lease) {
  pb::TxnRequest request;
  auto* compare = request.add_compare();
  compare->set_key(key);
  compare->set_target(pb::Compare::CREATE);
  compare->set_result(pb::Compare::EQUAL);
  compare->set_create_revision(0);  // Does not exist.
  auto* put = request.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  request.add_failure()->mutable_request_range()->set_key(key);
  pb::TxnResponse response;
  auto done = call(options_, "Txn", [&](grpc::ClientContext& c) { return stubs_->kv->Txn(&c, request, &response); });
  if (!done) return done.error();
  create_result result;
  result.created = response.succeeded();
  result.revision = response.header().revision();
  if (!result.created && response.responses_size() > 0 && response.responses(0).response_range().kvs_size() > 0) {
    result.existing = from(response.responses(0).response_range().kvs(0));
  }
  return result;
}

expected<bool> etcd_client::erase_if(const std::string& key, std::int64_t mod_revision) {
  pb::TxnRequest request;
  auto* compare = request.add_compare();
  compare->set_key(key);
  compare->set_target(pb::Compare::MOD);
  compare->set_result(pb::Compare::EQUAL);
  compare->set_mod_revision(mod_revision);
  request.add_success()->mutable_request_delete_range()->set_key(key);
  pb::TxnResponse response;
  auto done = call(options_, "Txn", [&](grpc::ClientContext& c) { return stubs_->kv->Txn(&c, request, &response); });
  if (!done) return done.error();
  return response.succeeded();
}

// ------------------------------------------------------------------ leases

lease_keeper::lease_keeper(etcd_client& client, std::int64_t lease, std::chrono::seconds ttl,
                           steady::time_point granted_at)
    : client_(client), lease_(lease), ttl_(ttl), held_until_ns_(steady_ns(granted_at + ttl)) {
  thread_ = std::thread([this] { run(); });
}

lease_keeper::~lease_keeper() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (context_) static_cast<grpc::ClientContext*>(context_.get())->TryCancel();
  }
  changed_.notify_all();
  thread_.join();
}

steady::time_point lease_keeper::held_until() const {
  return steady::time_point(std::chrono::nanoseconds(held_until_ns_.load()));
}

void lease_keeper::run() {
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(ttl_) / 3;
  std::unique_lock lock(mutex_);
  while (!stopping_ && !lost_) {
    auto owned = std::make_shared<grpc::ClientContext>();
    context_ = owned;
    lock.unlock();
    {
      // One stream while it works; each renewal is one write and one read.
      auto& context = *owned;
      auto stream = client_.stubs_->lease->LeaseKeepAlive(&context);
      for (;;) {
        const auto sent = steady::now();
        pb::LeaseKeepAliveRequest request;
        request.set_id(lease_);
        pb::LeaseKeepAliveResponse response;
        if (!stream->Write(request) || !stream->Read(&response)) break;
        if (response.ttl() <= 0) {
          spdlog::warn("etcd lease {:x} is gone", lease_);
          lost_ = true;
          break;
        }
        // etcd restarted the TTL no earlier than we sent the renewal.
        held_until_ns_ = steady_ns(sent + std::chrono::seconds(response.ttl()));
        spdlog::debug("etcd lease {:x} renewed (sent {} ms ago; TTL {} s)", lease_,
                      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - sent).count(),
                      response.ttl());
        // The next renewal a period after this one was sent (not after its answer),
        // so that a slow etcd does not stretch the gap between renewals.
        std::unique_lock wait(mutex_);
        if (changed_.wait_until(wait, sent + period, [this] { return stopping_; })) break;
      }
      context.TryCancel();
      stream->Finish();
    }
    lock.lock();
    context_.reset();
    if (!stopping_ && !lost_) changed_.wait_for(lock, reconnect_delay, [this] { return stopping_; });
  }
}

// ------------------------------------------------------------------ watches

prefix_watch::prefix_watch(etcd_client& client, std::string prefix, std::int64_t after_revision,
                           events_callback on_events, reset_callback on_reset)
    : client_(client), prefix_(std::move(prefix)), next_revision_(after_revision + 1),
      on_events_(std::move(on_events)), on_reset_(std::move(on_reset)) {
  thread_ = std::thread([this] { run(); });
}

prefix_watch::~prefix_watch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (context_) static_cast<grpc::ClientContext*>(context_.get())->TryCancel();
  }
  thread_.join();
}

void prefix_watch::run() {
  for (;;) {
    auto context = std::make_shared<grpc::ClientContext>();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      context_ = context;
    }
    auto stream = client_.stubs_->watch->Watch(context.get());
    pb::WatchRequest request;
    auto* create = request.mutable_create_request();
    create->set_key(prefix_);
    create->set_range_end(prefix_end(prefix_));
    create->set_start_revision(next_revision_);
    if (stream->Write(request)) {
      pb::WatchResponse response;
      while (stream->Read(&response)) {
        if (response.compact_revision() != 0) {
          spdlog::warn("etcd compacted what the watch of '{}' needed; listing again", prefix_);
          next_revision_ = on_reset_() + 1;
          break;
        }
        if (response.canceled()) break;
        if (response.events_size() == 0) continue;
        std::vector<watch_event> events;
        events.reserve(static_cast<std::size_t>(response.events_size()));
        std::int64_t revision = 0;
        for (const auto& e : response.events()) {
          events.push_back({e.type() == pb::Event::DELETE, from(e.kv())});
          revision = std::max(revision, e.kv().mod_revision());
        }
        on_events_(events, revision);
        next_revision_ = revision + 1;
      }
    }
    context->TryCancel();
    stream->Finish();
    {
      std::lock_guard lock(mutex_);
      context_.reset();
      if (stopping_) return;
    }
    std::this_thread::sleep_for(reconnect_delay);
  }
}

}  // namespace dtsd::cluster
