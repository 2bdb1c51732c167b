#include "auth/authority.hpp"
#include "rpc/capnp_server.hpp"
#include "rpc/node_wire.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "core/ids.hpp"
#include "core/orchestration.hpp"
#include "rpc.capnp.h"
#include "rpc/tls_context.hpp"
#include "rpc/work_filters_wire.hpp"
#include "codec/wire.hpp"

namespace dtsd::rpc {
namespace {

namespace s = dtsd::schema;
namespace wire = dtsd::codec::wire;

std::string text(capnp::Text::Reader value) { return {value.cStr(), value.size()}; }
capnp::Text::Reader text(const std::string& value) { return {value.data(), value.size()}; }
core::payload optional_text(bool has, capnp::Text::Reader value) {
  return has ? core::payload(text(value)) : core::payload();
}

/// Errors travel as exceptions whose description starts with the error code.
[[noreturn]] void fail(const dtsd::error& failure) {
  throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                      kj::str(to_string(failure.code), ": ", failure.message.c_str()));
}

/// A promise on the loop thread that an actor thread fulfills with the answer.
template <class T>
struct pending_answer {
  kj::Promise<expected<T>> promise;
  service::callback<T> callback;
};

template <class T>
pending_answer<T> answer() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<expected<T>>();
  auto fulfiller =
      std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<expected<T>>>>(kj::mv(paf.fulfiller));
  return {kj::mv(paf.promise),
          [fulfiller](expected<T> result) { (*fulfiller)->fulfill(std::move(result)); }};
}

template <class T>
T value_or_fail(expected<T> result) {
  if (!result) fail(result.error());
  return std::move(result).value();
}
inline void value_or_fail(expected<void> result) {
  if (!result) fail(result.error());
}

/// A call's (found, record, history) results, from an instance view.
template <class Results>
void write_view(Results results, const std::optional<service::instance_view>& view) {
  results.setFound(view.has_value());
  if (!view) return;
  wire::write(results.initRecord(), view->record);
  auto history = results.initHistory(static_cast<unsigned>(view->history.size()));
  for (unsigned i = 0; i < view->history.size(); ++i) wire::write(history[i], view->history[i]);
}

/// A call's (instances, continuationToken) results, from a query page.
template <class Results>
void write_page(Results results, const core::query_page& page) {
  auto list = results.initInstances(static_cast<unsigned>(page.instances.size()));
  for (unsigned i = 0; i < page.instances.size(); ++i) wire::write(list[i], page.instances[i]);
  results.setContinuationToken(text(page.continuation_token));
}

struct error_log final : public kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& failure) override {
    spdlog::info("a worker stopped taking pushes: {}", failure.getDescription().cStr());
  }
};

/// The kj side of a session's pushes. Lives on the loop thread, owned by the
/// session, and dies there.
struct sink_channel {
  explicit sink_channel(s::WorkSink::Client client) : sink(kj::mv(client)), tasks(errors) {}
  s::WorkSink::Client sink;
  error_log errors;
  kj::TaskSet tasks;
};

/// What the actors hold of a session. push() and keep_alive() run on actor threads
/// and never block: they queue, and wake the loop thread's drain through a
/// cross-thread fulfiller; the drain sends everything queued as one push.
class capnp_work_sink final : public service::work_sink,
                              public std::enable_shared_from_this<capnp_work_sink> {
 public:
  ~capnp_work_sink() noexcept override {}

  void push(std::vector<service::work_item> items) override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    std::move(items.begin(), items.end(), std::back_inserter(queue_));
    wake_locked();
  }

  void keep_alive() override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    keep_alive_due_ = true;
    wake_locked();
  }

  void end(const std::string& why) override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    queue_.clear();
    end_reason_ = why;
    wake_locked();
  }

  /// Runs (on the loop thread) when the worker answers a keep-alive.
  void on_keep_alive_answered(std::function<void()> alive) { alive_ = std::move(alive); }

  /// On the loop thread: sends what is queued, then waits for more.
  kj::Promise<void> drain(sink_channel& channel) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard lock(mutex_);
      if (closed_) return kj::READY_NOW;
      if (queue_.empty() && !keep_alive_due_ && !end_reason_) {
        wake_ = kj::mv(paf.fulfiller);
      } else {
        paf.fulfiller->fulfill();
      }
    }
    return paf.promise.then([self = shared_from_this(), &channel]() -> kj::Promise<void> {
      std::vector<service::work_item> items;
      bool keep_alive = false;
      std::optional<std::string> ended;
      {
        std::lock_guard lock(self->mutex_);
        if (self->closed_) return kj::READY_NOW;
        items.swap(self->queue_);
        keep_alive = std::exchange(self->keep_alive_due_, false);
        ended = std::exchange(self->end_reason_, std::nullopt);
        if (ended) self->closed_ = true;
      }
      if (ended) {
        auto request = channel.sink.endRequest();
        request.setReason(*ended);
        channel.tasks.add(request.send().ignoreResult());
        return kj::READY_NOW;
      }
      if (!items.empty()) send(channel, items);
      if (keep_alive) {
        channel.tasks.add(channel.sink.keepAliveRequest().send().then([self](auto&&) {
          if (self->alive_) self->alive_();
        }));
      }
      return self->drain(channel);
    });
  }

  /// On the loop thread, when the session ends: later pushes are dropped.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    queue_.clear();
    wake_ = nullptr;
  }

 private:
  void wake_locked() {
    if (wake_) {
      wake_->fulfill();
      wake_ = nullptr;
    }
  }

  static void send(sink_channel& channel, const std::vector<service::work_item>& items) {
    auto request = channel.sink.pushRequest();
    auto list = request.initItems(static_cast<unsigned>(items.size()));
    for (unsigned i = 0; i < items.size(); ++i) {
      if (const auto* orchestration = std::get_if<core::orchestrator_work_item>(&items[i])) {
        wire::write(list[i].initOrchestrator(), *orchestration);
      } else {
        const auto& activity = std::get<core::activity_work_item>(items[i]);
        wire::write(list[i].initActivity(), activity.request, activity.completion_token);
      }
    }
    channel.tasks.add(request.send());
  }

  std::mutex mutex_;
  std::vector<service::work_item> queue_;
  bool keep_alive_due_ = false;
  bool closed_ = false;
  std::optional<std::string> end_reason_;
  std::function<void()> alive_;  ///< Set before the session opens; read on the loop thread.
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_;
};

