// Key placement (which server holds which rows) and the wire header.
#include <gtest/gtest.h>

#include <cstring>

#include "loom/core/error.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace loom::ps {
namespace {

TEST(Placement, SmallKeysSpreadBigKeysSplitOverEveryServer) {
  const PlacementOptions o{.num_servers = 3, .split_bound = 100};
  for (int64_t key = 0; key < 6; ++key) {
    auto s = place_key(key, {10, 5}, o);
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s[0].server, key % 3);
    EXPECT_EQ(s[0].row_begin, 0);
    EXPECT_EQ(s[0].num_rows, 10);
  }
  auto big = place_key(4, {1000, 7}, o);
  ASSERT_EQ(big.size(), 3u);
  int64_t next = 0;
  std::vector<int> servers;
  for (const auto& s : big) {
    EXPECT_EQ(s.row_begin, next);  // contiguous, whole rows
    next += s.num_rows;
    servers.push_back(s.server);
    EXPECT_NEAR(static_cast<double>(s.num_rows), 1000.0 / 3, 1.0);
  }
  EXPECT_EQ(next, 1000);
  std::sort(servers.begin(), servers.end());
  EXPECT_EQ(servers, (std::vector<int>{0, 1, 2}));
  // A 1-D array splits by element; a scalar never splits.
  EXPECT_EQ(place_key(0, {301}, o).size(), 3u);
  EXPECT_EQ(place_key(0, {}, o).size(), 1u);
  EXPECT_EQ(place_key_rows(4, 1000, 7, o).size(), 3u);
}

TEST(Placement, BigKeysTravelInSlicesOf256KiB) {
  // 64 MiB of f32 over 2 servers: 256 slices alternating between the servers, so
  // one pushpull pipelines instead of moving one 32 MiB message per server.
  auto slices = place_key(1, {16 << 20}, {.num_servers = 2});
  ASSERT_EQ(slices.size(), 256u);
  int64_t next = 0;
  for (size_t i = 0; i < slices.size(); ++i) {
    EXPECT_EQ(slices[i].row_begin, next);
    EXPECT_LE(slices[i].num_rows, kRemoteSliceElements);
    EXPECT_EQ(slices[i].server, static_cast<int>((1 + i) % 2));
    next += slices[i].num_rows;
  }
  EXPECT_EQ(next, 16 << 20);
  // Rows are never split, however wide: a [3, 1M] key has at most 3 slices.
  EXPECT_EQ(place_key(0, {3, 1 << 20}, {.num_servers = 2}).size(), 3u);
  // A key within the split bound is sliced too (its uploads and downloads
  // overlap the same way) but stays on server key mod S; so does every key
  // with one server. Keys of at most 2^16 elements are one slice.
  auto within = place_key(5, {1 << 20}, {.num_servers = 3});
  ASSERT_EQ(within.size(), 16u);
  for (const auto& s : within) EXPECT_EQ(s.server, 2);
  auto one = place_key(5, {4 << 20}, {.num_servers = 1});
  ASSERT_EQ(one.size(), 64u);
  for (const auto& s : one) EXPECT_EQ(s.server, 0);
  EXPECT_EQ(place_key(5, {1 << 16}, {.num_servers = 3}).size(), 1u);
  EXPECT_EQ(place_key(5, {0, 4}, {.num_servers = 3}).size(), 1u);  // an empty key: one empty slice
}

// Every process of a job on one host: 1 MiB slices (the cores are the limit,
// not a link); on several hosts 256 KiB ones (pipelining over the links).
TEST(Placement, SliceSizeFollowsTheHosts) {
  EXPECT_EQ(slice_elements_for(1), kLocalSliceElements);
  EXPECT_EQ(slice_elements_for(2), kRemoteSliceElements);
  EXPECT_EQ(slice_elements_for(6), kRemoteSliceElements);
  const PlacementOptions local{.num_servers = 2, .slice_elements = slice_elements_for(1)};
  auto slices = place_key(1, {16 << 20}, local);
  ASSERT_EQ(slices.size(), 64u);
  for (const Slice& s : slices) EXPECT_EQ(s.num_rows, kLocalSliceElements);
  // slice_starting_at agrees with the listing at the local size too.
  for (const Slice& s : slices) {
    const auto found = slice_starting_at(1, 16 << 20, 1, s.row_begin, local);
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->num_rows, s.num_rows);
    EXPECT_EQ(found->server, s.server);
  }
  EXPECT_THROW(check_placement({.num_servers = 1, .slice_elements = 0}), ConfigError);
}

TEST(Placement, SliceStartingAtAgreesWithTheListAndNeedsNone) {
  const PlacementOptions o{.num_servers = 3, .split_bound = 1000};
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{0, 4}, {1, 1}, {7, 3}, {1000, 1}, {300001, 7}, {1 << 20, 16}};
  for (const auto& [rows, width] : shapes) {
    const auto list = place_key_rows(5, rows, width, o);
    for (const Slice& s : list) {
      const auto found = slice_starting_at(5, rows, width, s.row_begin, o);
      ASSERT_TRUE(found.has_value()) << rows << "x" << width << " at " << s.row_begin;
      EXPECT_EQ(found->num_rows, s.num_rows);
      EXPECT_EQ(found->server, s.server);
      if (s.num_rows > 1) {
        EXPECT_FALSE(slice_starting_at(5, rows, width, s.row_begin + 1, o).has_value());
      }
    }
    EXPECT_FALSE(slice_starting_at(5, rows, width, -1, o).has_value());
    EXPECT_FALSE(slice_starting_at(5, rows, width, std::max<int64_t>(rows, 1), o).has_value());
  }
  // A key of 2^40 rows (2^24 slices) is answered without listing them.
  const int64_t huge = int64_t{1} << 40;
  const auto last = slice_starting_at(0, huge, 1, huge - (int64_t{1} << 16), o);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->num_rows, int64_t{1} << 16);
}

