#include "auth/authority.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/ids.hpp"

namespace dtsd::auth {

namespace {

using json = nlohmann::json;

std::int64_t unix_now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json to_json(const listed_token& t) {
  return {{"id", t.grant.id},
          {"role", role_name(t.grant.role)},
          {"hubs", t.grant.hubs},
          {"issuedAt", t.grant.issued_at_s},
          {"expiresAt", t.grant.expires_at_s},
          {"note", t.grant.note},
          {"revoked", t.revoked}};
}

expected<std::vector<listed_token>> read_registry(const std::filesystem::path& file) {
  std::vector<listed_token> out;
  std::error_code missing;
  if (!std::filesystem::exists(file, missing) && !missing) return out;  // Nothing issued yet.
  std::ifstream in(file);
  if (!in) return error{errc::io, "cannot read " + file.string()};  // Not "none revoked": fail closed.
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = json::parse(text.str(), nullptr, false);
  if (parsed.is_discarded() || !parsed.is_array()) return error{errc::corrupt, file.string() + " is not a token list"};
  try {
    for (const auto& row : parsed) {
      listed_token t;
      t.grant.id = row.at("id").get<std::string>();
      auto r = parse_role(row.at("role").get<std::string>());
      if (!r) return error{errc::corrupt, file.string() + ": " + r.error().message};
      t.grant.role = *r;
      t.grant.hubs = row.at("hubs").get<std::vector<std::string>>();
      t.grant.issued_at_s = row.at("issuedAt").get<std::int64_t>();
      t.grant.expires_at_s = row.at("expiresAt").get<std::int64_t>();
      t.grant.note = row.value("note", "");
      t.revoked = row.at("revoked").get<bool>();
      out.push_back(std::move(t));
    }
  } catch (const json::exception& failure) {
    return error{errc::corrupt, file.string() + " is not a token list: " + failure.what()};
  }
  return out;
}

}  // namespace

expected<std::vector<listed_token>> registry::list() const { return read_registry(file()); }

template <class Change>
expected<void> registry::edit(Change change) {
  std::error_code failed;
  std::filesystem::create_directories(dir_, failed);
  if (failed) return error{errc::io, "cannot create " + dir_.string() + ": " + failed.message()};
  const auto lock_path = dir_ / "tokens.lock";
  const int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return error{errc::io, "cannot open " + lock_path.string() + ": " + std::strerror(errno)};
  ::flock(lock, LOCK_EX);
  auto done = [&]() -> expected<void> {
    auto tokens = read_registry(file());
    if (!tokens) return tokens.error();
    if (auto changed = change(*tokens); !changed) return changed;
    json rows = json::array();
    for (const auto& t : *tokens) rows.push_back(to_json(t));
    const auto text = rows.dump(2) + "\n";
    const auto next = dir_ / "tokens.json.next";
    const int fd = ::open(next.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return error{errc::io, "cannot write " + next.string() + ": " + std::strerror(errno)};
    const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written || std::rename(next.c_str(), file().c_str()) != 0) {
      return error{errc::io, "cannot write " + file().string()};
    }
    return {};
  }();
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return done;
}

expected<std::string> registry::create(grant what) {
  if (what.hubs.empty()) return error{errc::invalid_argument, "a token needs a task hub, or '*' for every hub"};
  for (const auto& hub : what.hubs) {
    if (hub == "*") continue;
    if (auto valid = core::validate_task_hub_name(hub); !valid) return valid.error();
  }
  auto key = signing_key::load_or_create(key_file());
  if (!key) return key.error();
  if (what.id.empty()) what.id = new_token_id();
  if (what.issued_at_s == 0) what.issued_at_s = unix_now_s();
  auto recorded = edit([&](std::vector<listed_token>& tokens) -> expected<void> {
    tokens.push_back({what, false});
    return {};
  });
  if (!recorded) return recorded.error();
  return issue(*key, what);
}

expected<void> registry::revoke(const std::string& id) {
  return edit([&](std::vector<listed_token>& tokens) -> expected<void> {
    for (auto& t : tokens) {
      if (t.grant.id == id) {
        t.revoked = true;
        return {};
      }
    }
    return error{errc::not_found, "no token has the id '" + id + "'"};
  });
}

expected<std::unique_ptr<authority>> authority::open(const std::filesystem::path& dir, token_limits limits) {
  registry files(dir);
  auto key = signing_key::load_or_create(files.key_file());
  if (!key) return key.error();
  std::unique_ptr<authority> made(new authority(*key, dir, limits));
  auto tokens = files.list();
  if (!tokens) return tokens.error();  // At start, an unreadable registry is an error.
  made->reload();
  const int fd = ::open(made->audit_file().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return error{errc::io, "cannot open " + made->audit_file().string() + ": " + std::strerror(errno)};
  made->audit_ = ::fdopen(fd, "a");
  if (!made->audit_) {
    ::close(fd);
    return error{errc::io, "cannot open " + made->audit_file().string() + " for appending"};
  }
  made->watcher_ = std::thread([a = made.get()] { a->watch(); });
  return made;
}

authority::~authority() {
  stopping_ = true;
  if (watcher_.joinable()) watcher_.join();
  if (audit_) std::fclose(audit_);
}

void authority::audit(std::string_view api, std::string_view operation, std::string_view hub,
                      std::string_view instance, const grant* who, const error* refused) const {
  // What a caller sends is cut short: a line stays small whatever comes.
  auto cut = [](std::string_view text) { return std::string(text.substr(0, 256)); };
  const auto now = unix_now_s();
  std::lock_guard lock(audit_mutex_);
  if (!audit_) return;
  // Refusals without a valid token cost the caller nothing: at most 100 lines a
  // second of them; the rest are counted in the next line written.
  if (!who && refused) {
    if (now != anonymous_second_) {
      anonymous_second_ = now;
      anonymous_lines_ = 0;
    }
    if (++anonymous_lines_ > 100) {
      ++anonymous_dropped_;
      return;
    }
  }
  json line = {{"time", now}, {"api", api}, {"operation", cut(operation)}, {"taskHub", cut(hub)},
               {"token", who ? json(who->id) : json(nullptr)}, {"result", refused ? "refused" : "done"}};
  if (!instance.empty()) line["instanceId"] = cut(instance);
  if (who) line["role"] = role_name(who->role);
  if (refused) line["reason"] = cut(refused->message);
  if (anonymous_dropped_ > 0) {
    line["refusalsWithoutTokenNotLogged"] = anonymous_dropped_;
    anonymous_dropped_ = 0;
  }
  const auto text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), audit_);
  std::fflush(audit_);  // Each line reaches the file at once (not fsynced: an audit trail, not a ledger).
}

