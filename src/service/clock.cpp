#include "service/clock.hpp"

#include <chrono>

namespace dtsd::service {
namespace {

class system_wall_clock final : public clock {
 public:
  std::int64_t now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

const clock& wall_clock() {
  static const system_wall_clock instance;
  return instance;
}

}  // namespace dtsd::service
