// The worker's request plan without a socket: dense slices cover the value
// once, in order, each to its replica chain; sparse requests go one per
// server with the ids and positions of its rows; the placement config and
// request ids round-trip through their codecs.
#include "loom/ps/request_plan.h"

#include <gtest/gtest.h>

#include <set>

#include "loom/core/error.h"
#include "loom/ps/messages.h"

namespace loom::ps {
namespace {

TEST(RequestPlan, DenseSlicesCoverTheValueOnceInOrder) {
  const PlacementOptions placement{.num_servers = 3, .replicas = 1, .split_bound = 1 << 12};
  const KeyLayout layout = key_layout(5, {4000, 64}, core::DType::F32, placement);
  ASSERT_GT(layout.slices.size(), 3u);
  const auto plan = plan_dense(Op::Push, 5, layout, 7, placement);
  ASSERT_EQ(plan.size(), layout.slices.size());
  size_t at = 0;
  std::set<int> servers;
  for (size_t i = 0; i < plan.size(); ++i) {
    const DenseRequest& r = plan[i];
    EXPECT_EQ(r.offset, at);
    EXPECT_EQ(r.nbytes, static_cast<size_t>(r.header.num_rows) * 64 * 4);
    at += r.nbytes;
    EXPECT_EQ(r.header.op, Op::Push);
    EXPECT_EQ(r.header.key, 5);
    EXPECT_EQ(r.header.version, 7);
    EXPECT_EQ(r.header.row_begin, layout.slices[i].row_begin);
    EXPECT_EQ(r.header.total_rows, 4000);
    EXPECT_EQ(r.header.row_numel, 64);
    EXPECT_EQ(r.chain, replica_chain(layout.slices[i].server, placement));
    EXPECT_EQ(r.chain.size(), 2u);
    servers.insert(r.chain[0]);
    EXPECT_NO_THROW(decode_header(encode_header(r.header)));
  }
  EXPECT_EQ(at, layout.nbytes());
  EXPECT_EQ(servers.size(), 3u);  // a big key is spread over every server
  for (const auto& r : plan_dense(Op::Pull, 5, layout, 7, placement)) EXPECT_EQ(r.header.version, 0);
}

TEST(RequestPlan, SmallKeysStayOnOneServerAndScalarsAreOneRow) {
  const PlacementOptions placement{.num_servers = 4};
  const auto plan = plan_dense(Op::Init, 6, key_layout(6, {}, core::DType::F64, placement), 0, placement);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].chain, std::vector<int>{6 % 4});
  EXPECT_EQ(plan[0].nbytes, 8u);
  EXPECT_EQ(plan[0].header.total_rows, 1);
}

TEST(RequestPlan, SparseRequestsGoOncePerServerWithTheirRows) {
  const PlacementOptions placement{.num_servers = 2, .split_bound = 1 << 10};
  const KeyLayout layout = key_layout(1, {4096, 16}, core::DType::F32, placement);
  const std::vector<int64_t> ids = {4000, 3, 17, 2048, 9};
  const auto plan = plan_sparse(Op::Pull, 1, layout, ids, false, placement);
  std::vector<int> seen(ids.size(), 0);
  std::set<int> servers;
  for (const SparseRequest& r : plan) {
    EXPECT_TRUE(r.header.sparse());
    EXPECT_EQ(r.header.row_begin, 0);
    EXPECT_EQ(r.header.num_rows, 4096);
    EXPECT_TRUE(servers.insert(r.chain[0]).second) << "two requests to server " << r.chain[0];
    ASSERT_EQ(r.ids.size(), r.positions.size());
    for (size_t i = 0; i < r.ids.size(); ++i) {
      EXPECT_EQ(r.ids[i], ids[r.positions[i]]);
      ++seen[r.positions[i]];
    }
    for (int64_t first : r.firsts) {  // every slice named lies on this server
      const auto s = slice_starting_at(1, 4096, 16, first, placement);
      ASSERT_TRUE(s.has_value());
      EXPECT_EQ(s->server, r.chain[0]);
    }
  }
  for (int n : seen) EXPECT_EQ(n, 1);

  // A dist_sync push reaches every server, naming all its slices in one value.
  const auto every = plan_sparse(Op::Push, 1, layout, std::vector<int64_t>{3}, true, placement, 4);
  ASSERT_EQ(every.size(), 2u);
  for (const SparseRequest& r : every) {
    EXPECT_EQ(r.firsts, std::vector<int64_t>{-1 - static_cast<int64_t>(r.chain[0])});
    EXPECT_EQ(r.header.version, 4);
  }
}

TEST(RequestPlan, EveryServerGetsOneRequest) {
  const auto plan = plan_every_server(Op::Leave, {.num_servers = 3, .replicas = 2});
  ASSERT_EQ(plan.size(), 3u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(plan[static_cast<size_t>(s)].chain, std::vector<int>{s});
    EXPECT_EQ(plan[static_cast<size_t>(s)].header.op, Op::Leave);
  }
}

TEST(Messages, ConfigRoundTripsAndBadBytesAreRefused) {
  const ServerConfig c{.replicas = 2, .split_bound = 12345, .slice_elements = 1 << 18};
  const std::string b = encode_config(c);
  const ServerConfig back = decode_config(b);
  EXPECT_EQ(back.replicas, 2);
  EXPECT_EQ(back.split_bound, 12345);
  EXPECT_EQ(back.slice_elements, 1 << 18);
  EXPECT_THROW(decode_config("replicas=1 split_bound=5"), CommError);  // the old text form
  EXPECT_THROW(decode_config(b.substr(0, 19)), CommError);
  std::string bad = b;
  bad[8] = '\xff';
  bad[11] = '\xff';  // replicas -1
  EXPECT_THROW(decode_config(bad), CommError);
  bad = b;
  bad[4] = 9;  // version
  EXPECT_THROW(decode_config(bad), CommError);
  EXPECT_THROW(decode_config(encode_config({.replicas = 0, .split_bound = 0, .slice_elements = 1})), CommError);
  EXPECT_THROW(decode_config(encode_config({.replicas = 0, .split_bound = 1, .slice_elements = 0})), CommError);
}

TEST(Messages, RequestIdsAreStampedIntoTheHeader) {
  const HeaderBytes b = encode_header({.op = Op::Pull, .key = 3, .num_rows = 1, .row_numel = 1, .total_rows = 1});
  std::vector<std::byte> h(b.begin(), b.end());
  request_ids().stamp(h, 42);
  EXPECT_EQ(decode_header(h).request_id, 42u);  // the checksum still holds
}

}  // namespace
}  // namespace loom::ps
