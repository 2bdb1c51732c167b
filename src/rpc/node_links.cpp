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
#include "rpc/node_wire.hpp"
#include "rpc/tls_context.hpp"
#include "rpc/work_filters_wire.hpp"
#include "sdk/errors.hpp"

namespace dtsd::rpc {

namespace s = dtsd::schema;

namespace {

using node_wire::text;

/// The transport of one connection: shared with the promise that makes it, which
/// may outlive the connection's entry (calls in flight hold the link).
struct transport {
  kj::Own<kj::TlsContext> tls;  ///< With TLS: outlives the stream it wraps.
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
  std::string token;
  client_tls tls;
  std::thread thread;
  kj::Own<const kj::Executor> executor;
  std::shared_ptr<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop;
  std::mutex stop_mutex;  ///< Only around stopping (never held while the loop is asked anything).
  std::atomic<bool> closed{false};  ///< Stopped, or stopping: nothing new is taken.

  // Loop thread only.
  bool tearing_down = false;
  kj::AsyncIoProvider* io = nullptr;
  std::map<std::string, kj::Own<connection>> connections;
  std::uint64_t generations = 0;
  log_failures errors;
  kj::Maybe<kj::TaskSet&> tasks;

  /// Runs `send` on the loop thread with the link to `address`. A failure reaches
  /// `failed` (if any); one of the connection itself also marks it broken, so that
  /// the next call makes it again.
  void with_link(const std::string& address, const std::function<kj::Promise<void>(s::NodeLink::Client&)>& send,
                 std::function<void(const kj::Exception&)> failed = {}) {
    bool taken = false;
    on_loop([&] {
      if (tearing_down) return;
      auto& link = link_to(address);
      KJ_IF_MAYBE(client, link.link) {
        KJ_IF_MAYBE(set, tasks) {
          taken = true;
          set->add(send(*client).catch_([failed = std::move(failed)](kj::Exception&& e) {
            if (failed) failed(e);
          }));
        }
      }
    });
    if (!taken && failed) failed(KJ_EXCEPTION(DISCONNECTED, "dtsd is stopping"));
  }

  /// Runs `work` on the loop thread (inline when called there) and answers whether
  /// it ran: not once the loop stopped. No lock is held meanwhile, so the loop's own
  /// callbacks may call back in.
  bool on_loop(const std::function<void()>& work) {
    if (closed.load()) return false;
    try {
      executor->executeSync(work);
      return true;
    } catch (const kj::Exception&) {
      return false;  // The loop has ended.
    }
  }

  /// The connection (of `generation`) to `address` broke: the next call makes a new one.
  void mark_broken(const std::string& address, std::uint64_t generation, const kj::Exception& why) {
    auto found = connections.find(address);
    if (found == connections.end() || found->second->generation != generation || found->second->broken) return;
    found->second->broken = true;
    spdlog::warn("cluster: the link to {} broke ({}); it is made again on the next call", address,
                 why.getDescription().cStr());
  }

  /// Sessions opened at other nodes for this node's workers, by handle.
  struct remote_session {
    kj::Maybe<s::WorkerSession::Client> session;
    std::string address;
    std::uint64_t generation = 0;  ///< Of the connection it was opened on.
    std::shared_ptr<std::atomic<bool>> ended = std::make_shared<std::atomic<bool>>(false);
  };
  std::map<std::uint64_t, remote_session> sessions;
  std::uint64_t next_session = 1;

  /// Forwarded waits not answered yet, by handle: cancelling one drops its call
  /// and answers nothing.
  struct pending_wait {
    kj::Own<kj::Canceler> canceler;
    std::shared_ptr<std::atomic<bool>> cancelled;
  };
  std::map<std::uint64_t, pending_wait> awaits;