TEST(Placement, RowSparseIdsGroupByServerAndSplitBackIntoSlices) {
  const PlacementOptions o{.num_servers = 2, .split_bound = 1000};
  const auto slices = place_key_rows(3, 300000, 1, o);  // 5 slices: servers 1, 0, 1, 0, 1
  ASSERT_EQ(slices.size(), 5u);
  const std::vector<int64_t> ids = {250000, 5, 70000, 6, 299999};  // any order (a pull)
  const auto groups = group_rows(slices, ids, 2, false);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].server, 0);
  EXPECT_EQ(groups[0].firsts, (std::vector<int64_t>{slices[1].row_begin}));
  EXPECT_EQ(groups[0].ids, (std::vector<int64_t>{70000}));
  EXPECT_EQ(groups[1].server, 1);
  EXPECT_EQ(groups[1].firsts, (std::vector<int64_t>{0, slices[4].row_begin}));
  EXPECT_EQ(groups[1].ids, (std::vector<int64_t>{5, 6, 250000, 299999}));  // slice by slice, order kept within
  EXPECT_EQ(groups[1].positions, (std::vector<size_t>{1, 3, 0, 4}));
  EXPECT_EQ(group_rows(slices, ids, 2, true)[0].firsts.size(), 2u);  // every slice of server 0
  // The server's side gives the same slices and runs back, from the list or from "every slice of server 1".
  for (const auto& firsts : {groups[1].firsts, std::vector<int64_t>{-2}}) {
    const auto parts = split_rows(3, 300000, 1, firsts, groups[1].ids, o);
    EXPECT_EQ(parts[0].slice.row_begin, 0);
    EXPECT_EQ(parts[0].end - parts[0].begin, 2u);
    EXPECT_EQ(parts.back().slice.row_begin, slices[4].row_begin);
    EXPECT_EQ(parts.back().end, 4u);
  }
  EXPECT_THROW(split_rows(3, 300000, 1, std::vector<int64_t>{0}, std::vector<int64_t>{250000}, o), IndexError);
  EXPECT_THROW(split_rows(3, 300000, 1, std::vector<int64_t>{1}, std::vector<int64_t>{}, o), ShapeError);
  EXPECT_THROW(split_rows(3, 300000, 1, std::vector<int64_t>{-3}, std::vector<int64_t>{}, o), CommError);
  EXPECT_THROW(split_rows(3, 300000, 1, std::vector<int64_t>{}, std::vector<int64_t>{}, o), CommError);
}

TEST(Placement, ReplicaChainsAndBadOptions) {
  const PlacementOptions o{.num_servers = 3, .replicas = 2};
  EXPECT_EQ(replica_chain(2, o), (std::vector<int>{2, 0, 1}));
  EXPECT_THROW(check_placement({.num_servers = 2, .replicas = 2}), ConfigError);
  EXPECT_THROW(check_placement({.num_servers = 0}), ConfigError);
  EXPECT_NE(describe_key(5, {4000000}, {.num_servers = 2, .replicas = 1}).find("(backup"), std::string::npos);
}

TEST(Protocol, HeaderRoundTripsAndRejectsCorruption) {
  Header h{.op = Op::Push, .flags = flag::kSparse, .dtype = core::DType::F64, .sender = 3, .num_frames = 2,
           .request_id = 99, .key = 7, .version = 12, .seq = 4, .row_begin = 10, .num_rows = 20, .row_numel = 16,
           .total_rows = 40};
  HeaderBytes b = encode_header(h);
  Header back = decode_header(b);
  EXPECT_EQ(back.op, Op::Push);
  EXPECT_TRUE(back.sparse());
  EXPECT_EQ(back.dtype, core::DType::F64);
  EXPECT_EQ(back.sender, 3);
  EXPECT_EQ(back.request_id, 99u);
  EXPECT_EQ(back.key, 7);
  EXPECT_EQ(back.version, 12);
  EXPECT_EQ(back.seq, 4);
  EXPECT_EQ(back.row_begin, 10);
  EXPECT_EQ(back.num_rows, 20);
  EXPECT_EQ(back.slice_nbytes(), 20u * 16 * 8);
  EXPECT_EQ(decode_header(encode_header({.sender = server_sender(2)})).sender, -3);

  for (size_t i = 0; i < kHeaderBytes; ++i) {  // any flipped bit is caught
    HeaderBytes bad = b;
    bad[i] ^= std::byte{0x10};
    EXPECT_THROW(decode_header(bad), CommError) << "byte " << i;
  }
  EXPECT_THROW(decode_header(std::span(b).first(50)), CommError);
  // A slice outside its key is refused even with a valid checksum.
  h.row_begin = 30;
  EXPECT_THROW(decode_header(encode_header(h)), CommError);
}

}  // namespace
}  // namespace loom::ps
