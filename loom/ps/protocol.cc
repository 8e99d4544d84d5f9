#include "loom/ps/protocol.h"

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

bool known_op(uint16_t op) { return op >= static_cast<uint16_t>(Op::Init) && op <= static_cast<uint16_t>(Op::ShmAttach); }

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
    case Op::ShmAttach: return "shm_attach";
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

EncodedShardState encode_shard_state(const ShardState& state) {
  EncodedShardState out;
  out.counters.resize(8 * (2 + state.versions.size()));
  std::byte* p = out.counters.data();
  put_le<uint64_t>(p, static_cast<uint64_t>(state.updates));
  put_le<uint64_t>(p + 8, static_cast<uint64_t>(state.round));
  for (size_t i = 0; i < state.versions.size(); ++i) {
    put_le<uint64_t>(p + 16 + 8 * i, static_cast<uint64_t>(state.versions[i]));
  }
  out.frames.reserve(state.slots.size() + 2);
  out.frames.emplace_back(state.weights);
  for (const auto& slot : state.slots) out.frames.emplace_back(slot);
  out.frames.emplace_back(out.counters);
  return out;
}

ShardState decode_shard_state(std::span<const std::span<const std::byte>> frames) {
  LOOM_CHECK_T(CommError, frames.size() >= 2, "ps protocol: a slice's state needs weights and counters, got {} frames",
               frames.size());
  const std::span<const std::byte> counters = frames.back();
  LOOM_CHECK_T(CommError, counters.size() % 8 == 0 && counters.size() >= 16,
               "ps protocol: state counters of {} bytes (whole i64: updates, round, versions)", counters.size());
  const size_t nbytes = frames[0].size();
  for (size_t k = 1; k + 1 < frames.size(); ++k) {
    LOOM_CHECK_T(CommError, frames[k].size() == nbytes, "ps protocol: state slot {} is {} bytes, the weights {}", k - 1,
                 frames[k].size(), nbytes);
  }
  ShardState s;
  s.updates = static_cast<int64_t>(get_le<uint64_t>(counters.data()));
  s.round = static_cast<int64_t>(get_le<uint64_t>(counters.data() + 8));
  LOOM_CHECK_T(CommError, s.updates >= 0 && s.round >= 0, "ps protocol: negative state counters ({} updates, round {})",
               s.updates, s.round);
  s.versions.resize(counters.size() / 8 - 2);
  for (size_t i = 0; i < s.versions.size(); ++i) {
    s.versions[i] = static_cast<int64_t>(get_le<uint64_t>(counters.data() + 16 + 8 * i));
  }
  s.weights.assign(frames[0].begin(), frames[0].end());
  s.slots.reserve(frames.size() - 2);
  for (size_t k = 1; k + 1 < frames.size(); ++k) s.slots.emplace_back(frames[k].begin(), frames[k].end());
  return s;
}

}  // namespace loom::ps
