#include "loom/core/dtype.h"

#include <string>

namespace loom::core {

std::string_view name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
  }
  return "?";
}

DType dtype_from_name(std::string_view s) {
  struct Alias { std::string_view text; DType t; };
  static constexpr Alias kAliases[] = {
      {"f32", DType::F32}, {"float32", DType::F32}, {"float", DType::F32},
      {"f64", DType::F64}, {"float64", DType::F64}, {"double", DType::F64},
      {"f16", DType::F16}, {"float16", DType::F16}, {"half", DType::F16},
      {"bf16", DType::BF16}, {"bfloat16", DType::BF16},
      {"i32", DType::I32}, {"int32", DType::I32}, {"i64", DType::I64}, {"int64", DType::I64},
      {"u8", DType::U8}, {"uint8", DType::U8}, {"bool", DType::Bool}};
  for (const auto& a : kAliases) {
    if (a.text == s) return a.t;
  }
  throw ValueError(format("unknown dtype '{}' (expected one of f32, f64, f16, bf16, i32, i64, u8, bool)",
                          std::string(s)));
}

std::ostream& operator<<(std::ostream& os, DType t) { return os << name(t); }

}  // namespace loom::core
