// The parameter-server wire protocol: what workers and servers (and servers
// among themselves) send over ZeroMQ.
//
//   // given: int32_t rank, uint64_t id, const ps::ShardState& state
//   ps::Header h{.op = ps::Op::Push, .dtype = core::DType::F32, .sender = rank, .num_frames = 1, .request_id = id,
//                .key = 3, .version = 12, .row_begin = 0, .num_rows = 10, .row_numel = 784, .total_rows = 10};
//   ps::HeaderBytes bytes = ps::encode_header(h);            // 96 bytes, little-endian
//   ps::Header back = ps::decode_header(bytes);              // throws CommError if bad
//   ps::EncodedShardState e = ps::encode_shard_state(state); // GetState's reply frames (borrowing `state`)
//   ps::ShardState copy = ps::decode_shard_state(e.frames);  // throws CommError if bad
//
// A message is a header frame followed by `num_frames` payload frames (the
// ROUTER side adds the peer's routing id in front). The header, the config
// (messages.h) and the payload frames' integers are written and read by the
// frame codec of every Loom framing (core/frame_codec.h). Header layout,
// version 1:
//
//   offset size  field
//        0    4  magic "LMPS"
//        4    2  version (1)
//        6    2  header length (96)
//        8    2  op (Op)
//       10    2  flags (Flag bits)
//       12    2  status (Status; replies only)
//       14    2  dtype (core::DType)
//       16    4  sender: a worker rank, or -1 - s for server s
//       20    4  num_frames: payload frames that follow
//       24    8  request id (a reply carries its request's)
//       32    8  key
//       40    8  version: the sender's count of pushes to this key (pushes),
//                the worker's finished steps (clock)
//       48    8  seq: updates applied to the slice (replication), or 0
//       56    8  row_begin: first row of the key slice this message is about
//       64    8  num_rows: rows in the slice
//       72    8  row_numel: elements per row (the product of dims after the first)
//       80    8  total_rows: rows of the whole key (its first dim; 1 for a scalar)
//       88    4  CRC-32C of bytes [0, 88)
//       92    4  reserved (0)
//
// On one host the bytes of dense slices can go through shared memory instead
// (Flag::Shm, Op::ShmAttach; ps/shm_staging.h): only the header and an offset
// travel over the socket.
//
// A row-sparse Push or Pull (Flag::Sparse) names the whole key (row_begin 0,
// num_rows = total_rows) and is about several slices of it, all of one
// replica chain, so that a sparse step costs one message per server, not one
// per slice: [slices] lists their first rows (i64, ascending) or is the
// single value -1 - s for every slice placed on server s, [row ids] holds
// the ids slice by slice (ascending within a slice for a push), and a push's
// [rows] (or a pull's reply) the rows in that order. A slice may be named
// with no ids (a dist_sync push names every slice: every slice's round needs
// every worker).
//
// Every field is checked before it is used (decode_header): magic, version,
// length, checksum, known op/status/dtype, no unknown flags, non-negative
// sizes, the slice inside the key, at most 2^40 elements per key (so byte
// counts cannot overflow). Payload frames of integers (dims, slice lists, row
// ids, state and replication counters) are i64 little-endian, decoded below;
// the sizes of data frames are checked by the receiver against what the op
// and header imply. fuzz/ps_header_fuzz.cc and fuzz/ps_frames_fuzz.cc run
// every decoder here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/dtype.h"

