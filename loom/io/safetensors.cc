#include "loom/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "loom/core/error.h"
#include "loom/io/atomic_file.h"
#include "loom/ops/view.h"

namespace loom::io {

// Tensor bytes are copied as they lie in memory; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

using core::DType;
using core::Tensor;
using nlohmann::json;

namespace {

constexpr const char* kMetadataKey = "__metadata__";
constexpr std::array kDTypes = {DType::F32, DType::F64, DType::F16, DType::BF16,
                                DType::I32, DType::I64, DType::U8,  DType::Bool};
constexpr int kMaxJsonDepth = 3;  // object > entry > shape array

// A name or JSON value as it goes into a message: quoted, and cut short if long.
std::string shorten(std::string_view s, size_t limit = 80) {
  if (s.size() <= limit) return std::string(s);
  return std::string(s.substr(0, limit)) + "...";
}
std::string in_quotes(std::string_view s) { return format("'{}'", shorten(s)); }
std::string json_text(const json& v) { return shorten(v.dump(-1, ' ', false, json::error_handler_t::replace)); }

std::string offsets_text(uint64_t begin, uint64_t end) { return format("[{}, {}]", begin, end); }

// ---- where the bytes come from ----

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Copies exactly `n` bytes at `offset` into `dst`; IoError when the source ends first.
  virtual void read_at(uint64_t offset, void* dst, size_t n) const = 0;
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::filesystem::path& path) : file_(path.string()) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    LOOM_CHECK_T(IoError, fd_ >= 0, "{}: cannot open: {}", file_, std::strerror(errno));
    struct stat st{};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      throw IoError(format("{}: cannot stat: {}", file_, std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw IoError(format("{}: not a regular file", file_));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  uint64_t size() const override { return size_; }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t got = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      LOOM_CHECK_T(IoError, got >= 0, "{}: read at byte {} failed: {}", file_, offset, std::strerror(errno));
      LOOM_CHECK_T(IoError, got > 0, "{}: file ends at byte {}, before the data it announces (did it shrink?)", file_,
                   offset);
      p += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<size_t>(got);
    }
  }

 private:
  std::string file_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

class MemorySource : public ByteSource {
 public:
  MemorySource(std::span<const uint8_t> bytes, std::string_view name) : bytes_(bytes), file_(name) {}
  uint64_t size() const override { return bytes_.size(); }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    LOOM_CHECK_T(IoError, offset <= bytes_.size() && n <= bytes_.size() - offset, "{}: {} bytes at {} lie past the end",
                 file_, n, offset);
    if (n > 0) std::memcpy(dst, bytes_.data() + offset, n);
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string file_;
};

// ---- the header ----

// Parses JSON refusing what the format never has (nesting deeper than a shape
// array, repeated keys) as soon as the parser meets it. Returns the order of
// the top-level keys, which json (a sorted map) forgets.
json parse_json(std::string_view text, const std::string& file, std::vector<std::string>& top_keys) {
  std::vector<std::set<std::string>> open_objects;
  auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        LOOM_CHECK_T(IoError, depth < kMaxJsonDepth, "{}: header nests deeper than a safetensors header can", file);
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        auto key = parsed.get<std::string>();
        if (depth == 1) top_keys.push_back(key);
        LOOM_CHECK_T(IoError, open_objects.back().insert(std::move(key)).second, "{}: header repeats the key {}",
                     file, json_text(parsed));
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    throw IoError(format("{}: header is not valid JSON ({})", file, e.what()));
  }
}

