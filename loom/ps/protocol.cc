#include "loom/ps/protocol.h"

#include <charconv>
#include <cstring>
#include <limits>

#include "loom/core/crc32c.h"
#include "loom/core/error.h"
#include "loom/core/le_bytes.h"

namespace loom::ps {
namespace {

using core::get_le;
using core::put_le;

constexpr size_t kOffChecksum = 88;
constexpr int64_t kMaxRows = int64_t{1} << 40;
constexpr int64_t kMaxRowNumel = int64_t{1} << 32;
constexpr int64_t kMaxElements = int64_t{1} << 40;  // per key: sizes in bytes then cannot overflow

bool known_op(uint16_t op) { return op >= static_cast<uint16_t>(Op::Init) && op <= static_cast<uint16_t>(Op::Leave); }

}  // namespace

std::string_view op_name(Op op) {
  switch (op) {
    case Op::Init: return "init";
    case Op::Push: return "push";
    case Op::Pull: return "pull";
    case Op::PushPull: return "pushpull";
    case Op::SetOptimizer: return "set_optimizer";
    case Op::GetState: return "get_state";
    case Op::SetState: return "set_state";
    case Op::Replicate: return "replicate";
    case Op::Reply: return "reply";
    case Op::Leave: return "leave";
  }
  return "unknown";
}

uint64_t Header::slice_nbytes() const {
  return static_cast<uint64_t>(num_rows) * static_cast<uint64_t>(row_numel) * core::itemsize(dtype);
}

HeaderBytes encode_header(const Header& h) {
  HeaderBytes b{};
  std::byte* p = b.data();
  std::memcpy(p, "LMPS", 4);
  put_le<uint16_t>(p + 4, kProtocolVersion);
  put_le<uint16_t>(p + 6, static_cast<uint16_t>(kHeaderBytes));
  put_le<uint16_t>(p + 8, static_cast<uint16_t>(h.op));
  put_le<uint16_t>(p + 10, h.flags);
  put_le<uint16_t>(p + 12, static_cast<uint16_t>(h.status));
  put_le<uint16_t>(p + 14, static_cast<uint16_t>(h.dtype));
  put_le<uint32_t>(p + 16, static_cast<uint32_t>(h.sender));
  put_le<uint32_t>(p + 20, h.num_frames);
  put_le<uint64_t>(p + 24, h.request_id);
  put_le<uint64_t>(p + 32, static_cast<uint64_t>(h.key));
  put_le<uint64_t>(p + 40, static_cast<uint64_t>(h.version));
  put_le<uint64_t>(p + 48, static_cast<uint64_t>(h.seq));
  put_le<uint64_t>(p + 56, static_cast<uint64_t>(h.row_begin));
  put_le<uint64_t>(p + 64, static_cast<uint64_t>(h.num_rows));
  put_le<uint64_t>(p + 72, static_cast<uint64_t>(h.row_numel));
  put_le<uint64_t>(p + 80, static_cast<uint64_t>(h.total_rows));
  put_le<uint32_t>(p + kOffChecksum, core::crc32c(p, kOffChecksum));
  return b;
}

Header decode_header(std::span<const std::byte> bytes) {
  LOOM_CHECK_T(CommError, bytes.size() == kHeaderBytes, "ps protocol: header of {} bytes, expected {}", bytes.size(),
               kHeaderBytes);
  const std::byte* p = bytes.data();
  LOOM_CHECK_T(CommError, std::memcmp(p, "LMPS", 4) == 0, "ps protocol: bad magic (not a Loom parameter-server message)");
  const auto version = get_le<uint16_t>(p + 4);
  LOOM_CHECK_T(CommError, version == kProtocolVersion, "ps protocol: version {} (this build speaks {})", version,
               kProtocolVersion);
  LOOM_CHECK_T(CommError, get_le<uint16_t>(p + 6) == kHeaderBytes, "ps protocol: header length {} (expected {})",
               get_le<uint16_t>(p + 6), kHeaderBytes);
  const uint32_t want = core::crc32c(p, kOffChecksum), got = get_le<uint32_t>(p + kOffChecksum);
  LOOM_CHECK_T(CommError, want == got, "ps protocol: header checksum mismatch ({} != {})", got, want);
  LOOM_CHECK_T(CommError, get_le<uint32_t>(p + 92) == 0, "ps protocol: reserved bytes are not zero");
  Header h;
  const auto op = get_le<uint16_t>(p + 8);
  LOOM_CHECK_T(CommError, known_op(op), "ps protocol: unknown op {}", op);
  h.op = static_cast<Op>(op);
  h.flags = get_le<uint16_t>(p + 10);
  LOOM_CHECK_T(CommError, (h.flags & ~flag::kAll) == 0, "ps protocol: unknown flags {}", h.flags);
  const auto status = get_le<uint16_t>(p + 12);
  LOOM_CHECK_T(CommError, status <= 1, "ps protocol: unknown status {}", status);
  h.status = static_cast<Status>(status);
  const auto dtype = get_le<uint16_t>(p + 14);
  LOOM_CHECK_T(CommError, dtype <= static_cast<uint16_t>(core::DType::Bool), "ps protocol: unknown dtype {}", dtype);
  h.dtype = static_cast<core::DType>(dtype);
  h.sender = static_cast<int32_t>(get_le<uint32_t>(p + 16));
  h.num_frames = get_le<uint32_t>(p + 20);
  LOOM_CHECK_T(CommError, h.num_frames <= 16, "ps protocol: {} payload frames (at most 16)", h.num_frames);
  h.request_id = get_le<uint64_t>(p + 24);
  h.key = static_cast<int64_t>(get_le<uint64_t>(p + 32));
  h.version = static_cast<int64_t>(get_le<uint64_t>(p + 40));
  h.seq = static_cast<int64_t>(get_le<uint64_t>(p + 48));
  h.row_begin = static_cast<int64_t>(get_le<uint64_t>(p + 56));
  h.num_rows = static_cast<int64_t>(get_le<uint64_t>(p + 64));
  h.row_numel = static_cast<int64_t>(get_le<uint64_t>(p + 72));
  h.total_rows = static_cast<int64_t>(get_le<uint64_t>(p + 80));
  LOOM_CHECK_T(CommError, h.version >= 0 && h.seq >= 0, "ps protocol: negative version or seq");
  LOOM_CHECK_T(CommError, h.total_rows >= 0 && h.total_rows <= kMaxRows, "ps protocol: key of {} rows", h.total_rows);
  LOOM_CHECK_T(CommError, h.row_numel >= 0 && h.row_numel <= kMaxRowNumel, "ps protocol: rows of {} elements",
               h.row_numel);
  LOOM_CHECK_T(CommError, h.row_numel == 0 || h.total_rows <= kMaxElements / h.row_numel,
               "ps protocol: a key of {} rows of {} elements is larger than 2^40 elements", h.total_rows, h.row_numel);
  LOOM_CHECK_T(CommError, h.row_begin >= 0 && h.num_rows >= 0 && h.row_begin <= h.total_rows &&
                              h.num_rows <= h.total_rows - h.row_begin,
               "ps protocol: slice rows [{}, {}+{}) outside the key's {} rows", h.row_begin, h.row_begin, h.num_rows,
               h.total_rows);
  return h;
}

std::string encode_optimizer(const OptimizerSpec& s) {
  auto num = [](double v) {  // shortest text that reads back as the same double
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, end);
  };
  std::string out;
  out += "rule=" + s.rule + "\n";
  out += "lr=" + num(s.lr) + "\nmomentum=" + num(s.momentum) + "\ndampening=" + num(s.dampening);
  out += "\nweight_decay=" + num(s.weight_decay) + "\nnesterov=" + (s.nesterov ? "1" : "0");
  out += "\nbeta1=" + num(s.beta1) + "\nbeta2=" + num(s.beta2) + "\neps=" + num(s.eps);
  out += "\namsgrad=" + std::string(s.amsgrad ? "1" : "0") + "\nschedule=" + s.schedule;
  out += "\nstep_size=" + std::to_string(s.step_size) + "\ngamma=" + num(s.gamma);
  out += "\nt_max=" + std::to_string(s.t_max) + "\nmin_lr=" + num(s.min_lr);
  out += "\nwarmup_steps=" + std::to_string(s.warmup_steps) + "\nrescale_grad=" + num(s.rescale_grad) + "\n";
  return out;
}

