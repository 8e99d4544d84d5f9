// Which server holds which part of which key.
//
//   // given: int64_t key
//   ps::PlacementOptions o{.num_servers = 4, .replicas = 1};
//   for (const ps::Slice& s : ps::place_key(key, {1000000, 16}, o)) {        // rows [s.row_begin, +s.num_rows) on s.server
//     std::vector<int> chain = ps::replica_chain(s.server, o);              // {primary, backup, ...}
//   }
//
// A key is an array whose first dimension counts rows (a scalar or 1-D array:
// rows of one element). Every key is cut into contiguous row ranges
// (slices) of near-equal size and at most `slice_elements` (fewer only when
// its rows are too few: slices never split a row, which is what lets
// row-sparse pushes and pulls go to the servers holding the touched rows).
// Keys of at most `split_bound` elements keep all their slices on server
// key mod S, so consecutive keys spread over the servers; larger keys are
// cut into at least S slices, slice i on server (key + i) mod S, so every
// server takes a share of every big array.
//
// Replication: the slices a server owns are also held by the next `replicas`
// servers (mod S). The first live server of a chain is the slice's primary.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loom/core/shape.h"

namespace loom::ps {

inline constexpr int64_t kDefaultSplitBound = int64_t{1} << 20;  // elements
// How many elements a slice holds at most depends on where the processes
// are. Across hosts, 256 KiB of f32: a big key travels as many requests
// whose uploads and downloads overlap (pipelining) instead of one message
// that must be wholly sent, merged and sent back, and smaller slices shorten
// the pipeline's fill and drain (on 1 Gbit/s links a 64 MiB push+pull went
// from 85% of the link bound with 1 MiB slices to 90% with 256 KiB). On one
// host there is no link to keep busy: the cores are the limit, and each
// message costs them wake-ups and system calls, so slices are 1 MiB (a
// quarter of the messages; docs/BENCHMARKS.md has the loopback numbers).
inline constexpr int64_t kRemoteSliceElements = int64_t{1} << 16;
inline constexpr int64_t kLocalSliceElements = int64_t{1} << 18;
// The slice size of a job whose workers and servers sit on `num_hosts` hosts
// (comm::Membership::num_hosts, the same for every process of the job).
int64_t slice_elements_for(int num_hosts);

struct PlacementOptions {
  int num_servers = 1;
  int replicas = 0;
  int64_t split_bound = kDefaultSplitBound;
  int64_t slice_elements = kRemoteSliceElements;  // at most this many per slice (slice_elements_for)
};

struct Slice {
  int server = 0;         // the owner (head of its replica chain)
  int64_t row_begin = 0;
  int64_t num_rows = 0;
};

// Rows of a key of this shape (its first dimension; 1 for a scalar) and elements per row.
int64_t key_rows(const core::Shape& shape);
int64_t key_row_numel(const core::Shape& shape);

// Throws ConfigError for a bad option (no servers, replicas >= servers).
void check_placement(const PlacementOptions& options);
std::vector<Slice> place_key(int64_t key, const core::Shape& shape, const PlacementOptions& options);
// The same from the key's row count and elements per row (what a request header carries).
std::vector<Slice> place_key_rows(int64_t key, int64_t rows, int64_t row_numel, const PlacementOptions& options);
// The slice of a key that starts at row `row_begin`, or none: what a server
// checks a request against, computed without listing every slice (a
// malformed request may name a key of 2^40 elements).
std::optional<Slice> slice_starting_at(int64_t key, int64_t rows, int64_t row_numel, int64_t row_begin,
                                       const PlacementOptions& o);
// Row-sparse calls (protocol.h). The worker groups a call's row ids by the
// server whose slices hold them: per server, the first rows of the slices
// named (those some id falls in, or all of them with `every_slice`), the ids
// slice by slice, and each id's index in `ids`. Servers with nothing to name
// are left out.
struct RowGroup {
  int server = 0;
  std::vector<int64_t> firsts;
  std::vector<int64_t> ids;
  std::vector<size_t> positions;
};
std::vector<RowGroup> group_rows(std::span<const Slice> slices, std::span<const int64_t> ids, int num_servers,
                                 bool every_slice);
// The server takes such a request apart: its slice list (first rows,
// ascending, or the single value -1 - s for every slice placed on server s)
// and its ids back into slices, each with its run [begin, end) of `ids`.
// ShapeError for a slice the placement does not have; CommError for a
// malformed list; IndexError for an id outside the slices named.
struct SliceRows {
  Slice slice;
  size_t begin = 0, end = 0;
};
std::vector<SliceRows> split_rows(int64_t key, int64_t rows, int64_t row_numel, std::span<const int64_t> firsts,
                                  std::span<const int64_t> ids, const PlacementOptions& o);

std::vector<int> replica_chain(int server, const PlacementOptions& options);
// "key 3 [1000000, 16]: server 0 rows [0, 250000) (backup 1), server 1 rows ..." for `loom launch --describe`.
std::string describe_key(int64_t key, const core::Shape& shape, const PlacementOptions& options);

}  // namespace loom::ps
