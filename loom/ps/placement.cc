#include "loom/ps/placement.h"

#include <algorithm>

#include "loom/core/error.h"

namespace loom::ps {

int64_t key_rows(const core::Shape& shape) { return shape.empty() ? 1 : shape[0]; }

int64_t key_row_numel(const core::Shape& shape) {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

void check_placement(const PlacementOptions& o) {
  LOOM_CHECK_T(ConfigError, o.num_servers >= 1, "parameter servers: need at least one server, got {}", o.num_servers);
  LOOM_CHECK_T(ConfigError, o.replicas >= 0 && o.replicas < o.num_servers,
               "parameter servers: replicas = {} needs more than {} servers (each backup is another server)",
               o.replicas, o.replicas);
  LOOM_CHECK_T(ConfigError, o.split_bound >= 1, "parameter servers: split bound must be >= 1, got {}", o.split_bound);
  LOOM_CHECK_T(ConfigError, o.slice_elements >= 1, "parameter servers: slices must hold >= 1 element, got {}",
               o.slice_elements);
}

int64_t slice_elements_for(int num_hosts) { return num_hosts <= 1 ? kLocalSliceElements : kRemoteSliceElements; }

std::vector<Slice> place_key(int64_t key, const core::Shape& shape, const PlacementOptions& o) {
  return place_key_rows(key, key_rows(shape), key_row_numel(shape), o);
}

namespace {

// How a key is cut: into `parts` slices, slice i = rows [rows*i/parts,
// rows*(i+1)/parts), on server (key + i) mod S when `spread`, else key mod S.
struct Cut {
  int64_t parts = 1;
  bool spread = false;
};

Cut cut_of(int64_t key, int64_t rows, int64_t row_numel, const PlacementOptions& o) {
  check_placement(o);
  LOOM_CHECK(key >= 0, "kvstore: key {} is negative", key);
  const int64_t numel = rows * row_numel;
  const int64_t s = o.num_servers;
  const bool spread = numel > o.split_bound;  // over every server; else all on server key mod S
  const int64_t pieces = numel / o.slice_elements + (numel % o.slice_elements != 0);
  return {.parts = std::max<int64_t>(1, std::min(rows, spread ? std::max(s, pieces) : pieces)), .spread = spread};
}

int64_t row_of(int64_t rows, int64_t i, int64_t parts) {  // rows * i / parts without overflow
  return static_cast<int64_t>(static_cast<__int128>(rows) * i / parts);
}

Slice slice_of(int64_t key, int64_t rows, const Cut& c, int64_t i, int num_servers) {
  const int64_t begin = row_of(rows, i, c.parts), end = row_of(rows, i + 1, c.parts);
  return {.server = static_cast<int>(c.spread ? (key + i) % num_servers : key % num_servers), .row_begin = begin,
          .num_rows = end - begin};
}

}  // namespace

std::vector<Slice> place_key_rows(int64_t key, int64_t rows, int64_t row_numel, const PlacementOptions& o) {
  const Cut c = cut_of(key, rows, row_numel, o);
  std::vector<Slice> out;
  for (int64_t i = 0; i < c.parts; ++i) out.push_back(slice_of(key, rows, c, i, o.num_servers));
  return out;
}

std::optional<Slice> slice_starting_at(int64_t key, int64_t rows, int64_t row_numel, int64_t row_begin,
                                       const PlacementOptions& o) {
  const Cut c = cut_of(key, rows, row_numel, o);
  if (row_begin < 0 || row_begin >= std::max<int64_t>(rows, 1)) return std::nullopt;
  // The first i with rows * i / parts >= row_begin.
  int64_t i = rows == 0 ? 0 : static_cast<int64_t>((static_cast<__int128>(row_begin) * c.parts + rows - 1) / rows);
  while (i > 0 && row_of(rows, i - 1, c.parts) >= row_begin) --i;  // guard the rounding
  while (i < c.parts && row_of(rows, i, c.parts) < row_begin) ++i;
  if (i >= c.parts || row_of(rows, i, c.parts) != row_begin) return std::nullopt;
  return slice_of(key, rows, c, i, o.num_servers);
}

std::vector<RowGroup> group_rows(std::span<const Slice> slices, std::span<const int64_t> ids, int num_servers,
                                 bool every_slice) {
  // Each id's slice (slices are in row order); a stable sort by slice makes every slice's ids one run.
  std::vector<size_t> order(ids.size()), slice_of(ids.size()), count(slices.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    order[i] = i;
    slice_of[i] = static_cast<size_t>(std::upper_bound(slices.begin(), slices.end(), ids[i],
                                                       [](int64_t id, const Slice& s) { return id < s.row_begin; }) -
                                      slices.begin() - 1);
    ++count[slice_of[i]];
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return slice_of[a] < slice_of[b]; });
  std::vector<RowGroup> by_server(static_cast<size_t>(num_servers));
  for (size_t k = 0; k < slices.size(); ++k) {
    if (every_slice || count[k] > 0) by_server[static_cast<size_t>(slices[k].server)].firsts.push_back(slices[k].row_begin);
  }
  for (size_t i : order) {
    RowGroup& g = by_server[static_cast<size_t>(slices[slice_of[i]].server)];
    g.ids.push_back(ids[i]);
    g.positions.push_back(i);
  }
  std::vector<RowGroup> out;
  for (int server = 0; server < num_servers; ++server) {
    RowGroup& g = by_server[static_cast<size_t>(server)];
    if (g.firsts.empty()) continue;
    g.server = server;
    out.push_back(std::move(g));
  }
  return out;
}

std::vector<SliceRows> split_rows(int64_t key, int64_t rows, int64_t row_numel, std::span<const int64_t> firsts,
                                  std::span<const int64_t> ids, const PlacementOptions& o) {
  LOOM_CHECK_T(CommError, !firsts.empty(), "ps protocol: a sparse request about no slice of key {}", key);
  std::vector<Slice> named;
  if (firsts.size() == 1 && firsts[0] < 0) {  // -1 - s: every slice placed on server s
    const int64_t owner = -1 - firsts[0];
    LOOM_CHECK_T(CommError, owner < o.num_servers, "ps protocol: a sparse request about the slices of server {}", owner);
    for (const Slice& s : place_key_rows(key, rows, row_numel, o)) {
      if (s.server == owner) named.push_back(s);
    }
    LOOM_CHECK_T(CommError, !named.empty(), "ps protocol: key {} has no slice on server {}", key, owner);
  } else {
    for (size_t i = 0; i < firsts.size(); ++i) {
      LOOM_CHECK_T(CommError, i == 0 || firsts[i] > firsts[i - 1], "ps protocol: a sparse request's slices are out of order");
      const auto s = slice_starting_at(key, rows, row_numel, firsts[i], o);
      LOOM_CHECK_T(ShapeError, s.has_value(),
                   "kvstore: key {} has no slice starting at row {} (the worker's placement differs)", key, firsts[i]);
      named.push_back(*s);
    }
  }
  std::vector<SliceRows> out;
  size_t next = 0;  // ids[next...] belong to this slice or later ones
  for (const Slice& s : named) {
    const size_t begin = next;
    while (next < ids.size() && ids[next] >= s.row_begin && ids[next] < s.row_begin + s.num_rows) ++next;
    out.push_back({.slice = s, .begin = begin, .end = next});
  }
  LOOM_CHECK_T(IndexError, next == ids.size(), "kvstore: row-sparse request to key {}: row {} is not in the slices named",
               key, next < ids.size() ? ids[next] : 0);
  return out;
}

std::vector<int> replica_chain(int server, const PlacementOptions& o) {
  std::vector<int> chain;
  for (int i = 0; i <= o.replicas; ++i) chain.push_back((server + i) % o.num_servers);
  return chain;
}

std::string describe_key(int64_t key, const core::Shape& shape, const PlacementOptions& o) {
  std::string out = format("key {} {}:", key, core::to_string(shape));
  bool first = true;
  for (const Slice& s : place_key(key, shape, o)) {
    out += format("{} server {} rows [{}, {})", first ? "" : ",", s.server, s.row_begin, s.row_begin + s.num_rows);
    first = false;
    auto chain = replica_chain(s.server, o);
    if (chain.size() > 1) {
      out += " (backup";
      for (size_t i = 1; i < chain.size(); ++i) out += format(" {}", chain[i]);
      out += ")";
    }
  }
  return out;
}

}  // namespace loom::ps
