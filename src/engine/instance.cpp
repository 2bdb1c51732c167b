#include "engine/instance.hpp"

namespace dtsd::engine {

live_instance::live_instance(std::string id, const loader& load) : id_(std::move(id)) {
  auto loaded = load(id_);
  if (!loaded) {
    load_error = loaded.error();
    return;
  }
  state = std::move(*loaded);
  if (state) durable_inbox_end = state->inbox_first_sequence + state->inbox.size();
}

store::instance_write live_instance::note(std::uint64_t batch, const core::instance_change& change) {
  static const core::orchestration_state empty;
  if (change_batch_ != batch) {
    change_ = {};
    change_batch_ = batch;
  }
  core::merge(change_, change, state ? *state : empty);
  return store::make_instance_write(id_, state ? &*state : nullptr, change_);
}

bool live_instance::idle() const {
  if (!state) return true;
  const bool has_work = !state->inbox.empty() && !core::is_terminal(state->record.status);
  return !has_work && !state->in_flight;
}

void inline_host::run(const std::string& id, std::function<void(live_instance&)> on_instance,
                      std::function<void()> then) {
  auto found = live_.find(id);
  if (found == live_.end()) {
    auto made = std::make_unique<live_instance>(id, load_);
    if (made->load_error) {  // Not kept: the next operation tries the store again.
      on_instance(*made);
      return then();
    }
    found = live_.emplace(id, std::move(made)).first;
  }
  on_instance(*found->second);
  then();
}

}  // namespace dtsd::engine