  /// The connection to `address`, made now if there is none or it broke.
  connection& link_to(const std::string& address) {
    auto found = connections.find(address);
    if (found != connections.end() && !found->second->broken) return *found->second;
    auto made = kj::heap<connection>();
    made->generation = ++generations;
    auto* c = made.get();
    auto wire = c->wire;
    const auto generation = made->generation;
    auto linked = connect(io->getNetwork(), address, tls, wire->tls)
                      .then([this, wire, address, generation,
                             id = node_id, token = token](kj::Own<kj::AsyncIoStream> stream) -> s::NodeLink::Client {
                        wire->stream = kj::mv(stream);
                        wire->rpc = kj::heap<capnp::TwoPartyClient>(*wire->stream);
                        // The connection's end, however it comes, breaks the link.
                        KJ_IF_MAYBE(set, tasks) {
                          set->add(wire->rpc->onDisconnect().then([this, address, generation] {
                            mark_broken(address, generation, KJ_EXCEPTION(DISCONNECTED, "the connection ended"));
                          }));
                        }
                        auto request = wire->rpc->bootstrap().castAs<s::Scheduler>().nodeLinkRequest();
                        request.setFromNode(text(id));
                        request.setToken(text(token));
                        return request.send().getLink();
                      });
    // A link that cannot be made (no address, no connection, refused) breaks too;
    // a failed call on a working link does not.
    auto forked = linked.fork();
    c->link = s::NodeLink::Client(forked.addBranch());
    KJ_IF_MAYBE(set, tasks) {
      set->add(forked.addBranch().ignoreResult().catch_([this, address, generation](kj::Exception&& e) {
        mark_broken(address, generation, e);
      }));
    }
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
    ready.set_value();
    stopped.promise.wait(async_io.waitScope);
    tearing_down = true;
    awaits.clear();
    sessions.clear();
    tasks = nullptr;
    connections.clear();
  }
};

expected<std::unique_ptr<node_links>> node_links::start(std::string node_id, std::string token, client_tls tls) {
  if (tls.enabled()) {
    // Read once now, so that a file that does not fit stops the node at start with
    // its name (each link reads them again when it connects: renewed files count).
    try {
      client_tls_context(tls);
    } catch (const kj::Exception& failure) {
      return error{errc::invalid_argument,
                   fmt::format("the TLS files for the links to other nodes: {}", failure.getDescription().cStr())};
    }
  }
  auto running = std::make_unique<loop>();
  running->node_id = std::move(node_id);
  running->token = std::move(token);
  running->tls = std::move(tls);
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

node_links::~node_links() { stop(); }

void node_links::stop() {
  std::lock_guard lock(loop_->stop_mutex);
  if (loop_->closed.exchange(true)) return;
  if (loop_->stop) (*loop_->stop)->fulfill();
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

namespace dtsd::rpc {

namespace {
/// What a forwarded call's failure says to its caller: the other node's own answer,
/// or (the link failed: that node is down, cut off or stopping) UNAVAILABLE, which
/// callers retry: its partitions move to a live node once its lease runs out.
constexpr std::string_view unreachable = "the node that serves it cannot be reached";

dtsd::error link_error(const kj::Exception& failure) {
  const std::string text = failure.getDescription().cStr();
  if (text.rfind("remote exception: ", 0) == 0) return sdk::error_of_text(text);
  if (failure.getType() != kj::Exception::Type::DISCONNECTED && failure.getType() != kj::Exception::Type::OVERLOADED) {
    return sdk::error_of_text(text);  // A failure of this node's own (retrying would not help).
  }
  return dtsd::error{errc::unavailable, fmt::format("{} ({}); its partitions move to another node once its lease "
                                                    "runs out: try again shortly",
                                                    unreachable, text)};
}

template <class T>
std::function<void(const kj::Exception&)> fail_to(service::callback<T> done) {
  return [done = std::move(done)](const kj::Exception& failure) { done(link_error(failure)); };
}
}  // namespace

bool is_link_failure(const dtsd::error& failure) {
  return failure.code == errc::unavailable && failure.message.rfind(unreachable, 0) == 0;
}

void node_links::start(const std::string& address, const std::string& hub, const core::start_request& request,
                       service::callback<service::started> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.startRequest();
        call.setTaskHub(text(hub));
        codec::wire::write(call.initRequest(), request);
        return call.send().then([done](auto response) {
          done(service::started{text(response.getInstanceId()), text(response.getExecutionId())});
        });
      },
      fail_to(done));
}

void node_links::read(const std::string& address, const std::string& hub, const std::string& instance_id,
                      bool with_history, service::callback<std::optional<service::instance_view>> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.readRequest();
        call.setTaskHub(text(hub));
        call.setInstanceId(text(instance_id));
        call.setWithHistory(with_history);
        return call.send().then([done](auto response) {
          if (!response.getFound()) return done(std::optional<service::instance_view>());
          service::instance_view view{codec::wire::read(response.getRecord()), {}};
          for (auto event : response.getHistory()) view.history.push_back(codec::wire::read(event));
          done(std::optional<service::instance_view>(std::move(view)));
        });
      },
      fail_to(done));
}

std::uint64_t node_links::await(const std::string& address, const std::string& hub, const std::string& instance_id,
                                bool until_completed, service::callback<core::instance_record> done) {
  static std::atomic<std::uint64_t> next_handle{1};
  const auto handle = next_handle++;
  auto* l = loop_.get();
  // A cancelled wait answers nothing: its caller gave up.
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  auto answer = [done, cancelled](expected<core::instance_record> record) {
    if (!cancelled->load()) done(std::move(record));
  };
  l->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.awaitRequest();
        call.setTaskHub(text(hub));
        call.setInstanceId(text(instance_id));
        call.setUntilCompleted(until_completed);
        auto canceler = kj::heap<kj::Canceler>();
        auto waiting = canceler->wrap(call.send().then([answer](auto response) {
          answer(codec::wire::read(response.getRecord()));
        }));
        l->awaits[handle] = loop::pending_wait{kj::mv(canceler), cancelled};
        // Its canceler goes once it is answered (later: not from inside its own continuation).
        return waiting.then([l, handle] { return kj::evalLater([l, handle] { l->awaits.erase(handle); }); },
                            [l, handle](kj::Exception&& failure) -> kj::Promise<void> {
                              return kj::evalLater([l, handle, failure = kj::mv(failure)]() mutable -> kj::Promise<void> {
                                l->awaits.erase(handle);
                                return kj::mv(failure);
                              });
                            });
      },
      [answer, cancelled](const kj::Exception& failure) {
        if (!cancelled->load()) answer(link_error(failure));
      });
  return handle;
}