bool as_uint64(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string dtype_and_shape(const TensorInfo& info) {
  return std::string(safetensors_dtype_name(info.dtype)) + " " + core::to_string(info.shape);
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, uint64_t data_nbytes,
                              const std::string& file) {
  const std::string what = file + ": tensor " + in_quotes(name);
  LOOM_CHECK_T(IoError, entry.is_object(), "{} has the entry {}, expected an object", what, json_text(entry));
  for (const auto& [key, _] : entry.items()) {
    LOOM_CHECK_T(IoError, key == "dtype" || key == "shape" || key == "data_offsets",
                 "{} has the unknown field {}", what, in_quotes(key));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    LOOM_CHECK_T(IoError, entry.contains(key), "{} has no field '{}'", what, key);
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = entry["dtype"];
  LOOM_CHECK_T(IoError, dtype.is_string(), "{} has dtype {}, expected a string", what, json_text(dtype));
  auto parsed_dtype = dtype_from_safetensors_name(dtype.get_ref<const std::string&>());
  LOOM_CHECK_T(IoError, parsed_dtype.has_value(),
               "{} has dtype {}, which Loom does not support (F32, F64, F16, BF16, I32, I64, U8, BOOL)", what,
               json_text(dtype));
  info.dtype = *parsed_dtype;

  // Every partial product of the dims (zeros skipped) must fit, so that
  // element counts, byte counts and strides cannot overflow later.
  const json& shape = entry["shape"];
  LOOM_CHECK_T(IoError, shape.is_array(), "{} has shape {}, expected a list of sizes", what, json_text(shape));
  const uint64_t max_elems = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / core::itemsize(info.dtype);
  uint64_t product = 1;
  bool has_zero = false;
  for (const json& d : shape) {
    uint64_t size = 0;
    LOOM_CHECK_T(IoError, as_uint64(d, size), "{} has shape {}: sizes must be non-negative integers", what,
                 json_text(shape));
    LOOM_CHECK_T(IoError, size == 0 || size <= max_elems / product, "{} has shape {}, too many elements", what,
                 json_text(shape));
    if (size == 0) {
      has_zero = true;
    } else {
      product *= size;
    }
    info.shape.push_back(static_cast<int64_t>(size));
  }
  const uint64_t needed = has_zero ? 0 : product * core::itemsize(info.dtype);

  const json& offsets = entry["data_offsets"];
  LOOM_CHECK_T(IoError,
               offsets.is_array() && offsets.size() == 2 && as_uint64(offsets[0], info.data_begin) &&
                   as_uint64(offsets[1], info.data_end),
               "{} has data_offsets {}, expected [begin, end] with non-negative integers", what, json_text(offsets));
  const std::string range = offsets_text(info.data_begin, info.data_end);
  LOOM_CHECK_T(IoError, info.data_begin <= info.data_end, "{} has data_offsets {} that end before they begin", what,
               range);
  LOOM_CHECK_T(IoError, info.data_end <= data_nbytes,
               "{} has data_offsets {} past the end of the data section ({} bytes); is the file truncated?", what,
               range, data_nbytes);
  LOOM_CHECK_T(IoError, info.nbytes() == needed, "{} data_offsets {} hold {} bytes but {} needs {}", what, range,
               info.nbytes(), dtype_and_shape(info), needed);
  return info;
}

Metadata parse_metadata(const json& value, const std::string& file) {
  Metadata metadata;
  if (value.is_null()) return metadata;
  LOOM_CHECK_T(IoError, value.is_object(), "{}: __metadata__ is {}, expected an object of strings", file,
               json_text(value));
  for (const auto& [key, v] : value.items()) {
    LOOM_CHECK_T(IoError, v.is_string(), "{}: metadata {} is {}, expected a string", file, in_quotes(key),
                 json_text(v));
    metadata.emplace(key, v.get<std::string>());
  }
  return metadata;
}

// Byte ranges of different tensors must not share a byte (empty ranges share none).
void check_no_overlap(const std::vector<TensorInfo>& tensors, const std::string& file) {
  std::vector<const TensorInfo*> by_begin;
  for (const auto& t : tensors) {
    if (t.nbytes() > 0) by_begin.push_back(&t);
  }
  std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data_begin < b->data_begin;
  });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const TensorInfo& a = *by_begin[i - 1];
    const TensorInfo& b = *by_begin[i];
    LOOM_CHECK_T(IoError, a.data_end <= b.data_begin, "{}: tensors {} {} and {} {} share bytes", file,
                 in_quotes(a.name), offsets_text(a.data_begin, a.data_end), in_quotes(b.name),
                 offsets_text(b.data_begin, b.data_end));
  }
}

SafetensorsHeader parse_header(std::string_view text, uint64_t data_nbytes, const std::string& file) {
  std::vector<std::string> order;
  json root = parse_json(text, file, order);
  LOOM_CHECK_T(IoError, root.is_object(), "{}: header is {}, expected a JSON object", file, json_text(root));
  SafetensorsHeader header;
  header.header_nbytes = text.size();
  header.data_nbytes = data_nbytes;
  header.tensors.reserve(order.size());
  for (const std::string& key : order) {
    const json& value = root[key];
    if (key == kMetadataKey) {
      header.metadata = parse_metadata(value, file);
    } else {
      header.tensors.push_back(parse_tensor_entry(key, value, data_nbytes, file));
    }
  }
  check_no_overlap(header.tensors, file);
  return header;
}

