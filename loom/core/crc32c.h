// CRC-32C (Castagnoli): TFRecord framing (TensorBoard files) and the comm wire header.
//
//   // given: const void* more, size_t n_more
//   uint32_t c = core::crc32c("123456789", 9);          // 0xE3069283
//   c = core::crc32c_extend(c, more, n_more);             // checksum of the concatenation
//   uint32_t m = core::mask_crc32c(c);                    // what a TFRecord stores
//
// Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loom::core {

// Continues a checksum `crc` (0 for the empty prefix) over `nbytes` more bytes.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t nbytes);

inline uint32_t crc32c(const void* data, size_t nbytes) { return crc32c_extend(0, data, nbytes); }

// TFRecord stores CRCs masked, because checksumming data that contains
// embedded CRCs is weak: rotate right by 15 bits, then add a constant.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

inline uint32_t unmask_crc32c(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace loom::core