/// The verdicts of several answers sent in one call: `done` runs once with the
/// refused ones (instance id, why) when the last verdict is in. Verdicts arrive on
/// actor threads.
class verdict_tally : public std::enable_shared_from_this<verdict_tally> {
 public:
  using refusals = std::vector<std::pair<std::string, dtsd::error>>;
  verdict_tally(std::size_t count, service::callback<refusals> done) : remaining_(count), done_(std::move(done)) {}

  service::callback<void> verdict_for(std::string instance_id) {
    return [self = shared_from_this(), id = std::move(instance_id)](expected<void> verdict) mutable {
      refusals all;
      {
        std::lock_guard lock(self->mutex_);
        if (!verdict) self->refused_.emplace_back(std::move(id), std::move(verdict.error()));
        if (--self->remaining_ != 0) return;
        all.swap(self->refused_);
      }
      self->done_(std::move(all));
    };
  }

 private:
  std::mutex mutex_;
  std::size_t remaining_;
  refusals refused_;
  service::callback<refusals> done_;
};

/// A worker's session: of a client (over the service), or of another node's worker
/// that gets this node's work through it (over this node's own router).
template <class Scheduler>
class worker_session final : public s::WorkerSession::Server {
 public:
  worker_session(Scheduler& scheduler, s::WorkSink::Client sink)
      : scheduler_(scheduler),
        channel_(kj::heap<sink_channel>(kj::mv(sink))),
        sink_(std::make_shared<capnp_work_sink>()) {
    channel_->tasks.add(sink_->drain(*channel_));
  }

  expected<void> open(const std::string& hub, service::session_slots slots, core::work_filters filters,
                      std::string worker) {
    auto id = scheduler_.open_session(hub, slots, sink_, std::move(filters), std::move(worker));
    if (!id) return id.error();
    id_ = *id;
    sink_->on_keep_alive_answered([&scheduler = scheduler_, session = id_] { scheduler.session_alive(session); });
    return {};
  }

  /// With --auth: whether the session's token is still good (not expired or
  /// revoked). Checked on every answer and keep-alive; once it is not, the session
  /// is closed (its items go back, no more work comes) and its calls are refused.
  void check_with(std::function<expected<void>()> still_allowed) {
    still_allowed_ = std::move(still_allowed);
    sink_->on_keep_alive_answered([this, &scheduler = scheduler_, session = id_] {
      if (allowed()) scheduler.session_alive(session);
    });
  }

  /// The worker dropped the session or its connection: its items go back.
  ~worker_session() noexcept(false) {
    sink_->close();
    if (id_ != 0) scheduler_.close_session(id_);
  }

  kj::Promise<void> completeOrchestrator(CompleteOrchestratorContext context) override {
    require_allowed();
    auto completion = wire::read(context.getParams().getCompletion());
    auto pending = answer<void>();
    scheduler_.complete_orchestrator(id_, std::move(completion), pending.callback);
    return pending.promise.then([](expected<void> result) { value_or_fail(std::move(result)); });
  }

  kj::Promise<void> completeActivity(CompleteActivityContext context) override {
    require_allowed();
    auto result = wire::read(context.getParams().getCompletion());
    auto pending = answer<void>();
    scheduler_.complete_activity(id_, std::move(result), pending.callback);
    return pending.promise.then([](expected<void> outcome) { value_or_fail(std::move(outcome)); });
  }

  kj::Promise<void> completeMany(CompleteManyContext context) override {
    require_allowed();
    auto params = context.getParams();
    auto orchestrators = params.getOrchestrators();
    auto activities = params.getActivities();
    const std::size_t count = orchestrators.size() + activities.size();
    if (count == 0) return kj::READY_NOW;
    auto pending = answer<verdict_tally::refusals>();
    auto tally = std::make_shared<verdict_tally>(count, pending.callback);
    for (auto completion : orchestrators) {
      auto read = wire::read(completion);
      auto verdict = tally->verdict_for(read.instance_id);
      scheduler_.complete_orchestrator(id_, std::move(read), std::move(verdict));
    }
    for (auto completion : activities) {
      auto read = wire::read(completion);
      auto verdict = tally->verdict_for(read.instance_id);
      scheduler_.complete_activity(id_, std::move(read), std::move(verdict));
    }
    return pending.promise.then([context](expected<verdict_tally::refusals> result) mutable {
      auto refused = value_or_fail(std::move(result));
      auto list = context.getResults().initRefusals(static_cast<unsigned>(refused.size()));
      for (unsigned i = 0; i < refused.size(); ++i) {
        const auto& [id, why] = refused[i];
        list[i].setInstanceId(text(id));
        list[i].setError(text(std::string(to_string(why.code)) + ": " + why.message));
      }
    });
  }