SafetensorsHeader read_header(const ByteSource& src, const std::string& file) {
  const uint64_t size = src.size();
  LOOM_CHECK_T(IoError, size >= 8, "{}: {} bytes is too short for a safetensors file (at least 8)", file, size);
  uint8_t prefix[8];
  src.read_at(0, prefix, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  LOOM_CHECK_T(IoError, n <= kMaxSafetensorsHeaderBytes, "{}: header length {} exceeds the limit of {} bytes", file, n,
               kMaxSafetensorsHeaderBytes);
  LOOM_CHECK_T(IoError, n <= size - 8, "{}: header length {} exceeds the {} bytes after the length; is it truncated?",
               file, n, size - 8);
  std::string text(n, '\0');
  src.read_at(8, text.data(), n);
  return parse_header(text, size - 8 - n, file);
}

SafetensorsFile load(const ByteSource& src, const std::string& file) {
  SafetensorsHeader header = read_header(src, file);
  const uint64_t data_start = 8 + header.header_nbytes;
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  out.tensors.reserve(header.tensors.size());
  for (TensorInfo& info : header.tensors) {
    Tensor t = Tensor::empty(info.shape, info.dtype);
    if (info.nbytes() > 0) {
      auto* bytes = static_cast<unsigned char*>(t.data_ptr());
      src.read_at(data_start + info.data_begin, bytes, info.nbytes());
      // A bool byte other than 0 or 1 is not a C++ bool: refuse it rather than hand it on.
      if (info.dtype == DType::Bool) {
        const bool all_01 = std::all_of(bytes, bytes + info.nbytes(), [](unsigned char b) { return b <= 1; });
        LOOM_CHECK_T(IoError, all_01, "{}: BOOL tensor {} holds bytes other than 0 and 1", file, in_quotes(info.name));
      }
    }
    out.tensors.emplace_back(std::move(info.name), std::move(t));
  }
  return out;
}

// ---- writing ----

std::string header_text(const NamedTensors& tensors, const Metadata& metadata, const std::string& file) {
  // Built by hand, entry by entry, to keep the caller's order in O(n).
  std::string text = "{";
  auto add = [&](const std::string& key, const json& value) {
    try {
      if (text.size() > 1) text += ',';
      text += json(key).dump();
      text += ':';
      text += value.dump();
    } catch (const json::exception&) {
      throw ValueError(format("{}: {} or its value is not valid UTF-8", file, in_quotes(key)));
    }
  };
  if (!metadata.empty()) add(kMetadataKey, json(metadata));
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    LOOM_CHECK(name != kMetadataKey, "{}: a tensor cannot be named {}", file, kMetadataKey);
    LOOM_CHECK(seen.insert(name).second, "{}: two tensors are named {}", file, in_quotes(name));
    LOOM_CHECK(t.defined(), "{}: tensor {} is undefined", file, in_quotes(name));
    const uint64_t nbytes = t.nbytes();
    json entry = json::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = {offset, offset + nbytes};
    add(name, entry);
    offset += nbytes;
  }
  text += '}';
  // Spaces up to a multiple of 8: the data section starts 8-byte aligned.
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  throw InternalError("safetensors_dtype_name: bad dtype");
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (DType t : kDTypes) {
    if (safetensors_dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

const Tensor* SafetensorsFile::find(std::string_view name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

const Tensor& SafetensorsFile::at(std::string_view name) const {
  const Tensor* t = find(name);
  LOOM_CHECK_T(IoError, t != nullptr, "safetensors file has no tensor {}", in_quotes(name));
  return *t;
}

void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors, const Metadata& metadata) {
  const std::string file = path.string();
  const std::string header = header_text(tensors, metadata, file);
  std::array<uint8_t, 8> prefix{};
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(prefix.data(), prefix.size());
  out.write(header);
  for (const auto& [name, t] : tensors) {
    // One tensor at a time reaches host memory in row-major layout.
    LOOM_CHECK(t.device().is_cpu(), "{}: tensor {} is on {}; only CPU tensors can be saved", file, in_quotes(name),
               core::to_string(t.device()));
    if (t.nbytes() == 0) continue;
    const Tensor dense = t.is_contiguous() ? t : ops::contiguous(t.detach());
    out.write(dense.data_ptr(), dense.nbytes());
  }
  out.commit();
}

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  FileSource src(path);
  return load(src, path.string());
}

SafetensorsHeader read_safetensors_header(const std::filesystem::path& path) {
  FileSource src(path);
  return read_header(src, path.string());
}

SafetensorsFile read_safetensors_from_memory(std::span<const uint8_t> bytes, std::string_view name) {
  return load(MemorySource(bytes, name), std::string(name));
}

SafetensorsHeader read_safetensors_header_from_memory(std::span<const uint8_t> bytes, std::string_view name) {
  return read_header(MemorySource(bytes, name), std::string(name));
}

}  // namespace loom::io
