#pragma once
/// Errors and `expected<T>` for dtsd. C++20 has no std::expected, so this is a small
/// one: a value or an `error` with one project-wide code and a message meant for a
/// user. Exceptions never cross an actor or RPC boundary; these do.

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace dtsd {

/// One error enum for the project. A code exists only if some caller reacts to it
/// specifically (the gRPC gateway maps each to a status code).
enum class errc {
  invalid_argument = 1,  ///< Malformed input: bad id, oversize payload, bad action.
  not_found,             ///< No such instance, hub or row.
  already_exists,        ///< Id reuse conflict.
  failed_precondition,   ///< Valid request, wrong state (purge of a running instance).
  stale_token,           ///< Completion token does not match the current lease.
  duplicate,             ///< The result was already applied; nothing changed.
  corrupt,               ///< Stored data failed a check.
  io,                    ///< The storage layer failed.
  unimplemented,         ///< A protocol feature dtsd does not support (named in the message).
  /// A worker's answer carried a payload over its limit: it was applied as a
  /// failure naming the field instead (the caller must not send it again).
  payload_too_large,
  /// The partition cannot write (its disk is full or failing): new writes are
  /// refused until it can again; reads go on. Worth retrying later.
  resource_exhausted,
  /// The task hub named does not exist (a missing instance is `not_found`): a
  /// caller that treats a missing instance as "nothing to do" must still fail.
  unknown_task_hub,
  /// The partition is not served by this node now (a cluster: another node owns it,
  /// or it is moving). Worth retrying, at the owner the message names.
  unavailable,
  /// No credential, or one that is forged, expired or revoked.
  unauthenticated,
  /// A valid credential whose role or task hubs do not allow the call.
  permission_denied,
};

const char* to_string(errc code) noexcept;

struct error {
  errc code;
  std::string message;
};

/// Either a `T` or an `error`. Constructible implicitly from both so functions can
/// `return value;` and `return error{...};`.
template <class T>
class [[nodiscard]] expected {
 public:
  expected(T value) : state_(std::move(value)) {}
  expected(dtsd::error failure) : state_(std::move(failure)) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { assert(has_value()); return std::get<0>(state_); }
  const T& value() const& { assert(has_value()); return std::get<0>(state_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const dtsd::error& error() const { assert(!has_value()); return std::get<1>(state_); }

 private:
  std::variant<T, dtsd::error> state_;
};

template <>
class [[nodiscard]] expected<void> {
 public:
  expected() = default;
  expected(dtsd::error failure) : failure_(std::move(failure)), failed_(true) {}

  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return !failed_; }
  const dtsd::error& error() const { assert(failed_); return failure_; }

 private:
  dtsd::error failure_{errc::invalid_argument, {}};
  bool failed_ = false;
};

}  // namespace dtsd