void node_links::cancel_await(std::uint64_t handle) {
  auto* l = loop_.get();
  l->on_loop([l, handle] {
    if (auto found = l->awaits.find(handle); found != l->awaits.end()) {
      found->second.cancelled->store(true);
      found->second.canceler->cancel("the waiter gave up");
      l->awaits.erase(found);
    }
  });
}

void node_links::apply(const std::string& address, const std::string& hub, const service::change& change,
                       service::callback<void> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.applyRequest();
        call.setTaskHub(text(hub));
        node_wire::write(call.initChange(), change);
        return call.send().then([done](auto) { done(expected<void>()); });
      },
      fail_to(done));
}

void node_links::purge(const std::string& address, const std::string& hub, const std::string& instance_id,
                       bool children, service::callback<service::purge_step> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.purgeRequest();
        call.setTaskHub(text(hub));
        call.setInstanceId(text(instance_id));
        call.setChildren(children);
        return call.send().then([done](auto response) {
          service::purge_step step{response.getPurged(), {}};
          for (auto child : response.getChildren()) step.children.push_back(text(child));
          done(std::move(step));
        });
      },
      fail_to(done));
}

void node_links::query(const std::string& address, const std::string& hub, std::uint32_t partition,
                       const core::instance_query& query, service::callback<core::query_page> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.queryRequest();
        call.setTaskHub(text(hub));
        call.setPartition(partition);
        node_wire::write(call.initQuery(), query);
        return call.send().then([done](auto response) {
          core::query_page page;
          for (auto record : response.getInstances()) page.instances.push_back(codec::wire::read(record));
          page.continuation_token = text(response.getContinuationToken());
          done(std::move(page));
        });
      },
      fail_to(done));
}

void node_links::list(const std::string& address, const std::string& hub, std::uint32_t partition,
                      const core::list_query& query, service::callback<core::list_page> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.listRequest();
        call.setTaskHub(text(hub));
        call.setPartition(partition);
        node_wire::write(call.initQuery(), query);
        return call.send().then([done](auto response) { done(node_wire::read(response.getPage())); });
      },
      fail_to(done));
}

void node_links::retention(const std::string& address, const std::string& hub, std::uint32_t partition, bool set,
                           const std::optional<core::retention_policy>& policy,
                           service::callback<service::retention_view> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.retentionRequest();
        call.setTaskHub(text(hub));
        call.setPartition(partition);
        call.setSet(set);
        call.setHasPolicy(policy.has_value());
        if (policy) call.setPolicy(text(core::to_json(*policy)));
        return call.send().then([done](auto response) {
          auto policy = core::retention_from_json(response.getPolicy().cStr());
          if (!policy) return done(policy.error());
          done(service::retention_view{std::move(*policy), response.getOwn()});
        });
      },
      fail_to(done));
}

void node_links::schedule(const std::string& address, const std::string& hub, std::uint32_t partition,
                          const core::schedule_command& command,
                          service::callback<std::vector<core::schedule>> done) {
  loop_->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        auto call = link.scheduleRequest();
        call.setTaskHub(text(hub));
        call.setPartition(partition);
        call.setCommand(text(core::to_json(command)));
        return call.send().then([done](auto response) { done(core::schedules_from_json(response.getSchedules().cStr())); });
      },
      fail_to(done));
}

namespace {

/// This node's end of a session opened at another node: pushes go to the local
/// worker's sink. Keep-alives are answered while the session stands here (the
/// worker's own liveness is checked by this node; its leases there still expire).
class relay_sink final : public s::WorkSink::Server {
 public:
  relay_sink(std::shared_ptr<service::work_sink> sink, std::shared_ptr<std::atomic<bool>> ended)
      : sink_(std::move(sink)), ended_(std::move(ended)) {}

