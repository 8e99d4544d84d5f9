#include "loom/ps/protocol.h"

#include <limits>

#include "loom/core/error.h"
#include "loom/core/frame_codec.h"
#include "loom/ps/placement.h"

namespace loom::ps {
namespace {

using core::FrameReader;
using core::FrameWriter;

constexpr std::string_view kProtocol = "ps protocol";
constexpr core::FrameFormat kHeaderFormat{.protocol = kProtocol, .message = "header", .magic = {'L', 'M', 'P', 'S'},
                                          .version = kProtocolVersion, .nbytes = kHeaderBytes, .length_field = true};
constexpr int64_t kMaxRows = int64_t{1} << 40;
constexpr int64_t kMaxRowNumel = int64_t{1} << 32;
constexpr int64_t kMaxElements = int64_t{1} << 40;  // per key: sizes in bytes then cannot overflow
constexpr int64_t kMaxDim = int64_t{1} << 40;
constexpr size_t kMaxDims = 8;

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
  FrameWriter(b)
      .prefix(kHeaderFormat)
      .u16(static_cast<uint16_t>(h.op))
      .u16(h.flags)
      .u16(static_cast<uint16_t>(h.status))
      .u16(static_cast<uint16_t>(h.dtype))
      .i32(h.sender)
      .u32(h.num_frames)
      .u64(h.request_id)
      .i64(h.key)
      .i64(h.version)
      .i64(h.seq)
      .i64(h.row_begin)
      .i64(h.num_rows)
      .i64(h.row_numel)
      .i64(h.total_rows)
      .checksum()
      .zeros(4);
  return b;
}

Header decode_header(std::span<const std::byte> bytes) {
  // The prefix and the checksum first: no field is trusted before both passed.
  FrameReader r = core::open_frame(bytes, kHeaderFormat);
  Header h;
  const uint16_t op = r.u16("op");
  h.flags = r.u16("flags");
  const uint16_t status = r.u16("status");
  const uint16_t dtype = r.u16("dtype");
  h.sender = r.i32("sender");
  h.num_frames = r.u32("num_frames");
  h.request_id = r.u64("request id");
  h.key = r.i64("key");
  h.version = r.i64("version");
  h.seq = r.i64("seq");
  h.row_begin = r.i64("row_begin");
  h.num_rows = r.i64("num_rows");
  h.row_numel = r.i64("row_numel");
  h.total_rows = r.i64("total_rows");
  r.checksum();
  r.zeros(4, "reserved");
  r.done();

  if (!known_op(op)) r.fail("op", format("unknown op {}", op));
  h.op = static_cast<Op>(op);
  if ((h.flags & ~flag::kAll) != 0) r.fail("flags", format("unknown flags {}", h.flags));
  if (status > 1) r.fail("status", format("unknown status {}", status));
  h.status = static_cast<Status>(status);
  if (dtype > static_cast<uint16_t>(core::DType::Bool)) r.fail("dtype", format("unknown dtype {}", dtype));
  h.dtype = static_cast<core::DType>(dtype);
  if (h.num_frames > 16) r.fail("num_frames", format("{} payload frames (at most 16)", h.num_frames));
  if (h.version < 0) r.fail("version", format("negative version {}", h.version));
  if (h.seq < 0) r.fail("seq", format("negative seq {}", h.seq));
  if (h.total_rows < 0 || h.total_rows > kMaxRows) r.fail("total_rows", format("a key of {} rows", h.total_rows));
  if (h.row_numel < 0 || h.row_numel > kMaxRowNumel) r.fail("row_numel", format("rows of {} elements", h.row_numel));
  if (h.row_numel != 0 && h.total_rows > kMaxElements / h.row_numel) {
    r.fail("row_numel", format("a key of {} rows of {} elements is larger than 2^40 elements", h.total_rows,
                               h.row_numel));
  }
  if (h.row_begin < 0 || h.num_rows < 0 || h.row_begin > h.total_rows || h.num_rows > h.total_rows - h.row_begin) {
    r.fail("num_rows", format("slice rows [{}, {}+{}) outside the key's {} rows", h.row_begin, h.row_begin,
                              h.num_rows, h.total_rows));
  }
  return h;
}

// ---- payload frames -----------------------------------------------------

std::vector<int64_t> decode_i64_frame(std::span<const std::byte> frame, const char* what) {
  return FrameReader(frame, kProtocol, what).i64_list("values");
}

std::vector<int64_t> decode_dims(std::span<const std::byte> frame, const Header& h) {
  FrameReader r(frame, kProtocol, "dims");
  std::vector<int64_t> dims = r.i64_list("dims");
  if (dims.size() > kMaxDims) r.fail("dims", format("{} dims (at most {})", dims.size(), kMaxDims));
  for (int64_t d : dims) {
    if (d < 0 || d > kMaxDim) r.fail("dims", format("dim {}", d));
  }
  // The row length (the product of the dims after the first) as placement's
  // key_row_numel computes it, left to right, refusing a partial product
  // past 2^32 (the most a header allows) before it can overflow.
  int64_t row_numel = 1;
  for (size_t i = 1; i < dims.size(); ++i) {
    if (dims[i] != 0 && row_numel > kMaxRowNumel / dims[i]) {
      r.fail("dims", format("rows of more than 2^32 elements (dims {} to {})", 1, i));
    }
    row_numel *= dims[i];
  }
  const core::Shape shape(dims.begin(), dims.end());
  if (key_rows(shape) != h.total_rows || row_numel != h.row_numel) {
    r.fail("dims", format("shape {} does not match the header's {} rows of {}", core::to_string(shape), h.total_rows,
                          h.row_numel));
  }
  return dims;
}

ReplicateCountersBytes encode_replicate_counters(const ReplicateCounters& c) {
  ReplicateCountersBytes b{};
  FrameWriter(b).i64(c.worker).i64(c.version);
  return b;
}

ReplicateCounters decode_replicate_counters(std::span<const std::byte> frame) {
  FrameReader r(frame, kProtocol, "replicate counters");
  ReplicateCounters c;
  c.worker = static_cast<int>(r.i64("worker", -1, std::numeric_limits<int32_t>::max()));
  c.version = r.i64("version", 0, std::numeric_limits<int64_t>::max());
  r.done();
  return c;
}

EncodedShardState encode_shard_state(const ShardState& state) {
  EncodedShardState out;
  out.counters.resize(8 * (2 + state.versions.size()));
  FrameWriter(out.counters).i64(state.updates).i64(state.round).i64_list(state.versions);
  out.frames.reserve(state.slots.size() + 2);
  out.frames.emplace_back(state.weights);
  for (const auto& slot : state.slots) out.frames.emplace_back(slot);
  out.frames.emplace_back(out.counters);
  return out;
}

ShardState decode_shard_state(std::span<const std::span<const std::byte>> frames) {
  LOOM_CHECK_T(CommError, frames.size() >= 2, "ps protocol: a slice's state needs weights and counters, got {} frames",
               frames.size());
  const size_t nbytes = frames[0].size();
  for (size_t k = 1; k + 1 < frames.size(); ++k) {
    LOOM_CHECK_T(CommError, frames[k].size() == nbytes, "ps protocol: state slot {} is {} bytes, the weights {}", k - 1,
                 frames[k].size(), nbytes);
  }
  ShardState s;
  FrameReader r(frames.back(), kProtocol, "state counters");
  s.updates = r.i64("updates", 0, std::numeric_limits<int64_t>::max());
  s.round = r.i64("round", 0, std::numeric_limits<int64_t>::max());
  s.versions = r.i64_list("versions");
  s.weights.assign(frames[0].begin(), frames[0].end());
  s.slots.reserve(frames.size() - 2);
  for (size_t k = 1; k + 1 < frames.size(); ++k) s.slots.emplace_back(frames[k].begin(), frames[k].end());
  return s;
}

}  // namespace loom::ps
