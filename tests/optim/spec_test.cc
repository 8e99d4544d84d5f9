// The optimizer spec: the factory makes the rules and schedules the options
// structs would, and the codec round-trips every field and refuses bad bytes.
#include "loom/optim/spec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "loom/core/error.h"
#include "loom/core/le_bytes.h"
#include "loom/optim/optimizer.h"
#include "loom/optim/schedule.h"
#include "loom/optim/update_rule.h"

namespace loom::optim {
namespace {

OptimizerSpec every_field_set() {
  return {.rule = Rule::AdamW, .lr = 0.1 + 1e-17, .momentum = 0.5, .dampening = 0.25, .nesterov = true,
          .weight_decay = 1.0 / 3, .beta1 = 0.8, .beta2 = 0.98, .eps = 1e-7, .amsgrad = true, .rescale_grad = 0.25,
          .schedule = {.kind = ScheduleKind::Cosine, .step_size = 3, .gamma = 0.5, .min_lr = 1e-5, .warmup_steps = 10,
                       .steps_per_epoch = 7, .total_steps = 1000}};
}

TEST(OptimizerSpec, NamesParseBack) {
  for (Rule r : {Rule::Sgd, Rule::Adam, Rule::AdamW}) EXPECT_EQ(parse_rule(name(r)), r);
  for (auto k : {ScheduleKind::Constant, ScheduleKind::Step, ScheduleKind::Cosine}) {
    EXPECT_EQ(parse_schedule_kind(name(k)), k);
  }
  EXPECT_EQ(parse_rule("rmsprop"), std::nullopt);
  EXPECT_EQ(rule_names(), (std::vector<std::string>{"sgd", "adam", "adamw"}));
}

TEST(OptimizerSpec, RoundTripsEveryFieldExactly) {
  const OptimizerSpec s = every_field_set();
  const std::vector<std::byte> bytes = encode_spec(s);
  ASSERT_EQ(bytes.size(), kSpecBytes);
  EXPECT_EQ(decode_spec(bytes), s);
  EXPECT_EQ(encode_spec(decode_spec(bytes)), bytes);
  EXPECT_EQ(decode_spec(encode_spec(OptimizerSpec{})), OptimizerSpec{});
}

// The bytes a server receives, pinned: a change to the codec that moves a
// field fails here (hex computed apart from Loom, with Python's struct).
TEST(OptimizerSpec, KnownEncodingIsPinned) {
  const std::string pinned =
      "4c4f5054" "0100" "7c00"                         // "LOPT", version 1, length 124
      "02" "02" "03" "00"                              // adamw, cosine, nesterov|amsgrad, reserved
      "9b9999999999b93f" "000000000000e03f"            // lr, momentum
      "000000000000d03f" "555555555555d53f"            // dampening, weight_decay
      "9a9999999999e93f" "5c8fc2f5285cef3f"            // beta1, beta2
      "48afbc9af2d77a3e" "000000000000d03f"            // eps, rescale_grad
      "0300000000000000" "000000000000e03f"            // step_size, gamma
      "f168e388b5f8e43e" "0a00000000000000"            // min_lr, warmup_steps
      "0700000000000000" "e803000000000000";           // steps_per_epoch, total_steps
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string got;
  for (std::byte x : encode_spec(every_field_set())) {
    got += kDigits[static_cast<unsigned>(x) >> 4];
    got += kDigits[static_cast<unsigned>(x) & 0xF];
  }
  EXPECT_EQ(got, pinned);
  std::vector<std::byte> bytes;
  for (size_t i = 0; i < pinned.size(); i += 2) bytes.push_back(std::byte(std::stoi(pinned.substr(i, 2), nullptr, 16)));
  EXPECT_EQ(decode_spec(bytes), every_field_set());
}

TEST(OptimizerSpec, MalformedBytesAreRefused) {
  const std::vector<std::byte> good = encode_spec(every_field_set());
  auto expect_refused = [](std::vector<std::byte> b, const std::string& why) {
    try {
      decode_spec(b);
      ADD_FAILURE() << "accepted: " << why;
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("optimizer spec"), std::string::npos) << e.what();
    }
  };
  expect_refused({}, "empty");
  expect_refused(std::vector<std::byte>(good.begin(), good.end() - 1), "truncated");
  auto longer = good;
  longer.push_back(std::byte{0});
  expect_refused(longer, "oversized");
  auto set = [&](size_t offset, std::byte v) {
    auto b = good;
    b[offset] = v;
    return b;
  };
  expect_refused(set(0, std::byte{'X'}), "magic");
  expect_refused(set(4, std::byte{2}), "version");
  expect_refused(set(6, std::byte{0}), "length field");
  expect_refused(set(8, std::byte{3}), "unknown rule");
  expect_refused(set(9, std::byte{3}), "unknown schedule");
  expect_refused(set(10, std::byte{4}), "unknown flag");
  expect_refused(set(11, std::byte{1}), "reserved byte");
  auto put_f64 = [&](size_t offset, double v) {
    auto b = good;
    core::put_le<uint64_t>(b.data() + offset, std::bit_cast<uint64_t>(v));
    return b;
  };
  expect_refused(put_f64(12, std::numeric_limits<double>::quiet_NaN()), "lr NaN");
  expect_refused(put_f64(12, -1.0), "negative lr");
  expect_refused(put_f64(44, 1.0), "beta1 = 1");
  expect_refused(put_f64(68, std::numeric_limits<double>::infinity()), "rescale_grad inf");
  auto put_i64 = [&](size_t offset, int64_t v) {
    auto b = good;
    core::put_le<int64_t>(b.data() + offset, v);
    return b;
  };
  expect_refused(put_i64(76, 0), "step_size 0");
  expect_refused(put_i64(100, -1), "negative warmup");
  expect_refused(put_i64(108, 0), "steps_per_epoch 0");
  expect_refused(put_i64(116, 0), "total_steps 0");
  expect_refused(put_i64(76, std::numeric_limits<int64_t>::max()), "step_size x steps_per_epoch overflows");
  // Every single flipped bit is either refused or decodes to a spec that encodes back to it.
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto b = good;
      b[i] ^= static_cast<std::byte>(1 << bit);
      try {
        EXPECT_EQ(encode_spec(decode_spec(b)), b) << "byte " << i << " bit " << bit;
      } catch (const ValueError&) {
      }
    }
  }
}

