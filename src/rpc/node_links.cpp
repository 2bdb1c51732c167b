#include "rpc/node_links.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/thread.h>
#include <spdlog/spdlog.h>

#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "rpc.capnp.h"

namespace dtsd::rpc {

namespace s = dtsd::schema;

namespace {

capnp::Text::Reader text(const std::string& value) { return {value.data(), value.size()}; }

/// The transport of one connection: shared with the promise that makes it, which
/// may outlive the connection's entry (calls in flight hold the link).
struct transport {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
};

/// One node's connection, on the loop thread.
struct connection {
  std::uint64_t generation = 0;
  std::shared_ptr<transport> wire = std::make_shared<transport>();
  kj::Maybe<s::NodeLink::Client> link;
  bool broken = false;
};

struct log_failures final : public kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& failure) override {
    spdlog::debug("cluster: a node link send failed: {}", failure.getDescription().cStr());
  }
};

}  // namespace

struct node_links::loop {
  std::string node_id;
  std::thread thread;
  kj::Own<const kj::Executor> executor;
  std::shared_ptr<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop;
  std::mutex mutex;  ///< Guards `running` against the loop's end.
  bool running = false;

  // Loop thread only.
  kj::AsyncIoProvider* io = nullptr;
  std::map<std::string, kj::Own<connection>> connections;
  std::uint64_t generations = 0;
  log_failures errors;
  kj::Maybe<kj::TaskSet&> tasks;

  /// Runs `send` on the loop thread with the link to `address`.
  void with_link(const std::string& address, std::function<kj::Promise<void>(s::NodeLink::Client&)> send) {
    std::lock_guard lock(mutex);
    if (!running) return;
    executor->executeSync([&] {
      auto& link = link_to(address);
      auto generation = link.generation;
      KJ_IF_MAYBE(client, link.link) {
        KJ_IF_MAYBE(set, tasks) {
          set->add(send(*client).catch_([this, address, generation](kj::Exception&& failure) {
            auto found = connections.find(address);
            if (found != connections.end() && found->second->generation == generation && !found->second->broken) {
              found->second->broken = true;
              spdlog::warn("cluster: the link to {} broke ({}); it is made again on the next message", address,
                           failure.getDescription().cStr());
            }
          }));
        }
      }
    });
  }

  /// The connection to `address`, made now if there is none or it broke.
  connection& link_to(const std::string& address) {
    auto found = connections.find(address);
    if (found != connections.end() && !found->second->broken) return *found->second;
    auto made = kj::heap<connection>();
    made->generation = ++generations;
    auto* c = made.get();
    auto wire = c->wire;
    auto linked = io->getNetwork()
                      .parseAddress(address, 8081)
                      .then([](kj::Own<kj::NetworkAddress> resolved) {
                        auto connecting = resolved->connect();
                        return connecting.attach(kj::mv(resolved));
                      })
                      .then([wire, id = node_id](kj::Own<kj::AsyncIoStream> stream) -> s::NodeLink::Client {
                        wire->stream = kj::mv(stream);
                        wire->rpc = kj::heap<capnp::TwoPartyClient>(*wire->stream);
                        auto request = wire->rpc->bootstrap().castAs<s::Scheduler>().nodeLinkRequest();
                        request.setFromNode(text(id));
                        return request.send().getLink();
                      });
    c->link = s::NodeLink::Client(kj::mv(linked));
    if (found != connections.end()) {
      found->second = kj::mv(made);  // The broken one goes (its calls have failed already).
    } else {
      connections.emplace(address, kj::mv(made));
    }
    return *c;
  }

  void run(std::promise<void>& ready) {
    auto async_io = kj::setupAsyncIo();
    io = async_io.provider.get();
    kj::TaskSet set(errors);
    tasks = set;
    executor = kj::getCurrentThreadExecutor().addRef();
    auto stopped = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(stopped.fulfiller));
    {
      std::lock_guard lock(mutex);
      running = true;
    }
    ready.set_value();
    stopped.promise.wait(async_io.waitScope);
    tasks = nullptr;
    connections.clear();
  }
};

expected<std::unique_ptr<node_links>> node_links::start(std::string node_id) {
  auto running = std::make_unique<loop>();
  running->node_id = std::move(node_id);
  std::promise<void> ready;
  auto started = ready.get_future();
  running->thread = std::thread([l = running.get(), &ready] {
    try {
      l->run(ready);
    } catch (const kj::Exception& failure) {
      spdlog::error("cluster: the node link loop ended: {}", failure.getDescription().cStr());
      try {
        ready.set_value();
      } catch (const std::future_error&) {
      }
    }
  });
  started.wait();
  return std::unique_ptr<node_links>(new node_links(std::move(running)));
}

node_links::node_links(std::unique_ptr<loop> running) : loop_(std::move(running)) {}

node_links::~node_links() {
  {
    std::lock_guard lock(loop_->mutex);
    loop_->running = false;
    if (loop_->stop) (*loop_->stop)->fulfill();
  }
  if (loop_->thread.joinable()) loop_->thread.join();
}

void node_links::deliver(const std::string& address, const std::string& hub, std::uint32_t partition,
                         std::string entry) {
  loop_->with_link(address, [&](s::NodeLink::Client& link) {
    auto request = link.deliverRequest();
    request.setTaskHub(text(hub));
    request.setPartition(partition);
    request.setEntry(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(entry.data()), entry.size()));
    return request.send().ignoreResult();
  });
}

void node_links::receipt(const std::string& address, const std::string& hub, std::uint32_t partition,
                         std::uint32_t from, std::uint64_t sequence) {
  loop_->with_link(address, [&](s::NodeLink::Client& link) {
    auto request = link.receiptRequest();
    request.setTaskHub(text(hub));
    request.setPartition(partition);
    request.setFrom(from);
    request.setSequence(sequence);
    return request.send().ignoreResult();
  });
}

}  // namespace dtsd::rpc