void authority::reload() {
  // Read every time (the file is small): a modification time can miss an edit made
  // within its granularity.
  auto tokens = registry_.list();
  if (!tokens) return;  // Unreadable or half-edited by hand: keep what was read last, try again.
  std::set<std::string> revoked;
  for (const auto& t : *tokens) {
    if (t.revoked) revoked.insert(t.grant.id);
  }
  std::lock_guard lock(mutex_);
  revoked_ = std::move(revoked);
  known_ = tokens->size();
}

void authority::watch() {
  while (!stopping_) {
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    reload();
    std::lock_guard lock(tick_mutex_);
    if (tick_) tick_();
  }
}

void authority::on_reload(std::function<void()> tick) const {
  std::lock_guard lock(tick_mutex_);
  tick_ = std::move(tick);
}

std::size_t authority::known_tokens() const {
  std::lock_guard lock(mutex_);
  return known_;
}

expected<grant> authority::authenticate(std::string_view credential) const {
  if (credential.empty()) {
    return error{errc::unauthenticated,
                 "this dtsd requires a token: send 'authorization: Bearer <token>' (create one with dtsctl token create)"};
  }
  constexpr std::string_view bearer = "Bearer ";
  if (credential.size() > bearer.size() && credential.substr(0, bearer.size()) == bearer) {
    credential.remove_prefix(bearer.size());
  }
  auto who = verify(key_, credential, unix_now_s());
  if (!who) return who;
  if (who->node) return error{errc::unauthenticated, "a node token is for links between cluster nodes only"};
  std::lock_guard lock(mutex_);
  if (revoked_.count(who->id)) return error{errc::unauthenticated, "token " + who->id + " has been revoked"};
  return who;
}

