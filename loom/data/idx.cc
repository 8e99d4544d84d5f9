#include "loom/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <array>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

using core::DType;
using core::Tensor;

constexpr int kMaxDims = 8;

// A gzFile that closes itself. gzread passes files that are not gzipped through
// unchanged, so one reader serves both.
struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzHandle = std::unique_ptr<gzFile_s, GzCloser>;

std::string gz_message(gzFile f) {
  int code = 0;
  const char* msg = gzerror(f, &code);
  return msg && *msg ? msg : "unknown zlib error";
}

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    file_.reset(gzopen(path.c_str(), "rb"));
    LOOM_CHECK_T(IoError, file_ != nullptr, "read_idx: cannot open '{}': {}", path, std::strerror(errno));
    gzbuffer(file_.get(), 1 << 18);
  }

  // Reads up to n bytes into dst; returns how many were read (fewer only at the
  // end). A gzip stream that stops early reads as a short read (see truncated()).
  size_t read(void* dst, size_t n) {
    size_t done = 0;
    auto* out = static_cast<char*>(dst);
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      int got = gzread(file_.get(), out + done, chunk);
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    int code = Z_OK;
    gzerror(file_.get(), &code);
    if (code == Z_BUF_ERROR) {
      gzip_ended_early_ = true;
    } else {
      LOOM_CHECK_T(IoError, code == Z_OK || code == Z_STREAM_END, "read_idx: '{}' is corrupt or unreadable: {}",
                   path_, gz_message(file_.get()));
    }
    return done;
  }

  // Reads exactly n bytes, or throws an IoError saying what was expected and found.
  void read_exact(void* dst, size_t n, const char* what, size_t already) {
    size_t got = read(dst, n);
    LOOM_CHECK_T(IoError, got == n, "read_idx: '{}' is truncated: the {} needs {} bytes, the file has {}{}", path_,
                 what, already + n, already + got, note());
  }

  std::string note() const { return gzip_ended_early_ ? " (the gzip stream ends early)" : ""; }
  bool gzip_ended_early() const { return gzip_ended_early_; }

 private:
  std::string path_;
  GzHandle file_;
  bool gzip_ended_early_ = false;
};

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

struct IdxType {
  size_t file_itemsize;
  DType dtype;
};

bool idx_type(unsigned code, IdxType* out) {
  switch (code) {
    case 0x08: *out = {1, DType::U8}; return true;
    case 0x09: *out = {1, DType::I32}; return true;
    case 0x0B: *out = {2, DType::I32}; return true;
    case 0x0C: *out = {4, DType::I32}; return true;
    case 0x0D: *out = {4, DType::F32}; return true;
    case 0x0E: *out = {8, DType::F64}; return true;
    default: return false;
  }
}

// Big-endian file elements -> native tensor elements.
void decode(unsigned code, const unsigned char* src, int64_t n, void* dst) {
  switch (code) {
    case 0x08:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n));  // src may be null when n == 0
      break;
    case 0x09: {
      auto* o = static_cast<int32_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int8_t>(src[i]);
      break;
    }
    case 0x0B: {
      auto* o = static_cast<int32_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        o[i] = static_cast<int16_t>(static_cast<uint16_t>((src[2 * i] << 8) | src[2 * i + 1]));
      }
      break;
    }
    case 0x0C:
    case 0x0D: {
      auto* o = static_cast<uint32_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = be32(src + 4 * i);
      break;
    }
    case 0x0E: {
      auto* o = static_cast<uint64_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        o[i] = (uint64_t{be32(src + 8 * i)} << 32) | be32(src + 8 * i + 4);
      }
      break;
    }
    default: LOOM_ASSERT(false);
  }
}

