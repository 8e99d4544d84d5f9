// Errors. Two kinds, as in DESIGN.md:
//
//   // given: int64_t n, const Shape& a, const Shape& b, const void* impl
//   LOOM_CHECK(n >= 0, "reshape: size {} is negative", n);      // user error -> ValueError
//   LOOM_CHECK_T(ShapeError, a == b, "add: shapes {} and {}", to_string(a), to_string(b));
//   LOOM_ASSERT(impl != nullptr);                                // our bug -> InternalError
//
// Messages use "{}" placeholders filled in order from the arguments (anything
// with operator<<). The library never exits or aborts; it throws.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace loom {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class ValueError : public Error { using Error::Error; };
class ShapeError : public ValueError { using ValueError::ValueError; };
class IndexError : public ValueError { using ValueError::ValueError; };
class TypeError : public ValueError { using ValueError::ValueError; };
class ConfigError : public Error { using Error::Error; };
class IoError : public Error { using Error::Error; };
class CommError : public Error { using Error::Error; };
class TimeoutError : public CommError { using CommError::CommError; };
class PeerLostError : public CommError { using CommError::CommError; };
class AuthError : public CommError { using CommError::CommError; };
class InternalError : public Error { using Error::Error; };

namespace detail {

inline void format_into(std::ostringstream& os, std::string_view fmt) { os << fmt; }

template <class T, class... Rest>
void format_into(std::ostringstream& os, std::string_view fmt, const T& v, const Rest&... rest) {
  auto pos = fmt.find("{}");
  if (pos == std::string_view::npos) {
    os << fmt;
    return;
  }
  os << fmt.substr(0, pos) << v;
  format_into(os, fmt.substr(pos + 2), rest...);
}

}  // namespace detail

// format("{} of {}", 3, "x") -> "3 of x".
template <class... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, fmt, args...);
  return os.str();
}

}  // namespace loom

#define LOOM_CHECK_T(ErrType, cond, ...)                      \
  do {                                                        \
    if (!(cond)) [[unlikely]] {                               \
      throw ::loom::ErrType(::loom::format(__VA_ARGS__));     \
    }                                                         \
  } while (0)

#define LOOM_CHECK(cond, ...) LOOM_CHECK_T(ValueError, cond, __VA_ARGS__)

#define LOOM_ASSERT(cond)                                                                 \
  do {                                                                                    \
    if (!(cond)) [[unlikely]] {                                                           \
      throw ::loom::InternalError(::loom::format("internal error: {} at {}:{}", #cond,    \
                                                 __FILE__, __LINE__));                    \
    }                                                                                     \
  } while (0)
