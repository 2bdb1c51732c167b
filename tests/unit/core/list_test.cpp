#include <doctest/doctest.h>

#include "core/list.hpp"

using namespace dtsd::core;

namespace {

list_row row(std::string id, std::string name, std::int64_t created, runtime_status status = runtime_status::running) {
  list_row r;
  r.instance_id = std::move(id);
  r.name = std::move(name);
  r.created_at_ns = created;
  r.status = status;
  return r;
}

}  // namespace

TEST_CASE("list: pages of partitions merge into one order, counts summed, the asked window kept") {
  list_page a, b;
  a.rows = {row("a3", "x", 30), row("a1", "y", 10)};
  a.total = 2;
  a.by_status[static_cast<std::size_t>(runtime_status::running)] = 2;
  b.rows = {row("b4", "x", 40), row("b2", "z", 20, runtime_status::failed)};
  b.total = 2;
  b.by_status[static_cast<std::size_t>(runtime_status::failed)] = 1;
  b.by_status[static_cast<std::size_t>(runtime_status::running)] = 1;
  const std::vector<list_sort> newest_first{{list_column::created_at, true}};

  auto page = merge_list_pages({a, b}, newest_first, 1, 2);
  REQUIRE(page.rows.size() == 2);
  CHECK(page.rows[0].instance_id == "a3");
  CHECK(page.rows[1].instance_id == "b2");
  CHECK(page.total == 4);
  CHECK(page.by_status[static_cast<std::size_t>(runtime_status::running)] == 3);

  auto by_name = merge_list_pages({a, b}, {{list_column::name, false}}, 0, 10);
  REQUIRE(by_name.rows.size() == 4);
  // Equal names: the id decides, in the first column's direction.
  CHECK(by_name.rows[0].instance_id == "a3");
  CHECK(by_name.rows[1].instance_id == "b4");
  CHECK(by_name.rows[3].instance_id == "b2");

  CHECK(merge_list_pages({a, b}, newest_first, 4, 10).rows.empty());
}

TEST_CASE("list: substrings ignore ASCII case; entity ids split into name and key") {
  CHECK(contains_ignoring_case("HelloCities", "ocit"));
  CHECK_FALSE(contains_ignoring_case("Hello", "hellos"));
  CHECK(contains_ignoring_case("anything", ""));
  CHECK(entity_name_of("@counter@k1") == "counter");
  CHECK(entity_key_of("@counter@k1") == "k1");
  CHECK(entity_key_of("plain") == "");
  CHECK(tags_text({{"b", "2"}, {"a", "1"}}) == "a=1, b=2");
}
