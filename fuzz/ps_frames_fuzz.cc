// libFuzzer target for the parameter servers' payload-frame decoders
// (loom/ps/protocol.h, loom/ps/placement.h): a slice's state (GetState's
// reply, SetState), Replicate's counters, Init's and SetState's dims, and a
// row-sparse request's slice list and row ids taken apart into slices.
//
//   scripts/fuzz ps_frames 600
//
// Input: one byte picks the decoder, the rest is its frames: for the state,
// a byte giving the frame count and then each frame as a u8 length and its
// bytes (the last frame takes what is left); for dims, the key's rows and
// row length (u16 each) then the frame; for a sparse request, the placement
// (servers, slice size), the key's rows and row length, the slice list's
// length in i64, then the slice list and the ids. The property: each decoder
// throws CommError (split_rows also ShapeError or IndexError for a request
// the placement does not fit) or returns what encodes back to exactly its
// input (the state, the counters, the dims) or slices that hold every id in
// order; nothing else.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "loom/core/error.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace ps = loom::ps;

namespace {

using Bytes = std::span<const std::byte>;

[[noreturn]] void bug(const char* what) { throw loom::InternalError(loom::format("ps_frames_fuzz: {}", what)); }

// Takes n bytes from the front of `in` (fewer when it runs out).
Bytes take(Bytes& in, size_t n) {
  const Bytes out = in.first(std::min(n, in.size()));
  in = in.subspan(out.size());
  return out;
}

unsigned byte_of(Bytes& in) { return in.empty() ? 0 : static_cast<unsigned>(take(in, 1)[0]); }

unsigned u16_of(Bytes& in) { return byte_of(in) | byte_of(in) << 8; }

void shard_state(Bytes in) {
  const size_t count = 1 + byte_of(in) % 8;
  std::vector<Bytes> frames;
  for (size_t i = 0; i < count; ++i) frames.push_back(i + 1 == count ? in : take(in, byte_of(in)));
  ps::ShardState s;
  try {
    s = ps::decode_shard_state(frames);
  } catch (const loom::CommError&) {
    return;
  }
  if (s.updates < 0 || s.round < 0) bug("negative state counters");
  const ps::EncodedShardState e = ps::encode_shard_state(s);
  if (e.frames.size() != frames.size()) bug("a state does not encode back to as many frames");
  for (size_t i = 0; i < frames.size(); ++i) {
    if (e.frames[i].size() != frames[i].size() ||
        (!frames[i].empty() && std::memcmp(e.frames[i].data(), frames[i].data(), frames[i].size()) != 0)) {
      bug("a state does not encode back to its frames");
    }
  }
}

void replicate_counters(Bytes in) {
  ps::ReplicateCounters c;
  try {
    c = ps::decode_replicate_counters(in);
  } catch (const loom::CommError&) {
    return;
  }
  const ps::ReplicateCountersBytes again = ps::encode_replicate_counters(c);
  if (in.size() != again.size() || std::memcmp(again.data(), in.data(), in.size()) != 0) {
    bug("replicate counters do not encode back to their bytes");
  }
}

void dims(Bytes in) {
  ps::Header h;
  h.total_rows = u16_of(in);
  h.row_numel = u16_of(in);
  std::vector<int64_t> d;
  try {
    d = ps::decode_dims(in, h);
  } catch (const loom::CommError&) {
    return;
  }
  if (d.size() * 8 != in.size() || (!d.empty() && std::memcmp(d.data(), in.data(), in.size()) != 0)) {
    bug("dims that are not their frame");
  }
  const loom::core::Shape shape(d.begin(), d.end());
  if (ps::key_rows(shape) != h.total_rows || ps::key_row_numel(shape) != h.row_numel) bug("dims unlike the header");
}

void sparse_request(Bytes in) {
  const ps::PlacementOptions o{.num_servers = 1 + static_cast<int>(byte_of(in) % 8), .split_bound = 1 + u16_of(in),
                               .slice_elements = 1 + u16_of(in) % 4096};
  const int64_t rows = u16_of(in) % 4097, row_numel = 1 + byte_of(in) % 64;
  const Bytes firsts_frame = take(in, 8 * (byte_of(in) % 16));
  std::vector<int64_t> firsts, ids;
  std::vector<ps::SliceRows> slices;
  try {
    firsts = ps::decode_i64_frame(firsts_frame, "slice list");
    ids = ps::decode_i64_frame(in, "row ids");
    slices = ps::split_rows(7, rows, row_numel, firsts, ids, o);
  } catch (const loom::CommError&) {
    return;
  } catch (const loom::ShapeError&) {
    return;
  } catch (const loom::IndexError&) {
    return;
  }
  size_t next = 0;
  for (const ps::SliceRows& s : slices) {
    if (s.begin != next || s.end < s.begin || s.end > ids.size()) bug("slices do not take the ids in order");
    if (s.slice.row_begin < 0 || s.slice.num_rows < 0 || s.slice.row_begin + s.slice.num_rows > rows) {
      bug("a slice outside the key");
    }
    for (size_t i = s.begin; i < s.end; ++i) {
      if (ids[i] < s.slice.row_begin || ids[i] >= s.slice.row_begin + s.slice.num_rows) bug("an id outside its slice");
    }
    next = s.end;
  }
  if (next != ids.size()) bug("ids left over");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(reinterpret_cast<const std::byte*>(data), size);
  switch (byte_of(in) % 4) {
    case 0: shard_state(in); break;
    case 1: replicate_counters(in); break;
    case 2: dims(in); break;
    default: sparse_request(in); break;
  }
  return 0;
}