std::string hex_bytes(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s = "0x";
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Tensor read_idx(const std::string& path) {
  Reader in(path);
  std::array<unsigned char, 4> magic{};
  in.read_exact(magic.data(), 4, "header", 0);
  LOOM_CHECK_T(IoError, magic[0] == 0 && magic[1] == 0,
               "read_idx: '{}' is not an IDX file: the magic number must start with two zero bytes, found {}",
               path, hex_bytes(magic.data(), 4));
  IdxType type{};
  LOOM_CHECK_T(IoError, idx_type(magic[2], &type),
               "read_idx: '{}' has unknown element type code {} (expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e)",
               path, hex_bytes(&magic[2], 1));
  const int ndims = magic[3];
  LOOM_CHECK_T(IoError, ndims >= 1 && ndims <= kMaxDims, "read_idx: '{}' declares {} dims (expected 1 to {})",
               path, ndims, kMaxDims);

  std::array<unsigned char, 4 * kMaxDims> dim_bytes{};
  in.read_exact(dim_bytes.data(), 4 * static_cast<size_t>(ndims), "header", 4);
  core::Shape shape;
  uint64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    uint64_t n = be32(dim_bytes.data() + 4 * d);
    shape.push_back(static_cast<int64_t>(n));
    LOOM_CHECK_T(IoError, !__builtin_mul_overflow(count, n, &count),
                 "read_idx: '{}' declares dims {} whose product overflows", path, core::to_string(shape));
  }
  // The dims other than zeros must multiply out too (they set the strides).
  uint64_t nonzero = 1;
  for (int64_t d : shape) {
    LOOM_CHECK_T(IoError,
                 !__builtin_mul_overflow(nonzero, static_cast<uint64_t>(std::max<int64_t>(d, 1)), &nonzero) &&
                     nonzero <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 "read_idx: '{}' declares dims {} whose product overflows", path, core::to_string(shape));
  }
  uint64_t nbytes = 0;
  LOOM_CHECK_T(IoError,
               !__builtin_mul_overflow(count, type.file_itemsize, &nbytes) &&
                   nbytes <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "read_idx: '{}' declares dims {} whose byte count overflows", path, core::to_string(shape));
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);

  // Read in chunks, so a header that claims far more than the file holds costs
  // no more memory than the file itself.
  std::vector<unsigned char> raw;
  raw.reserve(static_cast<size_t>(std::min<uint64_t>(nbytes, 64u << 20)));
  constexpr size_t kChunk = 16u << 20;
  while (raw.size() < nbytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(nbytes - raw.size(), kChunk));
    const size_t at = raw.size();
    raw.resize(at + want);
    const size_t got = in.read(raw.data() + at, want);
    raw.resize(at + got);
    if (got < want) break;
  }
  LOOM_CHECK_T(IoError, raw.size() == nbytes,
               "read_idx: '{}' is truncated: dims {} need {} bytes of data ({} with the header), the file has {}{}",
               path, core::to_string(shape), nbytes, header + nbytes, header + raw.size(), in.note());
  unsigned char extra = 0;
  const size_t trailing = in.read(&extra, 1);
  LOOM_CHECK_T(IoError, trailing == 0,
               "read_idx: '{}' has trailing bytes after the {} bytes that dims {} declare", path, header + nbytes,
               core::to_string(shape));
  // All data arrived but the gzip trailer (checksum and length) is cut off.
  LOOM_CHECK_T(IoError, !in.gzip_ended_early(),
               "read_idx: '{}' is truncated: the gzip stream ends before its checksum", path);

  Tensor t = Tensor::empty(shape, type.dtype);
  decode(magic[2], raw.data(), static_cast<int64_t>(count), t.data_ptr());
  return t;
}

void write_idx(const std::string& path, const Tensor& t) {
  unsigned code = 0;
  switch (t.dtype()) {
    case DType::U8: code = 0x08; break;
    case DType::I32: code = 0x0C; break;
    case DType::F32: code = 0x0D; break;
    case DType::F64: code = 0x0E; break;
    default:
      throw TypeError(format("write_idx: dtype {} has no IDX type (use u8, i32, f32 or f64)", t.dtype()));
  }
  LOOM_CHECK_T(ShapeError, t.dim() >= 1 && t.dim() <= kMaxDims, "write_idx: IDX holds 1 to {} dims, got shape {}",
               kMaxDims, core::to_string(t.shape()));
  std::vector<unsigned char> buf;
  buf.insert(buf.end(), {0, 0, static_cast<unsigned char>(code), static_cast<unsigned char>(t.dim())});
  auto put32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) buf.push_back(static_cast<unsigned char>(v >> s));
  };
  for (int64_t d : t.shape()) {
    LOOM_CHECK_T(ShapeError, d <= int64_t{UINT32_MAX}, "write_idx: dim {} does not fit IDX's u32", d);
    put32(static_cast<uint32_t>(d));
  }
  Tensor c = ops::contiguous(t);
  const size_t isz = core::itemsize(t.dtype());
  const auto* src = static_cast<const unsigned char*>(c.data_ptr());
  const size_t header = buf.size();
  buf.resize(header + c.nbytes());
  for (int64_t i = 0; i < c.numel(); ++i) {
    for (size_t b = 0; b < isz; ++b) buf[header + i * isz + b] = src[i * isz + (isz - 1 - b)];  // to big-endian
  }

  if (ends_with(path, ".gz")) {
    GzHandle f(gzopen(path.c_str(), "wb"));
    LOOM_CHECK_T(IoError, f != nullptr, "write_idx: cannot create '{}': {}", path, std::strerror(errno));
    size_t done = 0;
    while (done < buf.size()) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(buf.size() - done, 1u << 30));
      int put = gzwrite(f.get(), buf.data() + done, chunk);
      LOOM_CHECK_T(IoError, put > 0, "write_idx: writing '{}' failed: {}", path, gz_message(f.get()));
      done += static_cast<size_t>(put);
    }
    LOOM_CHECK_T(IoError, gzclose(f.release()) == Z_OK, "write_idx: closing '{}' failed", path);
  } else {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
    LOOM_CHECK_T(IoError, f != nullptr, "write_idx: cannot create '{}': {}", path, std::strerror(errno));
    LOOM_CHECK_T(IoError, std::fwrite(buf.data(), 1, buf.size(), f.get()) == buf.size(),
                 "write_idx: writing '{}' failed: {}", path, std::strerror(errno));
    LOOM_CHECK_T(IoError, std::fclose(f.release()) == 0, "write_idx: closing '{}' failed: {}", path,
                 std::strerror(errno));
  }
}

}  // namespace loom::data
