#include "model.hpp"

namespace dtsd::core {

bool is_terminal(runtime_status status) {
  switch (status) {
    case runtime_status::completed:
    case runtime_status::failed:
    case runtime_status::canceled:
    case runtime_status::terminated:
      return true;
    case runtime_status::running:
    case runtime_status::continued_as_new:
    case runtime_status::pending:
    case runtime_status::suspended:
      return false;
  }
  return false;
}

std::string_view to_string(runtime_status status) {
  switch (status) {
    case runtime_status::running: return "Running";
    case runtime_status::completed: return "Completed";
    case runtime_status::continued_as_new: return "ContinuedAsNew";
    case runtime_status::failed: return "Failed";
    case runtime_status::canceled: return "Canceled";
    case runtime_status::terminated: return "Terminated";
    case runtime_status::pending: return "Pending";
    case runtime_status::suspended: return "Suspended";
  }
  return "Unknown";
}

bool operator==(const failure_details& a, const failure_details& b) {
  if (a.error_type != b.error_type || a.error_message != b.error_message ||
      a.stack_trace != b.stack_trace || a.non_retriable != b.non_retriable) {
    return false;
  }
  if (!a.inner_failure || !b.inner_failure) return !a.inner_failure && !b.inner_failure;
  return *a.inner_failure == *b.inner_failure;
}

bool operator==(const history_state& a, const history_state& b) {
  if (!a.state || !b.state) return !a.state && !b.state;
  return *a.state == *b.state;
}

std::vector<runtime_status> terminal_statuses() {
  return {runtime_status::completed, runtime_status::failed, runtime_status::canceled,
          runtime_status::terminated};
}

}  // namespace dtsd::core
