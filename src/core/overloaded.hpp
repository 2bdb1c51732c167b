#pragma once
/// `std::visit(overloaded{[](const A&) {...}, [](const B&) {...}}, v)`.

namespace dtsd {

template <class... Ts>
struct overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
overloaded(Ts...) -> overloaded<Ts...>;

}  // namespace dtsd