TEST(OptimizerSpec, FactoryMakesTheRuleItNames) {
  EXPECT_EQ(make_update_rule({.rule = Rule::Sgd})->state_names().size(), 0u);
  EXPECT_EQ(make_update_rule({.rule = Rule::Sgd, .momentum = 0.9})->state_names(),
            (std::vector<std::string>{"momentum_buffer"}));
  EXPECT_EQ(make_update_rule({.rule = Rule::Adam})->name(), "adam");
  EXPECT_EQ(make_update_rule({.rule = Rule::AdamW, .amsgrad = true})->state_names(),
            (std::vector<std::string>{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}));
  EXPECT_THROW(make_update_rule({.rule = Rule::Sgd, .nesterov = true}), ValueError);  // no momentum
  EXPECT_THROW(make_update_rule({.lr = -1}), ValueError);
}

// The factory's rule gives the bits the options struct's rule gives.
TEST(OptimizerSpec, FactoryRuleEqualsTheOptionsRule) {
  const OptimizerSpec spec{.rule = Rule::Adam, .lr = 0.01, .weight_decay = 0.1, .beta1 = 0.8, .eps = 1e-6,
                           .amsgrad = true};
  const Adam direct({.lr = 0.01, .betas = {0.8, 0.999}, .eps = 1e-6, .weight_decay = 0.1, .amsgrad = true});
  const auto made = make_update_rule(spec);
  std::vector<float> w1 = {0.5f, -1.0f, 2.0f}, w2 = w1, g = {0.1f, -0.3f, 0.2f};
  std::vector<float> s1(9, 0.0f), s2(9, 0.0f);
  std::array<float*, 3> p1{s1.data(), s1.data() + 3, s1.data() + 6}, p2{s2.data(), s2.data() + 3, s2.data() + 6};
  for (int64_t t = 1; t <= 3; ++t) {
    direct.step(std::span<float>(w1), std::span<const float>(g), std::span<float* const>(p1), {.step = t, .lr = 0.01});
    made->step(std::span<float>(w2), std::span<const float>(g), std::span<float* const>(p2), {.step = t, .lr = 0.01});
  }
  EXPECT_EQ(w1, w2);
  EXPECT_EQ(s1, s2);
}

TEST(OptimizerSpec, SchedulesCountEpochsAndRunToTheEnd) {
  OptimizerSpec s{.lr = 1.0};
  EXPECT_EQ(make_schedule(s)->lr_at(1000000), 1.0);  // constant
  s.schedule = {.kind = ScheduleKind::Step, .step_size = 2, .gamma = 0.5, .steps_per_epoch = 10};
  EXPECT_EQ(make_schedule(s)->lr_at(19), 1.0);
  EXPECT_EQ(make_schedule(s)->lr_at(20), 0.5);  // 2 epochs of 10 steps
  s.schedule = {.kind = ScheduleKind::Cosine, .min_lr = 0.1, .warmup_steps = 10, .total_steps = 110};
  const auto cosine = make_schedule(s);
  EXPECT_EQ(cosine->lr_at(0), 0.0);  // warm-up from 0
  EXPECT_DOUBLE_EQ(cosine->lr_at(10), 1.0);
  EXPECT_NEAR(cosine->lr_at(110), 0.1, 1e-15);  // annealed over total_steps - warmup_steps
}

TEST(OptimizerSpec, LocalOptimizerDoesNotRescale) {
  Tensor w = Tensor::from_vector<float>({1.0f}, {1});
  w.set_requires_grad(true);
  EXPECT_THROW(make_optimizer({{"w", w}}, {.rescale_grad = 0.5}), ValueError);
  EXPECT_EQ(make_optimizer({{"w", w}}, {.lr = 0.3}).lr(), 0.3);
}

}  // namespace
}  // namespace loom::optim
