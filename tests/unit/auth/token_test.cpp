// Tokens: what they grant, and every way one is refused.
#include <doctest/doctest.h>

#include <unistd.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "auth/authority.hpp"

using namespace dtsd;
using namespace dtsd::auth;

namespace {

grant make_grant(role r, std::vector<std::string> hubs, std::int64_t expires_at_s = 0) {
  grant g;
  g.id = new_token_id();
  g.role = r;
  g.hubs = std::move(hubs);
  g.issued_at_s = 1'700'000'000;
  g.expires_at_s = expires_at_s;
  return g;
}

struct temp_dir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("dtsd-auth-test-" + std::to_string(::getpid()) + "-" + new_token_id());
  ~temp_dir() { std::filesystem::remove_all(path); }
};

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

TEST_CASE("auth: a token verifies under its key and gives back its grant") {
  const auto key = signing_key::random();
  const auto issued = make_grant(role::worker, {"orders", "billing"}, 1'800'000'000);
  const auto token = issue(key, issued);
  CHECK(token.rfind("dtsd1.", 0) == 0);
  auto checked = verify(key, token, 1'750'000'000);
  REQUIRE(checked);
  CHECK(checked->id == issued.id);
  CHECK(checked->role == role::worker);
  CHECK(checked->hubs == issued.hubs);
  CHECK(checked->expires_at_s == 1'800'000'000);
}

TEST_CASE("auth: a forged, altered, expired or foreign-key token is unauthenticated") {
  const auto key = signing_key::random();
  const auto token = issue(key, make_grant(role::reader, {"orders"}, 1'800'000'000));
  auto refused = [](const expected<grant>& checked) {
    return !checked && checked.error().code == errc::unauthenticated;
  };
  CHECK(refused(verify(key, token, 1'800'000'000)));                     // Expired at that second.
  CHECK(refused(verify(signing_key::random(), token, 1'700'000'000)));  // Another key.
  CHECK(refused(verify(key, "", 1'700'000'000)));
  CHECK(refused(verify(key, "Bearer x", 1'700'000'000)));
  CHECK(refused(verify(key, "dtsd1.", 1'700'000'000)));
  CHECK(refused(verify(key, "dtsd1..", 1'700'000'000)));
  // The payload changed (a reader made contributor) under the old signature.
  const auto dot = token.rfind('.');
  auto altered = issue(key, make_grant(role::contributor, {"*"}));
  altered = altered.substr(0, altered.rfind('.')) + token.substr(dot);
  CHECK(refused(verify(key, altered, 1'700'000'000)));
  // Any one character of the signature changed, the last one too (whose low bits
  // decode to nothing: the signature is compared as its one encoding).
  for (std::size_t at = dot + 1; at < token.size(); ++at) {
    auto flipped = token;
    flipped[at] = flipped[at] == 'A' ? 'B' : 'A';
    INFO("character " << at);
    CHECK(refused(verify(key, flipped, 1'700'000'000)));
  }
  CHECK(verify(key, token, 1'799'999'999));
}

TEST_CASE("auth: each role may do what DTS's role of that name may, on its hubs only") {
  CHECK(permits(role::reader, action::read));
  CHECK_FALSE(permits(role::reader, action::work));
  CHECK_FALSE(permits(role::reader, action::write));
  CHECK_FALSE(permits(role::worker, action::read));
  CHECK(permits(role::worker, action::work));
  CHECK_FALSE(permits(role::worker, action::write));
  CHECK(permits(role::contributor, action::read));
  CHECK(permits(role::contributor, action::work));
  CHECK(permits(role::contributor, action::write));

  const auto orders_reader = make_grant(role::reader, {"orders"});
  CHECK(authority::authorize(orders_reader, action::read, "orders"));
  auto other_hub = authority::authorize(orders_reader, action::read, "billing");
  REQUIRE_FALSE(other_hub);
  CHECK(other_hub.error().code == errc::permission_denied);
  CHECK(other_hub.error().message.find("'orders', not 'billing'") != std::string::npos);
  auto wrong_role = authority::authorize(orders_reader, action::write, "orders");
  REQUIRE_FALSE(wrong_role);
  CHECK(wrong_role.error().code == errc::permission_denied);
  CHECK(wrong_role.error().message.find("Durable Task Data Contributor") != std::string::npos);

  // Hubs are created and deleted by a contributor for every hub only.
  CHECK_FALSE(authority::authorize(make_grant(role::contributor, {"orders"}), action::manage_hubs, "orders"));
  CHECK(authority::authorize(make_grant(role::contributor, {"*"}), action::manage_hubs, "anything"));
  CHECK(authority::authorize(make_grant(role::worker, {"*"}), action::work, "anything"));
}

TEST_CASE("auth: a node token opens node links only; a user token never does") {
  temp_dir dir;
  auto server = authority::open(dir.path / "auth");
  REQUIRE(server);
  const auto node = (*server)->node_token("n1");
  CHECK((*server)->authenticate_node(node));
  auto as_client = (*server)->authenticate("Bearer " + node);
  REQUIRE_FALSE(as_client);
  CHECK(as_client.error().code == errc::unauthenticated);
  registry files(dir.path / "auth");
  auto admin = files.create(make_grant(role::contributor, {"*"}));
  REQUIRE(admin);
  CHECK((*server)->authenticate(*admin));
  CHECK_FALSE((*server)->authenticate_node(*admin));
}

TEST_CASE("auth: durations for --expires") {
  CHECK(parse_duration_s("30d").value() == 30 * 86400);
  CHECK(parse_duration_s("12h").value() == 12 * 3600);
  CHECK(parse_duration_s("45m").value() == 45 * 60);
  CHECK(parse_duration_s("90s").value() == 90);
  CHECK(parse_duration_s("never").value() == 0);
  for (const char* bad : {"", "30", "d", "-1d", "0d", "3x", "1.5h", "99999999d"}) {
    INFO(bad);
    CHECK_FALSE(parse_duration_s(bad));
  }
}

TEST_CASE("auth: the key is made once with owner-only modes; a registry lists, revokes, and a server notices") {
  temp_dir dir;
  registry files(dir.path / "auth");
  auto first = files.create(make_grant(role::contributor, {"*"}));
  REQUIRE(first);
  struct stat key_stat {};
  REQUIRE(::stat(files.key_file().c_str(), &key_stat) == 0);
  CHECK((key_stat.st_mode & 0777) == 0600);
  REQUIRE(::stat(files.dir().c_str(), &key_stat) == 0);
  CHECK((key_stat.st_mode & 0777) == 0700);
  auto key = signing_key::load(files.key_file());
  REQUIRE(key);
  CHECK(verify(*key, *first, now_s()));

  grant for_worker = make_grant(role::worker, {"orders"});
  for_worker.issued_at_s = 0;
  auto second = files.create(for_worker);
  REQUIRE(second);
  CHECK_FALSE(files.create(make_grant(role::reader, {})));            // No hub: refused,
  CHECK_FALSE(files.create(make_grant(role::reader, {"bad hub!"})));  // or a bad name,
  auto listed = files.list();
  REQUIRE(listed);
  REQUIRE(listed->size() == 2);  // and nothing recorded.
  CHECK((*listed)[1].grant.id == for_worker.id);
  CHECK((*listed)[1].grant.issued_at_s > 0);
  CHECK_FALSE((*listed)[1].revoked);

  auto server = authority::open(files.dir());
  REQUIRE(server);
  CHECK((*server)->known_tokens() == 2);
  CHECK((*server)->authenticate("Bearer " + *second));
  CHECK((*server)->check(*second, action::work, "orders"));
  CHECK((*server)->authenticate("").error().code == errc::unauthenticated);
  auto unknown = files.revoke("t-nobody");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == errc::not_found);
  REQUIRE(files.revoke(for_worker.id));
  // The server reads the registry again within a second or so.
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto checked = (*server)->authenticate("Bearer " + *second);
    refused = !checked && checked.error().message.find("revoked") != std::string::npos;
  }
  CHECK(refused);
  CHECK((*server)->authenticate(*first));  // The others stand.

  // A corrupt key file is an error, not a new key.
  { std::ofstream(files.key_file(), std::ios::trunc) << "not hex\n"; }
  auto broken = authority::open(files.dir());
  REQUIRE_FALSE(broken);
  CHECK(broken.error().code == errc::corrupt);
}