namespace loom::ps {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kHeaderBytes = 96;
using HeaderBytes = std::array<std::byte, kHeaderBytes>;

enum class Op : uint16_t {
  Init = 1,          // frames: [dims (i64 each)] [+ data when Flag::HasData]. Reply when the value is set.
  Push = 2,          // frames: [data] (dense) | Flag::Sparse: [slices] [row ids] [rows]. Reply when applied.
  Pull = 3,          // frames: none | Flag::Sparse: [slices] [row ids]. Reply frames: [data] | [rows].
  PushPull = 4,      // a Push whose reply carries the updated slice, as Pull's.
  SetOptimizer = 5,  // frames: [optim::encode_spec bytes]. Applies to every key of the server.
  GetState = 6,      // reply frames: a ShardState's (encode_shard_state).
  SetState = 7,      // frames: [dims] + a ShardState's. Replaces the slice's weights, state and counters.
  Replicate = 8,     // primary -> backup: frames as Push (the merged update); seq = updates after it.
  Reply = 9,         // status Ok: frames per the request; status Error: [message]
  Leave = 10,        // a worker is done: rounds stop waiting for it (sent to every server)
  ShmAttach = 11,    // frames: [region name]. The worker's staging region (comm::SharedRegion) on the server's
                     // host: the server maps it; Flag::Shm requests of this worker point into it. Reply when mapped.
};
std::string_view op_name(Op op);

enum class Status : uint16_t { Ok = 0, Error = 1 };

namespace flag {
inline constexpr uint16_t kHasData = 1;  // Init: the value follows (rank 0's init)
inline constexpr uint16_t kSparse = 2;   // Push/Pull (several slices) and Replicate: row-sparse form
// Dense Push/Pull/PushPull from a worker on the server's host: the one payload
// frame is the slice's byte offset (u64) in the worker's staging region, where
// a push's data lies and where the server writes a pull's reply; the reply
// carries the flag and no data frame.
inline constexpr uint16_t kShm = 4;
// Dense Push/PushPull in deterministic dist_sync: the data are the worker's
// gradient as i64 fixed point (optim/fixed_point.h), 8 bytes per element
// whatever the key's dtype; the server adds a round's as integers.
inline constexpr uint16_t kFixedPoint = 8;
inline constexpr uint16_t kAll = kHasData | kSparse | kShm | kFixedPoint;
}  // namespace flag

struct Header {
  Op op = Op::Reply;
  uint16_t flags = 0;
  Status status = Status::Ok;
  core::DType dtype = core::DType::F32;
  int32_t sender = 0;
  uint32_t num_frames = 0;
  uint64_t request_id = 0;
  int64_t key = 0;
  int64_t version = 0;
  int64_t seq = 0;
  int64_t row_begin = 0;
  int64_t num_rows = 0;
  int64_t row_numel = 0;
  int64_t total_rows = 0;

  bool sparse() const { return (flags & flag::kSparse) != 0; }
  // Bytes of the dense slice this header describes: num_rows * row_numel * itemsize.
  uint64_t slice_nbytes() const;
};

inline int32_t server_sender(int server) { return -1 - server; }

HeaderBytes encode_header(const Header& h);
// Throws CommError naming the field and what is wrong.
Header decode_header(std::span<const std::byte> bytes);

// ---- payload frames (every decoder throws CommError naming what is wrong) --

// A frame of i64 values (a sparse request's slice list and row ids), copied
// (frames need not be aligned); `what` names it in errors.
std::vector<int64_t> decode_i64_frame(std::span<const std::byte> frame, const char* what);
// Init's and SetState's [dims]: at most 8 dims, each in [0, 2^40], giving the
// key `h` describes (total_rows, row_numel).
std::vector<int64_t> decode_dims(std::span<const std::byte> frame, const Header& h);

// Replicate's first frame: whose push the merged update was (dist_async; -1
// in dist_sync) and that push's version, two i64.
struct ReplicateCounters {
  int worker = -1;
  int64_t version = 0;
};
using ReplicateCountersBytes = std::array<std::byte, 16>;
ReplicateCountersBytes encode_replicate_counters(const ReplicateCounters& c);
ReplicateCounters decode_replicate_counters(std::span<const std::byte> frame);

// One slice's state as a server holds it (ps/shard.h): what GetState answers
// and SetState carries, for checkpoints and for a backup taking over.
struct ShardState {
  std::vector<std::byte> weights;             // the slice's value
  std::vector<std::vector<std::byte>> slots;  // optimizer state (the rule's slots), each as many bytes as weights
  int64_t updates = 0;                        // updates applied: the rule's step count and the schedule's
  int64_t round = 0;                          // dist_sync rounds completed
  std::vector<int64_t> versions;              // per worker: pushes counted (async) or its round (sync)
  bool operator==(const ShardState&) const = default;
};

// A ShardState as frames: [weights] [slot 0] ... [slot k-1] [counters], the
// counters i64 little-endian: updates, round, then one version per worker.
// The frames borrow the state's buffers and `counters`: keep both alive while
// they are sent. Movable (the buffers stay where they are), not copyable.
struct EncodedShardState {
  std::vector<std::byte> counters;
  std::vector<std::span<const std::byte>> frames;

  EncodedShardState() = default;
  EncodedShardState(EncodedShardState&&) = default;
  EncodedShardState& operator=(EncodedShardState&&) = default;
  EncodedShardState(const EncodedShardState&) = delete;
  EncodedShardState& operator=(const EncodedShardState&) = delete;
};
EncodedShardState encode_shard_state(const ShardState& state);
// Copies the frames into a ShardState. Throws CommError when they are not one
// (fewer than 2 frames, a slot unlike the weights in size, counters that are
// not whole i64 or fewer than 2, negative counts); whether it fits a slice is
// for Shard::set_state to say.
ShardState decode_shard_state(std::span<const std::span<const std::byte>> frames);

}  // namespace loom::ps
