// How a partition carries out the typed requests and peer messages of
// actors/protocol.hpp on its engine. Plain C++: the partition actor calls it, and
// so can the simulation.

#include <spdlog/spdlog.h>

#include "actors/protocol.hpp"
#include "core/ids.hpp"
#include "core/overloaded.hpp"

namespace dtsd::actors {
namespace {

/// A change answered once the batch holding it is durable.
engine::reply<std::uint64_t> when_durable(partition_context& ctx, callback<void> done) {
  return [&ctx, done = std::move(done)](expected<std::uint64_t> batch) {
    if (!batch) return done(batch.error());
    ctx.after_commit(*batch, [done] { done(expected<void>()); });
  };
}

/// A worker's answer: once durable, its slot is freed, then the worker is told.
engine::reply<std::uint64_t> freeing(partition_context& ctx, std::uint64_t session, work_kind kind,
                                     std::uint64_t token, callback<void> done) {
  return [&ctx, session, kind, token, done = std::move(done)](expected<std::uint64_t> batch) {
    if (!batch) {
      // An invalid answer keeps the item leased for a corrected one; any other
      // refusal is final.
      if (batch.error().code != errc::invalid_argument) ctx.answer_refused(token);
      return done(batch.error());
    }
    ctx.after_commit(*batch, [&ctx, session, kind, token, done] {
      ctx.slot_freed(session, kind, token);
      done(expected<void>());
    });
  };
}

void apply(partition_context& ctx, service::change change, callback<void> done) {
  auto& engine = ctx.engine();
  const auto now = ctx.now_ns();
  auto durable = when_durable(ctx, std::move(done));
  std::visit(overloaded{
                 [&](service::changes::raise_event& c) {
                   engine.raise_event(c.instance_id, c.name, c.input, now, std::move(durable));
                 },
                 [&](service::changes::terminate& c) {
                   engine.terminate(c.instance_id, c.request, now, std::move(durable));
                 },
                 [&](service::changes::suspend& c) { engine.suspend(c.instance_id, c.reason, now, std::move(durable)); },
                 [&](service::changes::resume& c) { engine.resume(c.instance_id, c.reason, now, std::move(durable)); },
                 [&](service::changes::rewind& c) { engine.rewind(c.instance_id, c.reason, now, std::move(durable)); },
                 [&](service::changes::deliver& c) { engine.deliver(c.message, now, std::move(durable)); },
                 [&](service::changes::delete_entity& c) { engine.delete_entity(c.instance_id, now, std::move(durable)); },
             },
             change);
}

void read(partition_context& ctx, requests::read& r) {
  // Durable state only, record and history from one read of the store: the
  // engine's memory may hold a batch that is not committed yet, which a crash
  // would undo (and whose history rows are not on disk).
  auto& store = ctx.engine().store();
  if (!r.with_history) {
    auto record = store.get_instance(r.instance_id);
    if (!record) return r.done(record.error());
    if (!*record) return r.done(std::optional<service::instance_view>());
    return r.done(std::optional<service::instance_view>(service::instance_view{std::move(**record), {}}));
  }
  auto state = store.load_instance(r.instance_id);
  if (!state) return r.done(state.error());
  if (!*state) return r.done(std::optional<service::instance_view>());
  r.done(std::optional<service::instance_view>(
      service::instance_view{std::move((*state)->record), std::move((*state)->history)}));
}

void purge(partition_context& ctx, requests::purge& p) {
  auto purge_with = [&ctx, id = p.instance_id, done = std::move(p.done)](std::vector<std::string> children) {
    ctx.engine().purge(id, ctx.now_ns(), [&ctx, children = std::move(children), done](expected<std::uint64_t> batch) {
      if (!batch) return done(batch.error());
      ctx.after_commit(*batch, [children, done] { done(service::purge_step{true, children}); });
    });
  };
  if (!p.children) return purge_with({});
  ctx.engine().sub_orchestrations_of(p.instance_id, std::move(purge_with));
}

}  // namespace

void serve(partition_context& ctx, partition_request request) {
  // Every write is refused while the partition cannot commit; reads go on.
  const auto& refused = ctx.write_refusal();
  std::visit(overloaded{
                 [&](requests::start& s) {
                   if (refused) return s.done(*refused);
                   ctx.engine().start(std::move(s.request), ctx.now_ns(),
                                      [&ctx, done = std::move(s.done)](expected<engine::started> started) {
                                        if (!started) return done(started.error());
                                        ctx.after_commit(started->batch, [done, started = *started] {
                                          done(service::started{started.instance_id, started.execution_id});
                                        });
                                      });
                 },
                 [&](requests::read& r) { read(ctx, r); },
                 [&](requests::await& w) {
                   ctx.add_waiter(w.instance_id, w.until_completed, w.handle, std::move(w.done));
                 },
                 [&](requests::forget_wait& f) { ctx.remove_waiter(f.instance_id, f.handle); },
                 [&](requests::apply& a) {
                   if (refused) return a.done(*refused);
                   apply(ctx, std::move(a.change), std::move(a.done));
                 },
                 [&](requests::complete_orchestrator& c) {
                   if (refused) return c.done(*refused);
                   const auto kind = core::is_entity_id(c.completion.instance_id) ? work_kind::entity
                                                                                   : work_kind::orchestrator;
                   ctx.engine().complete_orchestrator(
                       c.completion, ctx.now_ns(),
                       freeing(ctx, c.session, kind, c.completion.completion_token, std::move(c.done)));
                 },
                 [&](requests::complete_activity& c) {
                   if (refused) return c.done(*refused);
                   ctx.engine().complete_activity(
                       c.result, ctx.now_ns(),
                       freeing(ctx, c.session, work_kind::activity, c.result.completion_token, std::move(c.done)));
                 },
                 [&](requests::purge& p) {
                   if (refused) return p.done(*refused);
                   purge(ctx, p);
                 },
                 [&](requests::query& q) {
                   auto page = ctx.engine().store().query(q.query);
                   if (!page) return q.done(page.error());
                   q.done(std::move(*page));
                 },
                 [&](requests::retention& r) {
                   auto& engine = ctx.engine();
                   if (!r.set) return r.done(service::retention_view{engine.retention(), engine.retention_is_own()});
                   if (refused) return r.done(*refused);
                   const auto batch = engine.set_retention(std::move(r.policy));
                   ctx.after_commit(batch, [&engine, done = std::move(r.done)] {
                     done(service::retention_view{engine.retention(), engine.retention_is_own()});
                   });
                 },
                 [&](requests::schedule& r) {
                   using verb = core::schedule_command::verb;
                   const bool changes = r.command.what != verb::get && r.command.what != verb::list;
                   if (changes && refused) return r.done(*refused);
                   auto done = ctx.engine().schedule(r.command, ctx.now_ns());
                   if (!done) return r.done(done.error());
                   if (done->first == 0) return r.done(std::move(done->second));
                   ctx.after_commit(done->first, [schedules = std::move(done->second), answer = std::move(r.done)] {
                     answer(schedules);
                   });
                 },
                 [&](requests::list& l) {
                   // From memory: milliseconds for a partition of 100,000 instances.
                   auto page = ctx.engine().store().list(l.query);
                   if (!page) return l.done(page.error());
                   l.done(std::move(*page));
                 },
             },
             request);
}

void serve(partition_context& ctx, peer_message message) {
  std::visit(overloaded{
                 [&](peer::delivery& d) {
                   const auto sequence = d.entry.sequence;
                   ctx.engine().receive(d.entry, ctx.now_ns(), [sequence](expected<std::uint64_t> received) {
                     if (!received) spdlog::warn("message {} refused: {}", sequence, received.error().message);
                   });
                 },
                 [&](peer::receipt& r) { ctx.engine().outbound_acknowledged(r.from, r.sequence); },
             },
             message);
}

void resend_unacknowledged(engine::partition_engine& engine, peer_link& link, std::optional<std::uint32_t> to) {
  resend_unacknowledged(engine, link, [to](std::uint32_t partition) { return !to || partition == *to; });
}

void resend_unacknowledged(engine::partition_engine& engine, peer_link& link,
                           const std::function<bool(std::uint32_t)>& to) {
  for (auto& entry : engine.unacknowledged_outbox()) {
    const auto destination = entry.destination_partition;
    if (!to(destination)) continue;
    link.send(destination, peer::delivery{std::move(entry)});
  }
}

}  // namespace dtsd::actors
