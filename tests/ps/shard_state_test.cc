// A slice's state (protocol.h ShardState): taken from a Shard and put into
// another, and through its frames, it comes back bit for bit and the two
// shards go on identically; the frames' decoder refuses anything malformed
// with CommError and never crashes.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "loom/core/error.h"
#include "loom/optim/spec.h"
#include "loom/ps/protocol.h"
#include "loom/ps/shard.h"

namespace loom::ps {
namespace {

std::span<const std::byte> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(float)};
}

ShardOptions slice_options(int num_workers) {
  return {.key = 7, .dtype = core::DType::F32, .key_shape = {6, 3}, .row_begin = 2, .num_rows = 4,
          .num_workers = num_workers, .sync = true};
}

std::vector<float> gradient(int worker, int round) {
  std::vector<float> g(12);
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = 0.1f * static_cast<float>(i) - 0.37f * static_cast<float>(worker + round);
  }
  return g;
}

// A round of pushes from every worker; returns whether it was applied.
bool push_round(Shard& s, int workers, int round) {
  bool applied = false;
  for (int w = 0; w < workers; ++w) {
    const auto g = gradient(w, round);
    applied = s.push(w, round, {.data = Payload::copy_of(bytes_of(g))}) == PushResult::Applied;
  }
  return applied;
}

std::vector<std::span<const std::byte>> frames_of(const std::vector<std::vector<std::byte>>& parts) {
  return {parts.begin(), parts.end()};
}

TEST(ShardState, ComesBackBitForBitThroughItsFrames) {
  ShardState s{.weights = std::vector<std::byte>(48, std::byte{3}), .updates = 41, .round = 40,
               .versions = {40, 39, -1}};
  s.slots.emplace_back(48, std::byte{0xA5});
  s.slots.emplace_back(48, std::byte{0x5A});
  const EncodedShardState e = encode_shard_state(s);
  ASSERT_EQ(e.frames.size(), 4u);  // weights, two slots, counters
  EXPECT_EQ(e.frames.back().size(), 8u * 5);
  EXPECT_EQ(decode_shard_state(e.frames), s);
  // Counters are little-endian i64: updates, round, versions.
  int64_t first = 0;
  std::memcpy(&first, e.frames.back().data(), 8);
  EXPECT_EQ(first, 41);

  const ShardState bare{.weights = {}, .versions = {}};  // an empty slice, no workers counted
  EXPECT_EQ(decode_shard_state(encode_shard_state(bare).frames), bare);
}

TEST(ShardState, AShardRestoredFromItGoesOnIdentically) {
  const int workers = 2;
  Shard a(slice_options(workers));
  const std::vector<float> init = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  a.init(bytes_of(init));
  const auto adam = make_server_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
  a.set_optimizer(adam);
  for (int r = 1; r <= 3; ++r) ASSERT_TRUE(push_round(a, workers, r));
  // Half of round 4 is pending: the state does not hold it.
  const auto g = gradient(0, 4);
  ASSERT_EQ(a.push(0, 4, {.data = Payload::copy_of(bytes_of(g))}), PushResult::Pending);

  const ShardState saved = a.state();
  EXPECT_EQ(saved.slots.size(), 2u);  // Adam's two moments
  EXPECT_EQ(saved.updates, 3);
  EXPECT_EQ(saved.round, 3);
  EXPECT_EQ(saved.versions, (std::vector<int64_t>{3, 3}));

  Shard b(slice_options(workers));
  b.set_optimizer(adam);
  b.set_state(decode_shard_state(encode_shard_state(saved).frames));
  EXPECT_TRUE(b.initialized());
  EXPECT_EQ(b.state(), saved);

  // `a` drops its half round the same way, then both take the same rounds.
  a.set_state(saved);
  for (int r = 4; r <= 6; ++r) {
    ASSERT_TRUE(push_round(a, workers, r));
    ASSERT_TRUE(push_round(b, workers, r));
  }
  const auto wa = a.weights(), wb = b.weights();
  ASSERT_EQ(wa.size(), wb.size());
  EXPECT_EQ(std::memcmp(wa.data(), wb.data(), wa.size()), 0);
  EXPECT_EQ(a.state(), b.state());
}

TEST(ShardState, ThatDoesNotFitTheSliceIsRefused) {
  Shard s(slice_options(2));
  s.set_optimizer(make_server_optimizer({.rule = optim::Rule::Adam, .lr = 0.01}));
  const ShardState good{.weights = std::vector<std::byte>(48), .versions = {0, 0}};
  ShardState wrong = good;
  wrong.weights.resize(44);
  EXPECT_THROW(s.set_state(wrong), ShapeError);
  wrong = good;
  wrong.slots.assign(1, std::vector<std::byte>(48));  // Adam has 2
  EXPECT_THROW(s.set_state(wrong), ValueError);
  wrong = good;
  wrong.slots.assign(2, std::vector<std::byte>(40));
  EXPECT_THROW(s.set_state(wrong), ShapeError);
  wrong = good;
  wrong.versions = {0, 0, 0};  // three workers' counts, the job has two
  EXPECT_THROW(s.set_state(wrong), ValueError);
  wrong = good;
  wrong.updates = -1;
  EXPECT_THROW(s.set_state(wrong), ValueError);
  EXPECT_FALSE(s.initialized());
  s.set_state(good);  // no slots: state starts from zero at the next update
  EXPECT_TRUE(s.initialized());
}

