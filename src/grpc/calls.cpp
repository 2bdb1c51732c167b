#include "grpc/calls.hpp"

namespace dtsd::grpc_api {

Status to_status(const error& failure) {
  switch (failure.code) {
    case errc::invalid_argument: return {StatusCode::INVALID_ARGUMENT, failure.message};
    case errc::not_found: return {StatusCode::NOT_FOUND, failure.message};
    case errc::already_exists: return {StatusCode::ALREADY_EXISTS, failure.message};
    case errc::failed_precondition:
    case errc::stale_token:
    case errc::duplicate: return {StatusCode::FAILED_PRECONDITION, failure.message};
    case errc::corrupt: return {StatusCode::DATA_LOSS, failure.message};
    case errc::io:
    case errc::unavailable: return {StatusCode::UNAVAILABLE, failure.message};
    case errc::unauthenticated: return {StatusCode::UNAUTHENTICATED, failure.message};
    case errc::permission_denied: return {StatusCode::PERMISSION_DENIED, failure.message};
    case errc::unimplemented: return {StatusCode::UNIMPLEMENTED, failure.message};
    case errc::payload_too_large: return {StatusCode::INVALID_ARGUMENT, failure.message};
    case errc::resource_exhausted: return {StatusCode::RESOURCE_EXHAUSTED, failure.message};
    case errc::unknown_task_hub: return {StatusCode::NOT_FOUND, failure.message};
  }
  return {StatusCode::INTERNAL, failure.message};
}

/// The hub a call names in its `taskhub` header; without the header, `default`
/// (as the DTS emulator). An empty header names no hub: it is passed on as "" and
/// refused as an invalid hub name, the same on every call.
std::string task_hub_of(const CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto found = metadata.find("taskhub");
  if (found == metadata.end()) return "default";
  return {found->second.data(), found->second.size()};
}

/// The hub DeleteTaskHub names: no default applies to deleting.
std::optional<std::string> named_task_hub(const CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto found = metadata.find("taskhub");
  if (found == metadata.end()) return std::nullopt;
  return std::string(found->second.data(), found->second.size());
}

std::string bearer_of(const CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto found = metadata.find("authorization");
  if (found == metadata.end()) return {};
  return std::string(found->second.data(), found->second.size());
}

/// `dtsd-force-delete: true` deletes a hub that still holds instances.
bool force_delete(const CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto found = metadata.find("dtsd-force-delete");
  return found != metadata.end() && std::string_view(found->second.data(), found->second.size()) == "true";
}

}  // namespace dtsd::grpc_api
