#include "limits.hpp"

#include <fmt/format.h>

#include "overloaded.hpp"

namespace dtsd::core {

expected<void> check_payload(std::string_view field, const payload& value,
                             std::size_t bytes_max) {
  if (!value || value->size() <= bytes_max) return {};
  return error{errc::invalid_argument,
               fmt::format("{} is {} bytes, over the limit of {} bytes", field, value->size(),
                           bytes_max)};
}

expected<void> check_name(std::string_view field, std::string_view name) {
  if (name.size() <= name_length_max) return {};
  return error{errc::invalid_argument, fmt::format("{} is {} characters long, over the limit of {}", field,
                                                   name.size(), name_length_max)};
}

expected<void> check_tags(std::string_view field, const tag_map& tags) {
  if (tags.size() > tag_count_max) {
    return error{errc::invalid_argument,
                 fmt::format("{}: {} tags, over the limit of {}", field, tags.size(), tag_count_max)};
  }
  for (const auto& [key, value] : tags) {
    if (key.empty()) return error{errc::invalid_argument, fmt::format("{}: a tag has an empty key", field)};
    if (key.size() > tag_key_length_max) {
      return error{errc::invalid_argument, fmt::format("{}: a tag key is {} characters long, over the limit of {}",
                                                       field, key.size(), tag_key_length_max)};
    }
    if (value.size() > tag_value_length_max) {
      return error{errc::invalid_argument,
                   fmt::format("{}: the value of tag '{}' is {} characters long, over the limit of {}", field,
                               key.substr(0, 64), value.size(), tag_value_length_max)};
    }
  }
  return {};
}

namespace {

failure_details too_large(const error& why) {
  return failure_details{std::string(payload_too_large_type), why.message, std::nullopt, nullptr, true};
}

/// The first of three checks that fails, if any.
expected<void> all(expected<void> a, expected<void> b, expected<void> c) {
  if (!a) return a;
  if (!b) return b;
  return c;
}

/// The first name, tag or payload of `action` over its limit, if any.
expected<void> check_action(const orchestrator_action& action, const payload_limits& limits) {
  return std::visit(
      overloaded{
          [&](const actions::schedule_task& a) {
            return all(check_name("activity name", a.name), check_tags("scheduleTask tags", a.tags),
                       check_payload("activity input", a.input, limits.activity_input_bytes_max));
          },
          [&](const actions::create_sub_orchestration& a) {
            return all(check_name("sub-orchestration name", a.name),
                       check_tags("createSubOrchestration tags", a.tags),
                       check_payload("sub-orchestration input", a.input, limits.orchestration_input_bytes_max));
          },
          [&](const actions::send_event& a) {
            return all(check_name("event name", a.name), expected<void>(),
                       check_payload("event data", a.data, limits.event_data_bytes_max));
          },
          [&](const actions::complete_orchestration& a) -> expected<void> {
            if (a.status == runtime_status::continued_as_new) {
              for (const auto& event : a.carryover_events) {
                if (const auto* raised = std::get_if<events::event_raised>(&event.body)) {
                  if (auto fits = check_payload("carried-over event data", raised->input, limits.event_data_bytes_max);
                      !fits) {
                    return fits;
                  }
                }
              }
              return check_payload("continue-as-new input", a.result, limits.orchestration_input_bytes_max);
            }
            if (auto tags = check_tags("completion tags", a.tags); !tags) return tags;
            return check_payload("orchestration output", a.result, limits.orchestration_output_bytes_max);
          },
          [&](const actions::terminate_orchestration& a) {
            return check_payload("termination reason", a.reason, limits.orchestration_output_bytes_max);
          },
          [&](const actions::send_entity_message& a) {
            return std::visit(
                overloaded{[&](const events::entity_operation_signaled& e) {
                             return all(check_name("entity operation name", e.operation), expected<void>(),
                                        check_payload("entity operation input", e.input, limits.event_data_bytes_max));
                           },
                           [&](const events::entity_operation_called& e) {
                             return all(check_name("entity operation name", e.operation), expected<void>(),
                                        check_payload("entity operation input", e.input, limits.event_data_bytes_max));
                           },
                           [](const auto&) { return expected<void>(); }},
                a.message);
          },
          [](const actions::create_timer&) { return expected<void>(); }},
      action.body);
}

}  // namespace

std::optional<error> fail_oversize(activity_result& result, const payload_limits& limits) {
  const auto* output = std::get_if<payload>(&result.outcome);
  if (output == nullptr) return std::nullopt;
  auto fits = check_payload("activity output", *output, limits.activity_output_bytes_max);
  if (fits) return std::nullopt;
  result.outcome = too_large(fits.error());
  return fits.error();
}

std::optional<error> fail_oversize(orchestrator_completion& completion, const payload_limits& limits) {
  if (completion.entity) return std::nullopt;
  auto fits = check_payload("custom status", completion.custom_status, limits.custom_status_bytes_max);
  for (const auto& action : completion.actions) {
    if (!fits) break;
    fits = check_action(action, limits);
  }
  if (fits) return std::nullopt;
  actions::complete_orchestration failed;
  failed.status = runtime_status::failed;
  failed.failure = too_large(fits.error());
  completion.actions = {orchestrator_action{0, std::move(failed)}};
  completion.custom_status.reset();
  return fits.error();
}

}  // namespace dtsd::core