// The shard checks a request's own description of the slice (no wire header):
// the same key, dtype, rows and, when given, shape.
TEST(ShardState, ARequestAboutAnotherSliceIsRefused) {
  Shard s(slice_options(1));
  const SliceRequest good{.key = 7, .dtype = core::DType::F32, .total_rows = 6, .row_numel = 3, .row_begin = 2,
                          .num_rows = 4};
  EXPECT_NO_THROW(s.check_request(good));
  SliceRequest with_shape = good;
  with_shape.shape = core::Shape{6, 3};
  EXPECT_NO_THROW(s.check_request(with_shape));
  with_shape.shape = core::Shape{3, 6};
  EXPECT_THROW(s.check_request(with_shape), ShapeError);
  SliceRequest wrong = good;
  wrong.dtype = core::DType::F64;
  EXPECT_THROW(s.check_request(wrong), TypeError);
  wrong = good;
  wrong.row_numel = 2;
  EXPECT_THROW(s.check_request(wrong), ShapeError);
  wrong = good;
  wrong.row_begin = 0;
  try {
    s.check_request(wrong);
    ADD_FAILURE() << "another slice's rows accepted";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("rows [2, 6)"), std::string::npos) << e.what();
  }
  wrong = good;
  wrong.key = 8;
  EXPECT_THROW(s.check_request(wrong), ValueError);
}

TEST(ShardState, MalformedFramesThrowCommError) {
  const std::vector<std::byte> w(16), counters(16), odd(15), one(8);
  auto bad = [](std::vector<std::vector<std::byte>> parts) {
    EXPECT_THROW(decode_shard_state(frames_of(parts)), CommError);
  };
  bad({});                                                // nothing
  bad({w});                                               // no counters
  bad({w, odd});                                          // counters not whole i64
  bad({w, one});                                          // only one counter
  bad({w, std::vector<std::byte>(12), counters});         // a slot unlike the weights
  std::vector<std::byte> negative(16, std::byte{0xFF});  // updates and round -1
  bad({w, negative});
}

// Random frame lists and random bytes: the decoder returns or throws
// CommError; what it returns, a shard takes or refuses with ValueError.
TEST(ShardState, RandomFramesNeverCrashTheDecoderOrTheShard) {
  std::mt19937 rng(11);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const ShardState real = [] {
    Shard s(slice_options(2));
    const std::vector<float> init(12, 1.0f);
    s.init(bytes_of(init));
    s.set_optimizer(make_server_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9}));
    push_round(s, 2, 1);
    return s.state();
  }();
  const EncodedShardState encoded = encode_shard_state(real);
  int decoded = 0, taken = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::vector<std::byte>> parts;
    if (i % 2 == 0) {  // a real state, mutated: a size changed, a frame dropped or added, bytes flipped
      for (const auto& f : encoded.frames) parts.emplace_back(f.begin(), f.end());
      switch (pick(4)) {
        case 0: parts[pick(parts.size())].resize(pick(64)); break;
        case 1: parts.erase(parts.begin() + static_cast<ptrdiff_t>(pick(parts.size()))); break;
        case 2: parts.insert(parts.begin() + static_cast<ptrdiff_t>(pick(parts.size() + 1)), parts[0]); break;
        default: break;
      }
      for (int flips = static_cast<int>(pick(4)); flips > 0; --flips) {
        auto& f = parts[pick(parts.size())];
        if (!f.empty()) f[pick(f.size())] = static_cast<std::byte>(rng());
      }
    } else {  // anything
      parts.resize(pick(6));
      for (auto& f : parts) {
        f.resize(pick(3) == 0 ? 8 * pick(6) : pick(80));
        for (auto& b : f) b = static_cast<std::byte>(rng());
      }
    }
    ShardState s;
    try {
      s = decode_shard_state(frames_of(parts));
    } catch (const CommError&) {
      continue;
    }
    ++decoded;
    Shard shard(slice_options(2));
    shard.set_optimizer(make_server_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9}));
    try {
      shard.set_state(std::move(s));
    } catch (const ValueError&) {
      continue;
    }
    ++taken;
    const std::vector<float> g(12, 0.5f);
    // A restored shard serves on: a push of the next round or a duplicate, never a crash.
    const int64_t seen = shard.state().versions[0];
    try {
      shard.push(0, seen < INT64_MAX ? seen + 1 : seen, {.data = Payload::copy_of(bytes_of(g))});
    } catch (const ValueError&) {
    }
  }
  EXPECT_GT(decoded, 100);  // the mutations reach the shard, not only the decoder's first checks
  EXPECT_GT(taken, 10);
}

}  // namespace
}  // namespace loom::ps