  kj::Promise<void> abandonOrchestrator(AbandonOrchestratorContext context) override {
    require_allowed();
    auto params = context.getParams();
    scheduler_.abandon(id_, params.getCompletionToken());
    return kj::READY_NOW;
  }

  kj::Promise<void> abandonActivity(AbandonActivityContext context) override {
    require_allowed();
    auto [request, token] = wire::read(context.getParams().getItem());
    scheduler_.abandon(id_, token);
    return kj::READY_NOW;
  }

 private:
  /// False (and the session closed, once) when the token is no longer good.
  bool allowed() {
    if (!still_allowed_) return true;
    auto current = still_allowed_();
    if (current) return true;
    refusal_ = current.error();
    if (id_ != 0) {
      scheduler_.close_session(std::exchange(id_, 0));
      sink_->end(refusal_->message);  // The worker hears why.
    }
    return false;
  }
  void require_allowed() {
    if (!allowed()) fail(*refusal_);
  }

  Scheduler& scheduler_;
  std::uint64_t id_ = 0;
  kj::Own<sink_channel> channel_;
  std::shared_ptr<capnp_work_sink> sink_;
  std::function<expected<void>()> still_allowed_;
  std::optional<dtsd::error> refusal_;
};

/// Another node's link: its partitions' messages go to this node's partitions.
class node_link_service final : public s::NodeLink::Server {
 public:
  node_link_service(service::partition_host& peers, service::router& local) : peers_(peers), local_(local) {}

  // Calls forwarded by another node: served by this node's own partitions only.

  kj::Promise<void> start(StartContext context) override {
    auto p = context.getParams();
    auto pending = answer<service::started>();
    local_.start(text(p.getTaskHub()), wire::read(p.getRequest()), pending.callback);
    return pending.promise.then([context](expected<service::started> result) mutable {
      auto started = value_or_fail(std::move(result));
      context.getResults().setInstanceId(text(started.instance_id));
      context.getResults().setExecutionId(text(started.execution_id));
    });
  }