OptimizerSpec decode_optimizer(std::string_view text) {
  OptimizerSpec s;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    LOOM_CHECK(eq != std::string_view::npos, "optimizer spec: line '{}' is not name=value", line);
    const std::string name(line.substr(0, eq));
    const std::string_view value = line.substr(eq + 1);
    auto as_double = [&] {
      double v = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      LOOM_CHECK(ec == std::errc() && ptr == value.data() + value.size(), "optimizer spec: {} = '{}' is not a number",
                 name, value);
      return v;
    };
    auto as_int = [&] {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      LOOM_CHECK(ec == std::errc() && ptr == value.data() + value.size(), "optimizer spec: {} = '{}' is not an integer",
                 name, value);
      return v;
    };
    if (name == "rule") s.rule = value;
    else if (name == "lr") s.lr = as_double();
    else if (name == "momentum") s.momentum = as_double();
    else if (name == "dampening") s.dampening = as_double();
    else if (name == "weight_decay") s.weight_decay = as_double();
    else if (name == "nesterov") s.nesterov = as_int() != 0;
    else if (name == "beta1") s.beta1 = as_double();
    else if (name == "beta2") s.beta2 = as_double();
    else if (name == "eps") s.eps = as_double();
    else if (name == "amsgrad") s.amsgrad = as_int() != 0;
    else if (name == "schedule") s.schedule = value;
    else if (name == "step_size") s.step_size = as_int();
    else if (name == "gamma") s.gamma = as_double();
    else if (name == "t_max") s.t_max = as_int();
    else if (name == "min_lr") s.min_lr = as_double();
    else if (name == "warmup_steps") s.warmup_steps = as_int();
    else if (name == "rescale_grad") s.rescale_grad = as_double();
    else throw ValueError(format("optimizer spec: unknown field '{}'", name));
  }
  LOOM_CHECK(s.rule == "sgd" || s.rule == "adam" || s.rule == "adamw", "optimizer spec: unknown rule '{}' (sgd, adam, adamw)",
             s.rule);
  LOOM_CHECK(s.schedule == "constant" || s.schedule == "step" || s.schedule == "cosine",
             "optimizer spec: unknown schedule '{}' (constant, step, cosine)", s.schedule);
  LOOM_CHECK(s.lr >= 0 && s.step_size >= 1 && s.t_max >= 1 && s.warmup_steps >= 0,
             "optimizer spec: lr must be >= 0, step_size and t_max >= 1, warmup_steps >= 0");
  return s;
}

}  // namespace loom::ps
