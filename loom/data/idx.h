// The IDX format of the MNIST family: a big-endian header, then the data.
//
//   Tensor images = data::read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
//   // u8 [10000, 28, 28]; gzipped files (.gz) are gunzipped on the fly
//   data::write_idx("/tmp/x-idx2-float", ops::zeros({4, 3}));   // ".gz" -> gzipped
//
// Layout: bytes 0-1 are zero, byte 2 is the element type, byte 3 the number of
// dims; then one big-endian u32 per dim; then the elements, big-endian, row-major.
//
//   type  element        Loom dtype
//   0x08  unsigned byte  u8
//   0x09  signed byte    i32 (Loom has no i8)
//   0x0B  i16            i32 (Loom has no i16)
//   0x0C  i32            i32
//   0x0D  f32            f32
//   0x0E  f64            f64
//
// A file is trusted only after every field checks out: the magic, the type
// code, 1 <= ndims <= 8, a dims product that neither overflows nor disagrees
// with the bytes present (too few: truncated; too many: trailing garbage).
// Every failure is an IoError that names the file. Memory grows with the
// bytes actually present, never with what a header claims.
#pragma once

#include <string>

#include "loom/core/tensor.h"

namespace loom::data {

core::Tensor read_idx(const std::string& path);

// Writes u8 (0x08), i32 (0x0C), f32 (0x0D) or f64 (0x0E) tensors with 1 to 8
// dims; gzipped when `path` ends in ".gz". Throws IoError / TypeError.
void write_idx(const std::string& path, const core::Tensor& t);

}  // namespace loom::data