  kj::Promise<void> read(ReadContext context) override {
    auto p = context.getParams();
    auto pending = answer<std::optional<service::instance_view>>();
    local_.get(text(p.getTaskHub()), text(p.getInstanceId()), p.getWithHistory(), pending.callback);
    return pending.promise.then([context](expected<std::optional<service::instance_view>> result) mutable {
      write_view(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> await(AwaitContext context) override {
    auto p = context.getParams();
    auto hub = text(p.getTaskHub());
    auto id = text(p.getInstanceId());
    auto pending = answer<core::instance_record>();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    auto done = [answered, callback = pending.callback](expected<core::instance_record> record) {
      answered->store(true);
      callback(std::move(record));
    };
    const auto handle = local_.wait(hub, id, p.getUntilCompleted(), std::move(done));
    // The forwarding node gave up (its client cancelled): the wait is forgotten here too.
    auto forget = kj::defer([this, answered, hub, id, handle] {
      if (!answered->load()) local_.cancel_wait(hub, id, handle);
    });
    return pending.promise
        .then([context](expected<core::instance_record> result) mutable {
          wire::write(context.getResults().initRecord(), value_or_fail(std::move(result)));
        })
        .attach(kj::mv(forget));
  }

  kj::Promise<void> apply(ApplyContext context) override {
    auto p = context.getParams();
    auto pending = answer<void>();
    local_.change(text(p.getTaskHub()), node_wire::read(p.getChange()), pending.callback);
    return pending.promise.then([](expected<void> result) { value_or_fail(std::move(result)); });
  }

  kj::Promise<void> purge(PurgeContext context) override {
    auto p = context.getParams();
    auto pending = answer<service::purge_step>();
    local_.purge_one(text(p.getTaskHub()), text(p.getInstanceId()), p.getChildren(), pending.callback);
    return pending.promise.then([context](expected<service::purge_step> result) mutable {
      auto step = value_or_fail(std::move(result));
      auto results = context.getResults();
      results.setPurged(step.purged);
      auto children = results.initChildren(static_cast<unsigned>(step.children.size()));
      for (unsigned i = 0; i < step.children.size(); ++i) children.set(i, text(step.children[i]));
    });
  }

  kj::Promise<void> openSession(OpenSessionContext context) override {
    auto p = context.getParams();
    auto session = kj::heap<worker_session<service::router>>(local_, p.getSink());
    value_or_fail(session->open(text(p.getTaskHub()),
                                {p.getOrchestratorSlots(), p.getActivitySlots(), p.getEntitySlots()},
                                rpc_wire::read(p.getFilters()), text(p.getWorker())));
    context.getResults().setSession(kj::mv(session));
    return kj::READY_NOW;
  }

  kj::Promise<void> retention(RetentionContext context) override {
    auto p = context.getParams();
    std::optional<core::retention_policy> policy;
    if (p.getHasPolicy()) policy = value_or_fail(core::retention_from_json(text(p.getPolicy())));
    auto pending = answer<service::retention_view>();
    local_.retention_partition(text(p.getTaskHub()), p.getPartition(), p.getSet(), std::move(policy), pending.callback);
    return pending.promise.then([context](expected<service::retention_view> result) mutable {
      auto view = value_or_fail(std::move(result));
      context.getResults().setPolicy(text(core::to_json(view.policy)));
      context.getResults().setOwn(view.own);
    });
  }

  kj::Promise<void> schedule(ScheduleContext context) override {
    auto p = context.getParams();
    auto command = value_or_fail(core::schedule_command_from_json(text(p.getCommand())));
    auto pending = answer<std::vector<core::schedule>>();
    local_.schedule_partition(text(p.getTaskHub()), p.getPartition(), std::move(command), pending.callback);
    return pending.promise.then([context](expected<std::vector<core::schedule>> result) mutable {
      context.getResults().setSchedules(text(core::to_json(value_or_fail(std::move(result)))));
    });
  }

  kj::Promise<void> list(ListContext context) override {
    auto p = context.getParams();
    auto pending = answer<core::list_page>();
    local_.list_partition(text(p.getTaskHub()), p.getPartition(), node_wire::read(p.getQuery()), pending.callback);
    return pending.promise.then([context](expected<core::list_page> result) mutable {
      node_wire::write(context.getResults().initPage(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> query(QueryContext context) override {
    auto p = context.getParams();
    auto query = node_wire::read(p.getQuery());
    query.page_size = p.getQuery().getPageSize();  // As the forwarding node asked, already bounded there.
    auto pending = answer<core::query_page>();
    local_.query_partition(text(p.getTaskHub()), p.getPartition(), std::move(query), pending.callback);
    return pending.promise.then([context](expected<core::query_page> result) mutable {
      write_page(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> deliver(DeliverContext context) override {
    auto p = context.getParams();
    auto entry = p.getEntry();
    peers_.accept_delivery(text(p.getTaskHub()), p.getPartition(),
                           std::string(reinterpret_cast<const char*>(entry.begin()), entry.size()));
    return kj::READY_NOW;
  }

  kj::Promise<void> receipt(ReceiptContext context) override {
    auto p = context.getParams();
    peers_.accept_receipt(text(p.getTaskHub()), p.getPartition(), p.getFrom(), p.getSequence());
    return kj::READY_NOW;
  }

 private:
  service::partition_host& peers_;
  service::router& local_;
};

class scheduler_service final : public s::Scheduler::Server {
 public:
  scheduler_service(service::task_service& scheduler, service::partition_host* peers, service::router* local,
                    const auth::authority* authority, std::optional<auth::grant> grant = std::nullopt)
      : scheduler_(scheduler), peers_(peers), local_(local), authority_(authority), grant_(std::move(grant)) {}

  kj::Promise<void> authenticate(AuthenticateContext context) override {
    if (!authority_) {
      fail({errc::failed_precondition, "this dtsd runs without --auth: it takes no token"});
    }
    auto who = authority_->authenticate(text(context.getParams().getToken()));
    if (!who) fail(who.error());
    context.getResults().setScheduler(kj::heap<scheduler_service>(scheduler_, peers_, local_, authority_, *who));
    return kj::READY_NOW;
  }

  kj::Promise<void> nodeLink(NodeLinkContext context) override {
    if (!peers_ || !local_) {
      fail({errc::failed_precondition, "this dtsd is not a cluster node (it runs without --cluster)"});
    }
    if (authority_) {
      // Another node: its token grants every hub (see auth::authority::node_token).
      auto who = authority_->authenticate_node(text(context.getParams().getToken()));
      if (!who) {
        authority_->audit("native", "nodeLink", "", "", nullptr, &who.error());
        fail(who.error());
      }
    }
    spdlog::info("cluster: node '{}' linked", text(context.getParams().getFromNode()));
    context.getResults().setLink(kj::heap<node_link_service>(*peers_, *local_));
    return kj::READY_NOW;
  }

  kj::Promise<void> startInstance(StartInstanceContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "startInstance");
    auto params = context.getParams();
    auto request = wire::read(params.getRequest());
    if (request.replaceable_statuses.empty()) request.replaceable_statuses = core::terminal_statuses();
    auto pending = answer<service::started>();
    scheduler_.start(text(params.getTaskHub()), std::move(request), pending.callback);
    return pending.promise.then([context](expected<service::started> result) mutable {
      auto started = value_or_fail(std::move(result));
      auto results = context.getResults();
      results.setInstanceId(text(started.instance_id));
      results.setExecutionId(text(started.execution_id));
    });
  }

  kj::Promise<void> getInstance(GetInstanceContext context) override {
    require(auth::action::read, text(context.getParams().getTaskHub()), "getInstance",
            text(context.getParams().getInstanceId()));
    auto params = context.getParams();
    auto pending = answer<std::optional<service::instance_view>>();
    scheduler_.get(text(params.getTaskHub()), text(params.getInstanceId()), params.getWithHistory(),
                   pending.callback);
    return pending.promise.then([context](expected<std::optional<service::instance_view>> result) mutable {
      write_view(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> waitForInstance(WaitForInstanceContext context) override {
    require(auth::action::read, text(context.getParams().getTaskHub()), "waitForInstance",
            text(context.getParams().getInstanceId()));
    auto held = hold_stream();  // Counted against the token while the wait lasts.
    auto params = context.getParams();
    auto pending = answer<core::instance_record>();
    auto hub = text(params.getTaskHub());
    auto id = text(params.getInstanceId());
    const auto handle = scheduler_.wait(hub, id, params.getUntilCompleted(), pending.callback);
    // A client that cancels the call (or goes away) drops this promise: forget the wait.
    return pending.promise
        .then([context](expected<core::instance_record> result) mutable {
          wire::write(context.getResults().initRecord(), value_or_fail(std::move(result)));
        })
        .attach(kj::defer([this, hub, id, handle] { scheduler_.cancel_wait(hub, id, handle); }), kj::mv(held));
  }

  kj::Promise<void> raiseEvent(RaiseEventContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "raiseEvent",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    return change([&](auto done) {
      scheduler_.raise_event(text(p.getTaskHub()), text(p.getInstanceId()), text(p.getName()),
                             optional_text(p.hasInput(), p.getInput()), done);
    });
  }

  kj::Promise<void> terminate(TerminateContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "terminate",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    return change([&](auto done) {
      scheduler_.terminate(text(p.getTaskHub()), text(p.getInstanceId()),
                           {optional_text(p.hasReason(), p.getReason()), p.getRecurse()}, done);
    });
  }

  kj::Promise<void> suspend(SuspendContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "suspend",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    return change([&](auto done) {
      scheduler_.suspend(text(p.getTaskHub()), text(p.getInstanceId()),
                         optional_text(p.hasReason(), p.getReason()), done);
    });
  }

  kj::Promise<void> resume(ResumeContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "resume",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    return change([&](auto done) {
      scheduler_.resume(text(p.getTaskHub()), text(p.getInstanceId()),
                        optional_text(p.hasReason(), p.getReason()), done);
    });
  }

  kj::Promise<void> rewind(RewindContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "rewind",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    return change([&](auto done) {
      scheduler_.rewind(text(p.getTaskHub()), text(p.getInstanceId()),
                        optional_text(p.hasReason(), p.getReason()), done);
    });
  }

  kj::Promise<void> purge(PurgeContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "purge",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    auto pending = answer<std::size_t>();
    scheduler_.purge(text(p.getTaskHub()), text(p.getInstanceId()), p.getRecursive(), pending.callback);
    return pending.promise.then([context](expected<std::size_t> result) mutable {
      context.getResults().setPurged(value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> purgeWhere(PurgeWhereContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "purgeWhere");
    auto p = context.getParams();
    auto filter = read_query(p.getQuery());
    auto pending = answer<service::purge_result>();
    scheduler_.purge_where(text(p.getTaskHub()), std::move(filter), p.getRecursive(), std::nullopt, pending.callback);
    return pending.promise.then([context](expected<service::purge_result> result) mutable {
      context.getResults().setPurged(value_or_fail(std::move(result)).purged);
    });
  }

  static core::instance_query read_query(s::InstanceQuery::Reader q) { return node_wire::read(q); }

  kj::Promise<void> getRetention(GetRetentionContext context) override {
    const auto hub = text(context.getParams().getTaskHub());
    require(auth::action::read, hub, "getRetention");
    auto pending = answer<service::retention_view>();
    scheduler_.retention(hub, false, std::nullopt, pending.callback);
    return pending.promise.then([context](expected<service::retention_view> result) mutable {
      write_retention(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> setRetention(SetRetentionContext context) override {
    auto p = context.getParams();
    const auto hub = text(p.getTaskHub());
    require(auth::action::write, hub, "setRetention");
    std::optional<core::retention_policy> policy;
    if (p.getHasPolicy()) policy = value_or_fail(core::retention_from_json(text(p.getPolicy())));
    auto pending = answer<service::retention_view>();
    scheduler_.retention(hub, true, std::move(policy), pending.callback);
    return pending.promise.then([context](expected<service::retention_view> result) mutable {
      write_retention(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> schedule(ScheduleContext context) override {
    auto p = context.getParams();
    const auto hub = text(p.getTaskHub());
    auto command = value_or_fail(core::schedule_command_from_json(text(p.getCommand())));
    using verb = core::schedule_command::verb;
    const bool reads = command.what == verb::get || command.what == verb::list;
    require(reads ? auth::action::read : auth::action::write, hub,
            fmt::format("schedule.{}", core::to_string(command.what)), command.id);
    if (command.spec) value_or_fail(core::validate(*command.spec));
    auto pending = answer<std::vector<core::schedule>>();
    scheduler_.schedule(hub, std::move(command), pending.callback);
    return pending.promise.then([context](expected<std::vector<core::schedule>> result) mutable {
      context.getResults().setSchedules(text(core::to_json(value_or_fail(std::move(result)))));
    });
  }

  template <class Results>
  static void write_retention(Results results, const service::retention_view& view) {
    results.setPolicy(text(core::to_json(view.policy)));
    results.setOwn(view.own);
  }

  kj::Promise<void> query(QueryContext context) override {
    require(auth::action::read, text(context.getParams().getTaskHub()), "query");
    auto params = context.getParams();
    auto query = read_query(params.getQuery());
    auto pending = answer<core::query_page>();
    scheduler_.query(text(params.getTaskHub()), std::move(query), pending.callback);
    return pending.promise.then([context](expected<core::query_page> result) mutable {
      write_page(context.getResults(), value_or_fail(std::move(result)));
    });
  }

  kj::Promise<void> signalEntity(SignalEntityContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "signalEntity",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    service::entity_signal signal{text(p.getInstanceId()), text(p.getOperation()),
                                  optional_text(p.hasInput(), p.getInput()), p.getScheduledNs(), {}};
    return change([&](auto done) { scheduler_.signal_entity(text(p.getTaskHub()), std::move(signal), done); });
  }

  kj::Promise<void> restart(RestartContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "restart",
            text(context.getParams().getInstanceId()));
    auto p = context.getParams();
    auto pending = answer<std::string>();
    scheduler_.restart(text(p.getTaskHub()), text(p.getInstanceId()), p.getNewId(), pending.callback);
    return pending.promise.then([context](expected<std::string> result) mutable {
      context.getResults().setInstanceId(text(value_or_fail(std::move(result))));
    });
  }

  kj::Promise<void> cleanEntityStorage(CleanEntityStorageContext context) override {
    require(auth::action::write, text(context.getParams().getTaskHub()), "cleanEntityStorage");
    auto p = context.getParams();
    service::entity_clean_request request{p.getRemoveEmpty(), p.getReleaseOrphanedLocks(), text(p.getContinuationToken())};
    auto pending = answer<service::entity_clean_result>();
    scheduler_.clean_entity_storage(text(p.getTaskHub()), std::move(request), pending.callback);
    return pending.promise.then([context](expected<service::entity_clean_result> result) mutable {
      auto done = value_or_fail(std::move(result));
      auto results = context.getResults();
      results.setContinuationToken(text(done.continuation_token));
      results.setRemoved(static_cast<std::uint32_t>(done.removed));
      results.setReleased(static_cast<std::uint32_t>(done.released));
    });
  }

  kj::Promise<void> listWorkers(ListWorkersContext context) override {
    require(auth::action::read, text(context.getParams().getTaskHub()), "listWorkers");
    auto pending = answer<std::vector<service::worker_view>>();
    scheduler_.workers(text(context.getParams().getTaskHub()), pending.callback);
    return pending.promise.then([context](expected<std::vector<service::worker_view>> result) mutable {
      auto views = value_or_fail(std::move(result));
      auto list = context.getResults().initWorkers(static_cast<unsigned>(views.size()));
      for (unsigned i = 0; i < views.size(); ++i) {
        const auto& view = views[i];
        auto out = list[i];
        out.setSession(view.session);
        out.setWorker(text(view.worker));
        out.setOrchestratorSlots(view.slots.orchestrators);
        out.setActivitySlots(view.slots.activities);
        out.setEntitySlots(view.slots.entities);
        out.setOrchestratorsInUse(view.in_use.orchestrators);
        out.setActivitiesInUse(view.in_use.activities);
        out.setEntitiesInUse(view.in_use.entities);
        rpc_wire::write(out.initFilters(), view.filters);
      }
    });
  }

  kj::Promise<void> listPartitions(ListPartitionsContext context) override {
    require(auth::action::read, text(context.getParams().getTaskHub()), "listPartitions");
    auto views = value_or_fail(scheduler_.partitions(text(context.getParams().getTaskHub())));
    auto list = context.getResults().initPartitions(static_cast<unsigned>(views.size()));
    for (unsigned i = 0; i < views.size(); ++i) {
      list[i].setIndex(views[i].index);
      list[i].setStalled(text(views[i].stalled));
      list[i].setStalledSinceNs(views[i].stalled_since_ns);
      list[i].setFailedCommits(views[i].failed_commits);
      list[i].setCommits(views[i].commits);
      list[i].setCommittedChanges(views[i].committed_changes);
      list[i].setCommitNsTotal(views[i].commit_ns_total);
      list[i].setCommitNsMax(views[i].commit_ns_max);
      list[i].setReadyOrchestrators(views[i].ready_orchestrators);
      list[i].setReadyActivities(views[i].ready_activities);
      list[i].setReadyEntities(views[i].ready_entities);
      list[i].setLiveInstances(views[i].live_instances);
      list[i].setOldestReadyWaitNs(views[i].oldest_wait_ns);
      list[i].setUnacknowledgedMessages(views[i].unacknowledged_messages);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> listTaskHubs(ListTaskHubsContext context) override {
    require_token();
    auto names = scheduler_.task_hubs();
    // A token sees the hubs it is for, and no others.
    if (grant_) std::erase_if(names, [&](const std::string& hub) { return !grant_->covers(hub); });
    auto list = context.getResults().initNames(static_cast<unsigned>(names.size()));
    for (unsigned i = 0; i < names.size(); ++i) list.set(i, text(names[i]));
    return kj::READY_NOW;
  }

  kj::Promise<void> createTaskHub(CreateTaskHubContext context) override {
    require(auth::action::manage_hubs, text(context.getParams().getName()), "createTaskHub");
    auto p = context.getParams();
    value_or_fail(scheduler_.create_task_hub(text(p.getName()), p.getPartitionCount()));
    return kj::READY_NOW;
  }

  kj::Promise<void> deleteTaskHub(DeleteTaskHubContext context) override {
    require(auth::action::manage_hubs, text(context.getParams().getName()), "deleteTaskHub");
    value_or_fail(scheduler_.delete_task_hub(text(context.getParams().getName()), context.getParams().getForce()));
    return kj::READY_NOW;
  }

  kj::Promise<void> openWorkerSession(OpenWorkerSessionContext context) override {
    require(auth::action::work, text(context.getParams().getTaskHub()), "openWorkerSession");
    auto p = context.getParams();
    auto filters = rpc_wire::read(p.getFilters());
    filters.this_node_only = p.getThisNodeOnly();  // (A single node: all its work is this node's anyway.)
    auto held = hold_stream();
    auto session = kj::heap<worker_session<service::task_service>>(scheduler_, p.getSink());
    value_or_fail(session->open(text(p.getTaskHub()),
                                {p.getOrchestratorConcurrency(), p.getActivityConcurrency(), p.getEntityConcurrency()},
                                std::move(filters), text(p.getWorker())));
    if (authority_ && grant_) {
      session->check_with([authority = authority_, who = *grant_] { return authority->still_valid(who); });
    }
    context.getResults().setSession(kj::mv(session).attach(kj::mv(held)));
    return kj::READY_NOW;
  }

 private:
  /// With --auth: a session that presented no token may do nothing; one whose
  /// token expired or was revoked since may do nothing more. Refusals are audited.
  void require_token(std::string_view operation = "listTaskHubs", std::string_view hub = {},
                     std::string_view instance = {}) const {
    if (!authority_) return;
    if (!grant_) {
      const error refused{errc::unauthenticated,
                          "this dtsd requires a token: connect with one (dtsctl --token, sdk::client::connect(..., token))"};
      authority_->audit("native", operation, hub, instance, nullptr, &refused);
      fail(refused);
    }
    if (auto current = authority_->still_valid(*grant_); !current) {
      authority_->audit("native", operation, hub, instance, &*grant_, &current.error());
      fail(current.error());
    }
  }
  /// ...and one whose role or hubs do not allow the call is refused, naming why.
  /// Changes let through are audited too.
  void require(auth::action what, const std::string& hub, std::string_view operation,
               std::string_view instance = {}) const {
    require_token(operation, hub, instance);
    if (!authority_) return;
    auto allowed = auth::authority::authorize(*grant_, what, hub);
    if (!allowed) {
      authority_->audit("native", operation, hub, instance, &*grant_, &allowed.error());
      fail(allowed.error());
    }
    if (what == auth::action::write || what == auth::action::manage_hubs) {
      if (auto rated = authority_->take_call(*grant_); !rated) {
        authority_->audit("native", operation, hub, instance, &*grant_, &rated.error());
        fail(rated.error());
      }
      authority_->audit("native", operation, hub, instance, &*grant_, nullptr);
    }
  }
  /// A work session or wait of this session's token, counted until it ends.
  std::shared_ptr<void> hold_stream() const {
    if (!authority_ || !grant_) return {};
    auto held = authority_->hold_stream(*grant_);
    if (!held) fail(held.error());
    return *held;
  }

  template <class Start>
  kj::Promise<void> change(Start start) {
    auto pending = answer<void>();
    start(pending.callback);
    return pending.promise.then([](expected<void> result) { value_or_fail(std::move(result)); });
  }

  service::task_service& scheduler_;
  service::partition_host* peers_;
  service::router* local_;
  const auth::authority* authority_;
  const std::optional<auth::grant> grant_;  ///< Whom this capability acts for (with --auth).
};

/// One accepted connection: its stream and the RPC system that serves the
/// bootstrap capability over it, alive until the peer goes.
struct accepted_connection {
  accepted_connection(kj::Own<kj::AsyncIoStream> connected, capnp::Capability::Client bootstrap,
                      capnp::ReaderOptions options)
      : stream(kj::mv(connected)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, options),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

struct log_connection_failures final : public kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& failure) override {
    // A TLS handshake refused (wrong CA, no client certificate, plaintext) or a peer gone.
    spdlog::debug("native API: a connection ended: {}", failure.getDescription().cStr());
  }
};

class capnp_server_impl final : public capnp_server {
 public:
  capnp_server_impl(service::task_service& scheduler, std::string address, service::partition_host* peers,
                    service::router* local, const auth::authority* authority, auth::tls_files tls)
      : scheduler_(scheduler),
        address_(std::move(address)),
        peers_(peers),
        local_(local),
        authority_(authority),
        tls_(std::move(tls)) {}

  ~capnp_server_impl() noexcept override { stop(); }

  expected<void> run_thread() {
    std::promise<expected<std::uint16_t>> started;
    auto ready = started.get_future();
    thread_ = std::thread([this, &started] { loop(started); });
    auto port = ready.get();
    if (!port) {
      thread_.join();
      return port.error();
    }
    port_ = *port;
    return {};
  }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    std::lock_guard lock(stop_mutex_);
    if (!thread_.joinable()) return;
    if (stop_) (*stop_)->fulfill();
    thread_.join();
  }

  expected<void> reload_tls() override {
    if (!tls_.enabled()) return {};
    std::lock_guard lock(stop_mutex_);
    if (!executor_) return error{errc::unavailable, "the native API is not running"};
    try {
      return executor_->executeSync([this]() -> expected<void> {
        try {
          secure_ = std::make_shared<kj::Own<kj::TlsContext>>(server_tls_context(tls_.cert, tls_.key, tls_.client_ca, *timer_));
          return {};
        } catch (const kj::Exception& failure) {
          return error{errc::invalid_argument, failure.getDescription().cStr()};
        }
      });
    } catch (const kj::Exception& failure) {
      return error{errc::unavailable, failure.getDescription().cStr()};
    }
  }

 private:
  void loop(std::promise<expected<std::uint16_t>>& started) {
    try {
      auto io = kj::setupAsyncIo();
      timer_ = &io.provider->getTimer();
      if (tls_.enabled()) {
        secure_ = std::make_shared<kj::Own<kj::TlsContext>>(server_tls_context(tls_.cert, tls_.key, tls_.client_ca, *timer_));
      }
      auto listening = io.provider->getNetwork()
                           .parseAddress(kj::StringPtr(address_.c_str()), 8081)
                           .wait(io.waitScope)
                           ->listen();
      capnp::Capability::Client bootstrap = kj::heap<scheduler_service>(scheduler_, peers_, local_, authority_);
      log_connection_failures errors;
      kj::TaskSet connections(errors);
      auto accepting = accept_loop(*listening, bootstrap, connections);
      auto stopped = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        std::lock_guard lock(stop_mutex_);
        stop_ = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(stopped.fulfiller));
        executor_ = kj::getCurrentThreadExecutor().addRef();
      }
      started.set_value(static_cast<std::uint16_t>(listening->getPort()));
      stopped.promise.exclusiveJoin(kj::mv(accepting)).wait(io.waitScope);
    } catch (const kj::Exception& failure) {
      std::string message = failure.getDescription().cStr();
      try {
        started.set_value(error{errc::io, fmt::format("cannot serve on {}: {}", address_, message)});
      } catch (const std::future_error&) {
        spdlog::error("the RPC loop ended: {}", message);
      }
    }
  }

  /// Takes connections until the loop stops; with TLS, each one's handshake first
  /// (with the context of the moment: a reload affects new connections only).
  kj::Promise<void> accept_loop(kj::ConnectionReceiver& listening, capnp::Capability::Client& bootstrap,
                                kj::TaskSet& connections) {
    return listening.accept()
        .then([this, &bootstrap, &connections](kj::Own<kj::AsyncIoStream> stream) {
          capnp::ReaderOptions options;
          options.traversalLimitInWords = 64 * 1024 * 1024;  // 512 MiB: a 1 MiB payload fits many times.
          auto serve = [bootstrap, options](kj::Own<kj::AsyncIoStream> ready) mutable {
            auto connection = kj::heap<accepted_connection>(kj::mv(ready), kj::mv(bootstrap), options);
            auto ended = connection->network.onDisconnect();
            return ended.attach(kj::mv(connection));
          };
          if (secure_) {
            auto context = secure_;
            auto handshake = (*context)->wrapServer(kj::mv(stream));
            connections.add(handshake.attach(kj::mv(context)).then(kj::mv(serve)));
          } else {
            connections.add(serve(kj::mv(stream)));
          }
        })
        .catch_([this](kj::Exception&& failure) -> kj::Promise<void> {
          // Out of descriptors, say: wait a little instead of spinning.
          spdlog::warn("native API: accepting a connection failed: {}", failure.getDescription().cStr());
          return timer_->afterDelay(100 * kj::MILLISECONDS);
        })
        .then([this, &listening, &bootstrap, &connections] { return accept_loop(listening, bootstrap, connections); });
  }

  service::task_service& scheduler_;
  std::string address_;
  service::partition_host* peers_;
  service::router* local_;
  const auth::authority* authority_;
  const auth::tls_files tls_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  std::mutex stop_mutex_;
  std::shared_ptr<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop_;
  kj::Own<const kj::Executor> executor_;  ///< The loop's (under stop_mutex_; calls fail once it ended).
  // Loop thread only.
  kj::Timer* timer_ = nullptr;
  std::shared_ptr<kj::Own<kj::TlsContext>> secure_;  ///< With --tls-cert: new connections' context.
};

}  // namespace

expected<std::unique_ptr<capnp_server>> capnp_server::start(service::task_service& scheduler,
                                                            const std::string& address,
                                                            service::partition_host* peers,
                                                            service::router* local,
                                                            const auth::authority* authority,
                                                            const auth::tls_files& tls) {
  auto server = std::make_unique<capnp_server_impl>(scheduler, address, peers, local, authority, tls);
  if (auto running = server->run_thread(); !running) return running.error();
  return std::unique_ptr<capnp_server>(std::move(server));
}

}  // namespace dtsd::rpc