  kj::Promise<void> push(PushContext context) override {
    std::vector<service::work_item> items;
    for (auto item : context.getParams().getItems()) {
      if (item.isOrchestrator()) {
        items.emplace_back(codec::wire::read(item.getOrchestrator()));
      } else {
        auto [request, token] = codec::wire::read(item.getActivity());
        items.emplace_back(core::activity_work_item{std::move(request), token});
      }
    }
    if (!items.empty()) sink_->push(std::move(items));
    return kj::READY_NOW;
  }
  kj::Promise<void> keepAlive(KeepAliveContext) override { return kj::READY_NOW; }
  kj::Promise<void> end(EndContext context) override {
    spdlog::info("cluster: a node ended a relayed worker session: {}", context.getParams().getReason().cStr());
    ended_->store(true);
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<service::work_sink> sink_;
  std::shared_ptr<std::atomic<bool>> ended_;
};

}  // namespace

std::uint64_t node_links::open_session(const std::string& address, const std::string& hub,
                                       service::session_slots slots, const core::work_filters& filters,
                                       const std::string& worker, std::shared_ptr<service::work_sink> sink) {
  auto* l = loop_.get();
  std::uint64_t handle = 0;
  auto ended = std::make_shared<std::atomic<bool>>(false);
  l->with_link(
      address,
      [&](s::NodeLink::Client& link) {
        handle = l->next_session++;
        auto& opened = l->sessions[handle];
        opened.address = address;
        opened.generation = l->connections.at(address)->generation;
        opened.ended = ended;
        auto call = link.openSessionRequest();
        call.setTaskHub(text(hub));
        call.setOrchestratorSlots(slots.orchestrators);
        call.setActivitySlots(slots.activities);
        call.setEntitySlots(slots.entities);
        rpc_wire::write(call.initFilters(), filters);
        call.setWorker(text(worker));
        call.setSink(kj::heap<relay_sink>(std::move(sink), opened.ended));
        auto response = call.send();
        opened.session = response.getSession();
        // Refused (the hub is unknown there, say): the session ends; it is tried again.
        return response.ignoreResult();
      },
      [ended](const kj::Exception& failure) {
        // Refused, or its link broke: it is opened again (forwarding_router::maintain).
        if (!ended->exchange(true)) {
          spdlog::warn("cluster: a relayed worker session ended: {}", failure.getDescription().cStr());
        }
      });
  return handle;
}

bool node_links::session_stands(std::uint64_t handle) {
  auto* l = loop_.get();
  bool stands = false;
  l->on_loop([&] {
    auto found = l->sessions.find(handle);
    if (found == l->sessions.end() || found->second.ended->load()) return;
    auto link = l->connections.find(found->second.address);
    stands = link != l->connections.end() && !link->second->broken &&
             link->second->generation == found->second.generation;
  });
  return stands;
}

namespace {
template <class Call>
void on_session(node_links::loop& l, std::uint64_t handle, Call call, std::function<void(const kj::Exception&)> failed) {
  bool taken = false;
  l.on_loop([&] {
    auto found = l.sessions.find(handle);
    if (found == l.sessions.end() || l.tearing_down) return;
    KJ_IF_MAYBE(session, found->second.session) {
      KJ_IF_MAYBE(set, l.tasks) {
        taken = true;
        set->add(call(*session).catch_([failed](kj::Exception&& e) {
          if (failed) failed(e);
        }));
      }
    }
  });
  if (!taken && failed) failed(KJ_EXCEPTION(DISCONNECTED, "the relayed session is closed"));
}
}  // namespace

void node_links::complete_orchestrator(std::uint64_t handle, const core::orchestrator_completion& completion,
                                       service::callback<void> done) {
  on_session(
      *loop_, handle,
      [&](s::WorkerSession::Client& session) {
        auto call = session.completeOrchestratorRequest();
        codec::wire::write(call.initCompletion(), completion);
        return call.send().then([done](auto) { done(expected<void>()); });
      },
      fail_to(done));
}

void node_links::complete_activity(std::uint64_t handle, const core::activity_result& result,
                                   service::callback<void> done) {
  on_session(
      *loop_, handle,
      [&](s::WorkerSession::Client& session) {
        auto call = session.completeActivityRequest();
        codec::wire::write(call.initCompletion(), result);
        return call.send().then([done](auto) { done(expected<void>()); });
      },
      fail_to(done));
}

void node_links::abandon(std::uint64_t handle, std::uint64_t token) {
  on_session(
      *loop_, handle,
      [&](s::WorkerSession::Client& session) {
        auto call = session.abandonOrchestratorRequest();
        call.setCompletionToken(token);
        return call.send().ignoreResult();
      },
      {});
}

void node_links::close_session(std::uint64_t handle) {
  auto* l = loop_.get();
  l->on_loop([l, handle] { l->sessions.erase(handle); });
}

}  // namespace dtsd::rpc
