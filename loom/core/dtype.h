// Element types and dispatch over them.
//
//   DType t = DType::F32;  itemsize(t) == 4;  name(t) == "f32";
//   visit_dtype(t, [&]<class T>() { ... });   // T is float for F32
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>

#include "loom/core/error.h"
#include "loom/core/half.h"

namespace loom::core {

enum class DType : uint8_t { F32, F64, F16, BF16, I32, I64, U8, Bool };

constexpr size_t itemsize(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F64: case DType::I64: return 8;
    case DType::F16: case DType::BF16: return 2;
    case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}
constexpr bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::F16 || t == DType::BF16;
}
constexpr bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }
constexpr bool is_integral(DType t) { return !is_floating(t); }

std::string_view name(DType t);
// Parses "f32", "float32", "float", "bf16", ... ; throws ValueError naming the text.
DType dtype_from_name(std::string_view s);
std::ostream& operator<<(std::ostream& os, DType t);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

// Calls f.template operator()<T>() with the C++ type of `t`.
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::F16: return f.template operator()<Half>();
    case DType::BF16: return f.template operator()<BFloat16>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::U8: return f.template operator()<uint8_t>();
    case DType::Bool: return f.template operator()<bool>();
  }
  throw InternalError("visit_dtype: bad dtype");
}

// Only the types kernels compute in natively (f32, f64, i32, i64, u8); half
// types are converted to f32 around the kernel by the op layer.
template <class F>
decltype(auto) visit_compute_dtype(DType t, std::string_view op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::U8: return f.template operator()<uint8_t>();
    case DType::Bool: return f.template operator()<bool>();
    default: break;
  }
  throw TypeError(format("{}: dtype {} is not supported by this kernel", op, name(t)));
}

template <class F>
decltype(auto) visit_float_dtype(DType t, std::string_view op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    default: break;
  }
  throw TypeError(format("{}: expected a floating dtype (f32 or f64), got {}", op, name(t)));
}

}  // namespace loom::core