expected<grant> authority::authenticate_node(std::string_view credential) const {
  auto who = verify(key_, credential, unix_now_s());
  if (!who) return who;
  if (!who->node) return error{errc::permission_denied, "a node link needs a node token (nodes make their own)"};
  return who;
}

expected<void> authority::still_valid(const grant& who) const {
  if (who.expires_at_s != 0 && unix_now_s() >= who.expires_at_s) {
    return error{errc::unauthenticated, "token " + who.id + " has expired"};
  }
  std::lock_guard lock(mutex_);
  if (revoked_.count(who.id)) return error{errc::unauthenticated, "token " + who.id + " has been revoked"};
  return {};
}

expected<std::shared_ptr<void>> authority::hold_stream(const grant& who) const {
  {
    std::lock_guard lock(usage_mutex_);
    auto& used = usage_[who.id];
    if (used.streams >= limits_.streams_max) {
      return error{errc::resource_exhausted,
                   fmt::format("token {} holds {} work streams and waits, its limit (--token-streams-max); "
                               "end one first", who.id, used.streams)};
    }
    ++used.streams;
  }
  // Made outside the lock: its deleter takes it.
  return std::shared_ptr<void>(nullptr, [this, id = who.id](void*) {
    std::lock_guard lock(usage_mutex_);
    if (auto found = usage_.find(id); found != usage_.end() && found->second.streams > 0) --found->second.streams;
  });
}

expected<void> authority::take_call(const grant& who) const {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(usage_mutex_);
  auto& used = usage_[who.id];
  const double capacity = std::max(1.0, limits_.calls_per_second);
  if (used.calls_left < 0) {
    used.calls_left = capacity;
  } else {
    const double elapsed = std::chrono::duration<double>(now - used.refilled).count();
    used.calls_left = std::min(capacity, used.calls_left + elapsed * limits_.calls_per_second);
  }
  used.refilled = now;
  if (used.calls_left < 1) {
    return error{errc::resource_exhausted,
                 fmt::format("token {} made more than {:g} changes a second, its limit (--token-calls-per-second); "
                             "slow down and try again",
                             who.id, limits_.calls_per_second)};
  }
  used.calls_left -= 1;
  return {};
}

std::string authority::node_token(const std::string& node_id) const {
  grant node;
  node.id = "node-" + node_id;
  node.role = role::contributor;
  node.hubs = {"*"};
  node.node = true;
  node.issued_at_s = unix_now_s();
  return issue(key_, node);
}

expected<void> authority::authorize(const grant& who, action what, std::string_view hub) {
  if (!permits(who.role, what) || (what == action::manage_hubs && !who.all_hubs())) {
    return error{errc::permission_denied, "token " + who.id + " has the " + std::string(role_name(who.role)) +
                                              " role; this call needs " + std::string(role_needed(what))};
  }
  if (what != action::manage_hubs && !who.covers(hub)) {
    std::string hubs;
    for (const auto& h : who.hubs) hubs += (hubs.empty() ? "'" : ", '") + h + "'";
    return error{errc::permission_denied,
                 "token " + who.id + " is for task hub " + hubs + ", not '" + std::string(hub) + "'"};
  }
  return {};
}

expected<grant> authority::check(std::string_view credential, action what, std::string_view hub) const {
  auto who = authenticate(credential);
  if (!who) return who;
  if (auto allowed = authorize(*who, what, hub); !allowed) return allowed.error();
  return who;
}

}  // namespace dtsd::auth
