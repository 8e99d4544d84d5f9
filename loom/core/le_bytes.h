// Little-endian integers in byte buffers: what every wire format of Loom uses
// (the transport header, the parameter-server protocol), independent of the
// host's byte order.
//
//   // given: std::byte* p
//   core::put_le<uint32_t>(p, 7);   uint32_t v = core::get_le<uint32_t>(p);
#pragma once

#include <cstddef>
#include <cstdint>

namespace loom::core {

template <class T>
void put_le(std::byte* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::byte>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF);
}

template <class T>
T get_le(const std::byte* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace loom::core
