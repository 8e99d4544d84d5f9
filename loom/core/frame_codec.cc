#include "loom/core/frame_codec.h"

#include <bit>
#include <cstring>

#include "loom/core/crc32c.h"

namespace loom::core {
namespace {

// The length field follows the magic and the version.
constexpr size_t kMagicVersionBytes = 6;

// A short printable rendering of untrusted bytes, for error messages.
std::string printable(std::span<const std::byte> b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    const auto c = static_cast<unsigned char>(x);
    if (c >= 0x20 && c < 0x7F) {
      s += static_cast<char>(c);
    } else {
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 0xF];
    }
  }
  return s;
}

}  // namespace

// ---- FrameWriter ------------------------------------------------------------

std::byte* FrameWriter::grow(size_t n) {
  if (is_fixed_) {
    LOOM_ASSERT(n <= fixed_.size() - pos_);
    std::byte* p = fixed_.data() + pos_;
    pos_ += n;
    return p;
  }
  own_.resize(pos_ + n);
  std::byte* p = reinterpret_cast<std::byte*>(own_.data()) + pos_;
  pos_ += n;
  return p;
}

std::span<const std::byte> FrameWriter::written() const {
  if (is_fixed_) return fixed_.first(pos_);
  return std::as_bytes(std::span(own_.data(), pos_));
}

FrameWriter& FrameWriter::bytes(std::span<const std::byte> b) {
  std::byte* p = grow(b.size());
  if (!b.empty()) std::memcpy(p, b.data(), b.size());
  return *this;
}

FrameWriter& FrameWriter::str(std::string_view s) {
  LOOM_ASSERT(s.size() <= UINT32_MAX);
  return u32(static_cast<uint32_t>(s.size())).bytes(s);
}

FrameWriter& FrameWriter::i64_list(std::span<const int64_t> values) {
  if constexpr (std::endian::native == std::endian::little) return bytes(std::as_bytes(values));
  for (int64_t v : values) i64(v);
  return *this;
}

FrameWriter& FrameWriter::prefix(const FrameFormat& f) {
  bytes(std::as_bytes(std::span(f.magic))).u16(f.version);
  if (f.length_field) u16(static_cast<uint16_t>(f.nbytes));
  return *this;
}

FrameWriter& FrameWriter::zeros(size_t n) {
  std::byte* p = grow(n);
  std::memset(p, 0, n);
  return *this;
}

FrameWriter& FrameWriter::checksum() {
  const std::span<const std::byte> before = written();
  return u32(core::crc32c(before.data(), before.size()));
}

std::string FrameWriter::take() {
  LOOM_ASSERT(!is_fixed_);
  pos_ = 0;
  return std::move(own_);
}

// ---- FrameReader ------------------------------------------------------------

void FrameReader::fail(std::string_view field, std::string_view why) const {
  throw CommError(format("{}: {}, field '{}': {}", protocol_, message_, field, why));
}

void FrameReader::need(size_t n, const char* field) const {
  if (remaining() < n) fail(field, format("truncated: {} bytes left, need {}", remaining(), n));
}

int64_t FrameReader::i64(const char* field, int64_t min, int64_t max) {
  const int64_t v = i64(field);
  if (v < min || v > max) fail(field, format("value {} outside [{}, {}]", v, min, max));
  return v;
}

std::span<const std::byte> FrameReader::bytes(size_t n, const char* field) {
  need(n, field);
  const auto out = data_.subspan(pos_, n);
  pos_ += n;
  return out;
}

std::string FrameReader::str(const char* field, size_t max_nbytes) {
  const uint32_t n = u32(field);
  if (n > max_nbytes) fail(field, format("{} bytes, limit {}", n, max_nbytes));
  const auto b = bytes(n, field);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

std::vector<int64_t> FrameReader::i64_list(const char* field) {
  if (remaining() % 8 != 0) fail(field, format("{} bytes are not a list of i64", remaining()));
  std::vector<int64_t> out(remaining() / 8);
  if constexpr (std::endian::native == std::endian::little) {
    const auto b = bytes(remaining(), field);
    if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
  } else {
    for (int64_t& v : out) v = i64(field);
  }
  return out;
}

void FrameReader::zeros(size_t n, const char* field) {
  for (std::byte b : bytes(n, field)) {
    if (b != std::byte{0}) fail(field, "reserved bytes are not zero");
  }
}

void FrameReader::checksum() {
  const uint32_t computed = core::crc32c(data_.data(), pos_);
  const uint32_t stored = u32("checksum");
  if (stored != computed) fail("checksum", format("checksum mismatch (stored {}, computed {})", stored, computed));
}

void FrameReader::done() const {
  if (remaining() != 0) fail("end", format("{} unexpected trailing bytes", remaining()));
}

// ---- the prefix -------------------------------------------------------------

FrameReader open_frame(std::span<const std::byte> bytes, const FrameFormat& f) {
  FrameReader r(bytes, f.protocol, f.message);
  const size_t prefix = kMagicVersionBytes + (f.length_field ? 2 : 0);
  if (bytes.size() < prefix) {
    r.fail("magic", format("truncated: {} bytes, a {} starts with {}", bytes.size(), f.message, prefix));
  }
  const auto magic = r.bytes(4, "magic");
  if (std::memcmp(magic.data(), f.magic.data(), 4) != 0) {
    r.fail("magic", format("bad magic \"{}\", expected \"{}\" (not a Loom {} message, or a corrupted stream)",
                           printable(magic), std::string_view(f.magic.data(), 4), f.protocol));
  }
  const uint16_t version = r.u16("version");
  if (version != f.version) {
    r.fail("version", format("unsupported {} version {}, this build speaks version {} (mixed Loom versions in one "
                             "job?)",
                             f.message, version, f.version));
  }
  if (f.length_field) {
    const uint16_t length = r.u16("length");
    if (length != f.nbytes) {
      r.fail("length", format("{} length field is {}, version {} {}s are {} bytes", f.message, length, f.version,
                              f.message, f.nbytes));
    }
  }
  if (bytes.size() != f.nbytes) {
    r.fail("length", format("a {} of {} bytes, expected {}", f.message, bytes.size(), f.nbytes));
  }
  return r;
}

FrameReader open_frame(std::string_view bytes, const FrameFormat& f) {
  return open_frame(std::as_bytes(std::span(bytes)), f);
}

}  // namespace loom::core
