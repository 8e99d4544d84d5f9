// Deterministic data parallelism with atoms, ranks as threads: an MLP with
// dropout and a CNN with batch norm and dropout train 50 steps to weights and
// buffers that are memcmp-equal for 1, 2, 4 and 8 ranks (8 atoms) and for 1, 3
// and 6 ranks (6 atoms), also when stopped after 25 steps and resumed (on
// another world size); a world that does not divide the atoms is refused; the
// fixed-point sums are exact up to their limit and fail clearly beyond it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>

#include "loom/autograd/engine.h"
#include "loom/comm/transport/inproc_transport.h"
#include "loom/data/data.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/data_parallel_fixed_point.h"
#include "loom/parallel/data_parallel_strategy.h"
#include "loom/train/trainer.h"

namespace loom::parallel {
namespace {

using core::Tensor;
namespace fs = std::filesystem;

// Runs f(rank) on `world` threads; rethrows the first rank's error.
template <class F>
void run_ranks(int world, F f) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      try {
        f(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// ---- atoms -----------------------------------------------------------------

TEST(Atoms, EveryWorldThatDividesTheAtomsCutsTheBatchTheSameWay) {
  for (int64_t rows : {128, 16, 7, 6, 3, 0}) {
    for (int64_t atoms : {8, 6, 1}) {
      std::vector<std::pair<int64_t, int64_t>> want;  // global rows of atom k
      for (int64_t k = 0; k < atoms; ++k) want.emplace_back(rows * k / atoms, rows * (k + 1) / atoms);
      for (int world = 1; world <= atoms; ++world) {
        if (atoms % world != 0) continue;
        std::vector<std::pair<int64_t, int64_t>> got;
        for (int r = 0; r < world; ++r) {
          const int64_t share_begin = rows * r / world, share_end = rows * (r + 1) / world;
          for (const Atom& a : atoms_of_rank(rows, atoms, r, world)) {
            EXPECT_EQ(a.index, static_cast<int64_t>(got.size()));
            EXPECT_GE(a.begin, 0);
            EXPECT_LE(share_begin + a.end, share_end);
            got.emplace_back(share_begin + a.begin, share_begin + a.end);
          }
        }
        EXPECT_EQ(got, want) << rows << " rows, " << atoms << " atoms, world " << world;
      }
    }
  }
}

TEST(Atoms, AWorldThatDoesNotDivideTheAtomsIsRefused) {
  try {
    check_atoms(8, 3);
    FAIL() << "world 3 with 8 atoms was accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("deterministic_atoms = 8"), std::string::npos) << what;
    EXPECT_NE(what.find("multiple of 3"), std::string::npos) << what;
  }
  EXPECT_THROW(check_atoms(0, 1), ConfigError);
  EXPECT_THROW(check_atoms(fixed_point::kMaxAtoms + 1, 1), ConfigError);
  EXPECT_NO_THROW(check_atoms(fixed_point::kMaxAtoms, 4));
}

TEST(Atoms, SeedsDependOnTheStepAndTheAtomOnly) {
  EXPECT_EQ(atom_seed(7, 3, 5), atom_seed(7, 3, 5));
  EXPECT_NE(atom_seed(7, 3, 5), atom_seed(7, 3, 6));
  EXPECT_NE(atom_seed(7, 3, 5), atom_seed(7, 4, 5));
  EXPECT_NE(atom_seed(7, 3, 5), atom_seed(8, 3, 5));
}

// ---- fixed point -----------------------------------------------------------

TEST(FixedPoint, ExactUpToTheLimitWithTheMostAtoms) {
  const double below = fixed_point::kMaxMagnitude;  // 2^11 - 2^-40: 2^51 - 1 units
  Tensor acc = ops::zeros({3}, core::DType::I64);
  for (int64_t k = 0; k < fixed_point::kMaxAtoms; ++k) {
    Tensor g = Tensor::from_vector<double>({below, -below, 0x1p-41 * 3}, {3});  // the last rounds to even: 2
    ASSERT_FALSE(fixed_point::accumulate(g, acc).has_value());
    EXPECT_EQ(g.to_vector<double>(), std::vector<double>(3, 0.0));  // zeroed for the next atom
  }
  // 4096 (2^51 - 1) = 2^63 - 2^12: the most an int64 element ever holds.
  const auto sums = acc.to_vector<int64_t>();
  EXPECT_EQ(sums[0], fixed_point::kMaxAtoms * ((int64_t{1} << 51) - 1));
  EXPECT_EQ(sums[1], -sums[0]);
  EXPECT_EQ(sums[2], fixed_point::kMaxAtoms * 2);
  Tensor out = ops::zeros({3}, core::DType::F64);
  fixed_point::to_float(acc, out);
  const auto back = out.to_vector<double>();
  EXPECT_EQ(back[0], static_cast<double>(sums[0]) * 0x1p-40);
  EXPECT_EQ(back[2], fixed_point::kMaxAtoms * 2 * 0x1p-40);
  // Assign starts a sum afresh; a range covers part of the buffers only.
  Tensor g = Tensor::from_vector<double>({1.0, 2.0, 3.0}, {3});
  ASSERT_FALSE(fixed_point::accumulate(g, acc, {.mode = fixed_point::Mode::Assign, .begin = 1, .end = 3}).has_value());
  EXPECT_EQ(acc.to_vector<int64_t>(), (std::vector<int64_t>{sums[0], int64_t{2} << 40, int64_t{3} << 40}));
  EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{1.0, 0.0, 0.0}));
}

TEST(FixedPoint, RoundsAndConvertsBackAsTheReference) {
  core::Generator gen(3);
  Tensor g = ops::mul(ops::randn({5000}, gen), 1e-3);  // f32, every magnitude down to the resolution
  const auto values = g.to_vector<float>();
  Tensor acc = ops::zeros({5000}, core::DType::I64);
  ASSERT_FALSE(fixed_point::accumulate(g, acc).has_value());
  const auto q = acc.to_vector<int64_t>();
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(q[i], std::llrint(static_cast<double>(values[i]) * 0x1p40)) << i;  // round half to even
  }
  Tensor back_f32 = ops::zeros({5000});
  fixed_point::to_float(acc, back_f32);
  const auto got = back_f32.to_vector<float>();
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(got[i], static_cast<float>(static_cast<double>(q[i]) * 0x1p-40)) << i;
  }
  // Both conversions of a block: all small (|acc| < 2^51, at the edges too) or some large.
  for (auto raw_values : {std::vector<int64_t>{(int64_t{1} << 51) - 1, -(int64_t{1} << 51), -1, 0, 12345},
                          std::vector<int64_t>{(int64_t{1} << 62) + 12345, -(int64_t{1} << 61) - 777, -1, 0,
                                               int64_t{1} << 51}}) {
    Tensor big = Tensor::from_vector<int64_t>(raw_values, {5});
    Tensor out = ops::zeros({5}, core::DType::F64);
    fixed_point::to_float(big, out);
    const auto back = out.to_vector<double>();
    for (size_t i = 0; i < raw_values.size(); ++i) EXPECT_EQ(back[i], static_cast<double>(raw_values[i]) * 0x1p-40) << i;
  }
}

TEST(FixedPoint, OutOfRangeValuesAreReported) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  const double over = std::nextafter(fixed_point::kMaxMagnitude, inf);
  for (double bad : {over, -over, 2048.0, 1e30, inf, -inf, nan}) {
    Tensor g = Tensor::from_vector<double>({0.5, 1.0, bad, 3.0}, {4});
    Tensor acc = ops::zeros({4}, core::DType::I64);
    const auto r = fixed_point::accumulate(g, acc);
    ASSERT_TRUE(r.has_value()) << bad;
    EXPECT_EQ(r->index, 2);
    if (std::isnan(bad)) EXPECT_TRUE(std::isnan(r->value));
    else EXPECT_EQ(r->value, bad);
  }
  // Found across the blocks of a long buffer too.
  Tensor g = ops::zeros({10000}, core::DType::F32);
  g.data<float>()[9001] = 5000.0f;
  Tensor acc = ops::zeros({10000}, core::DType::I64);
  const auto r = fixed_point::accumulate(g, acc);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->index, 9001);
  EXPECT_EQ(r->value, 5000.0);
}

// A linear layer's weight gradient by terms (one per atom): each term's
// product, a float FMA chain over its rows in row order, rounded into the
// sums; both kernels, odd shapes (tails of rows and columns), Assign and Add.
TEST(FixedPoint, ProductsAddEachTermsRoundedRowOrderChain) {
  core::Generator gen(5);
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{{7, 45}, {4, 32}, {1, 3}, {10, 128}, {13, 17}}) {
    std::vector<fixed_point::Product> terms;
    for (int64_t rows : {16, 5, 1}) {
      terms.push_back({ops::mul(ops::randn({rows, out}, gen), 1e-2), ops::randn({rows, in}, gen)});
    }
    // The reference: each term's chain of (2^40 g) x by hand, rounded half to even.
    std::vector<int64_t> sums(static_cast<size_t>(out * in), 0);
    for (const auto& t : terms) {
      const auto g = t.g.to_vector<float>(), x = t.x.to_vector<float>();
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) {
          float acc = 0.0f;
          for (int64_t r = 0; r < t.g.shape()[0]; ++r) acc = std::fma(g[r * out + o] * 0x1p40f, x[r * in + i], acc);
          sums[o * in + i] += std::llrint(static_cast<double>(acc));
        }
      }
    }
    const Tensor want = Tensor::from_vector<int64_t>(sums, {out * in});
    for (auto kernel : {fixed_point::Kernel::Best, fixed_point::Kernel::Portable}) {
      Tensor got = ops::full({out, in}, 99.0, core::DType::I64);  // Assign ignores what was there
      ASSERT_FALSE(fixed_point::accumulate_products(terms, got, fixed_point::Mode::Assign, kernel).has_value());
      EXPECT_EQ(got.to_vector<int64_t>(), want.to_vector<int64_t>()) << out << "x" << in;
      Tensor added = ops::full({out, in}, 12345.0, core::DType::I64);
      ASSERT_FALSE(fixed_point::accumulate_products(terms, added, fixed_point::Mode::Add, kernel).has_value());
      auto expect = want.to_vector<int64_t>();
      for (auto& v : expect) v += 12345;
      EXPECT_EQ(added.to_vector<int64_t>(), expect) << out << "x" << in;
    }
  }
  // Large factors that never meet (the bound cannot show the range, every
  // product is in it): each product is checked, and the sums are as the chains.
  {
    Tensor g = ops::full({2, 3}, 1e-3), x = ops::full({2, 20}, 1e-3);
    g.data<float>()[0] = 1000.0f;      // row 0, output 0
    x.data<float>()[20 + 5] = 1000.0f;  // row 1, input 5
    Tensor acc = ops::zeros({3, 20}, core::DType::I64);
    for (auto kernel : {fixed_point::Kernel::Best, fixed_point::Kernel::Portable}) {
      ASSERT_FALSE(fixed_point::accumulate_products({{g, x}}, acc, fixed_point::Mode::Assign, kernel).has_value());
      const float p05 = std::fma(1e-3f * 0x1p40f, 1000.0f, std::fma(1000.0f * 0x1p40f, 1e-3f, 0.0f));  // (0, 5)
      EXPECT_EQ(acc.to_vector<int64_t>()[5], std::llrint(static_cast<double>(p05)));
    }
  }
  // A product outside the range (2^11) is named, with its element and value.
  Tensor g = ops::zeros({2, 3}), x = ops::zeros({2, 40});
  g.data<float>()[1 * 3 + 2] = 64.0f;  // row 1, output 2
  x.data<float>()[1 * 40 + 37] = 40.0f;   // row 1, input 37: 2560
  for (auto kernel : {fixed_point::Kernel::Best, fixed_point::Kernel::Portable}) {
    Tensor acc = ops::zeros({3, 40}, core::DType::I64);
    const auto bad = fixed_point::accumulate_products({{g, x}}, acc, fixed_point::Mode::Add, kernel);
    ASSERT_TRUE(bad.has_value());
    EXPECT_EQ(bad->index, 2 * 40 + 37);
    EXPECT_EQ(bad->value, 2560.0);
  }
}

// A gradient outside the range on one rank fails the step on every rank, and
// the rank that saw it names the parameter and the value.
TEST(FixedPoint, AGradientOutOfRangeFailsEveryRankClearly) {
  std::vector<std::string> messages(2);
  auto hub = std::make_shared<comm::InProcHub>(2);
  run_ranks(2, [&](int r) {
    nn::Linear model({.in = 3, .out = 2, .seed = 1});
    comm::Communicator c = comm::make_communicator(hub->transport(r));
    DataParallel dp(model, c, {.timeout = std::chrono::milliseconds(20000), .deterministic = true});
    Tensor x = ops::ones({1, 3});
    const double scale = r == 1 ? 1e6 : 1.0;  // rank 1's weight gradient: 1e6 per element
    autograd::backward(ops::mul(ops::sum(model(x)), scale));
    dp.accumulate_fixed_point();
    try {
      dp.finish_gradient_sync();
    } catch (const ValueError& e) {
      messages[static_cast<size_t>(r)] = e.what();
    }
  });
  const bool names_it = messages[1].find("'weight' (element 0) is 1e+06") != std::string::npos ||
                        messages[1].find("'bias' (element 0) is 1e+06") != std::string::npos;
  EXPECT_TRUE(names_it) << messages[1];
  EXPECT_NE(messages[1].find("|g| <= 2^11 - 2^-40"), std::string::npos) << messages[1];
  EXPECT_NE(messages[0].find("another rank"), std::string::npos) << messages[0];
}

// The backward sink (the gradient read once, straight into the sums) gives
// the bits of the hooks' path (added into .grad, then into the sums), also
// for a parameter used twice in one forward (its two edges summed first).
TEST(FixedPoint, TheBackwardSinkGivesTheHooksBits) {
  std::vector<std::vector<float>> grads[2];
  int taken = 0;
  for (int sink = 0; sink < 2; ++sink) {
    auto hub = std::make_shared<comm::InProcHub>(1);
    nn::Sequential model(nn::Linear({.in = 5, .out = 5, .seed = 3}), nn::Tanh(), nn::Linear({.in = 5, .out = 2, .seed = 4}));
    nn::Module& twice = *model.named_modules()[1].second;  // the first Linear
    comm::Communicator c = comm::make_communicator(hub->transport(0));
    DataParallel dp(model, c, {.deterministic = true});
    core::Generator g(5);
    for (int atom = 0; atom < 3; ++atom) {
      Tensor x = ops::randn({4, 5}, g);
      Tensor loss = ops::mean(ops::square(model(twice(x))));
      if (sink) {
        autograd::backward(loss, {.sink = [&](const Tensor& leaf, const Tensor& grad) {
                                    const bool took = dp.take_atom_gradient(leaf, grad);
                                    taken += took;
                                    return took;
                                  }});
      } else {
        autograd::backward(loss);
      }
      dp.accumulate_fixed_point();
    }
    dp.finish_gradient_sync();
    for (auto& [name, p] : model.named_parameters()) grads[sink].push_back(p.grad().to_vector<float>());
  }
  EXPECT_EQ(taken, 3 * 4);  // every parameter, every atom
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    ASSERT_EQ(grads[0][i].size(), grads[1][i].size());
    EXPECT_EQ(std::memcmp(grads[0][i].data(), grads[1][i].data(), grads[0][i].size() * sizeof(float)), 0) << i;
  }
}

// ---- training --------------------------------------------------------------

std::shared_ptr<nn::Module> mlp_with_dropout() {
  return std::make_shared<nn::Sequential>(nn::Linear({.in = 12, .out = 16, .seed = 1}), nn::ReLU(),
                                          nn::Dropout({.p = 0.3, .seed = 7}), nn::Linear({.in = 16, .out = 3, .seed = 2}));
}

std::shared_ptr<nn::Module> cnn_with_batch_norm() {
  return std::make_shared<nn::Sequential>(nn::Conv2d({.in = 1, .out = 4, .kernel = 3, .padding = 1, .seed = 1}),
                                          nn::BatchNorm2d({.num_features = 4}), nn::ReLU(),
                                          nn::MaxPool2d({.kernel = 2}), nn::Flatten(),
                                          nn::Dropout({.p = 0.2, .seed = 9}),
                                          nn::Linear({.in = 4 * 4 * 4, .out = 3, .seed = 2}));
}

enum class Model { Mlp, Cnn };

// 150 rows: 9 batches of 16 and one of 6, where 8 atoms leave two empty.
std::shared_ptr<data::TensorDataset> dataset(Model m) {
  core::Generator g(11);
  Tensor x = m == Model::Mlp ? ops::randn({150, 12}, g) : ops::randn({150, 1, 8, 8}, g);
  Tensor y = ops::to_dtype(ops::mul(ops::rand({150}, g), 3.0), core::DType::I64);
  return std::make_shared<data::TensorDataset>(x, y);
}

const train::LossFn kCrossEntropy = [](const Tensor& out, const Tensor& y) { return ops::cross_entropy(out, y); };

struct Run {
  Model model = Model::Mlp;
  int world = 1;
  int64_t atoms = 8;
  int64_t max_steps = 50;
  std::string checkpoint_dir;  // set: resume from it when it holds a checkpoint
  size_t bucket_bytes = 25u << 20;  // small: several buckets, all-reduced during the last atom's backward
};

// The bytes of every state_dict entry (weights and buffers) after the run, rank 0's; every rank agrees.
std::vector<std::vector<std::byte>> train(const Run& run) {
  auto hub = std::make_shared<comm::InProcHub>(run.world);
  std::vector<std::vector<std::vector<std::byte>>> states(static_cast<size_t>(run.world));
  run_ranks(run.world, [&](int r) {
    auto model = run.model == Model::Mlp ? mlp_with_dropout() : cnn_with_batch_norm();
    auto strategy = std::make_shared<DataParallelStrategy>(
        comm::make_communicator(hub->transport(r)),
        DataParallelStrategyOptions{.data_parallel = {.bucket_bytes = run.bucket_bytes,
                                                      .first_bucket_bytes = std::min<size_t>(run.bucket_bytes, 1u << 20),
                                                      .timeout = std::chrono::milliseconds(30000)},
                                    .deterministic = true,
                                    .deterministic_atoms = run.atoms});
    io::TrainConfig loop{.epochs = 100, .max_steps = run.max_steps, .eval_interval = 0};
    loop.checkpoint_dir = run.checkpoint_dir;
    loop.checkpoint_every = 1000;
    train::Trainer trainer({.model = model,
                            .train_loader = std::make_shared<data::DataLoader>(
                                dataset(run.model), data::LoaderOptions{.batch_size = 16, .shuffle = true, .seed = 3}),
                            .loss = kCrossEntropy,
                            .optimizer = {.rule = optim::Rule::Sgd, .lr = 0.05, .momentum = 0.9},
                            .strategy = strategy},
                           loop, {.log = nullptr});
    if (!run.checkpoint_dir.empty()) trainer.resume_from_latest();
    trainer.fit();
    EXPECT_EQ(trainer.step(), run.max_steps);
    for (auto& [name, t] : model->state_dict()) {
      Tensor c = ops::contiguous(t);
      const auto* p = static_cast<const std::byte*>(c.data_ptr());
      states[static_cast<size_t>(r)].emplace_back(p, p + c.nbytes());
    }
  });
  for (int r = 1; r < run.world; ++r) EXPECT_TRUE(states[static_cast<size_t>(r)] == states[0]) << "rank " << r;
  return states[0];
}

void expect_same_bits(const std::vector<std::vector<std::byte>>& got, const std::vector<std::vector<std::byte>>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << what << ", entry " << i;
    EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].size()), 0) << what << ", state_dict entry " << i;
  }
}

TEST(Deterministic, MlpWithDropoutIsBitwiseEqualFor1248Ranks) {
  const auto one = train({.model = Model::Mlp, .world = 1});
  for (int world : {2, 4, 8}) expect_same_bits(train({.model = Model::Mlp, .world = world}), one, format("world {}", world));
}

TEST(Deterministic, CnnWithBatchNormAndDropoutIsBitwiseEqualFor1248Ranks) {
  const auto one = train({.model = Model::Cnn, .world = 1});
  for (int world : {2, 4, 8}) expect_same_bits(train({.model = Model::Cnn, .world = world}), one, format("world {}", world));
}

TEST(Deterministic, SixAtomsAreBitwiseEqualFor136Ranks) {
  for (Model m : {Model::Mlp, Model::Cnn}) {
    const auto one = train({.model = m, .world = 1, .atoms = 6});
    for (int world : {3, 6}) {
      expect_same_bits(train({.model = m, .world = world, .atoms = 6}), one, format("world {}", world));
    }
  }
}

// Buckets only group the integer sums: small ones (each all-reduced as soon
// as the last atom's backward completes it) give the same bits.
TEST(Deterministic, BucketsDoNotChangeTheBits) {
  const auto one = train({.model = Model::Cnn, .world = 1, .max_steps = 20});
  for (int world : {1, 2, 4}) {
    expect_same_bits(train({.model = Model::Cnn, .world = world, .max_steps = 20, .bucket_bytes = 96}), one,
                     format("world {}, buckets of 96 bytes", world));
  }
}

// The atoms are part of the result: other atoms, other bits (so the tests
// above compare something that could differ).
TEST(Deterministic, OtherAtomsGiveOtherBits) {
  const auto eight = train({.model = Model::Cnn, .world = 1, .max_steps = 5});
  const auto four = train({.model = Model::Cnn, .world = 1, .atoms = 4, .max_steps = 5});
  EXPECT_FALSE(eight == four);
}

// Stopped after 25 steps and resumed (also on another world size) equals 50 straight.
TEST(Deterministic, ResumeEqualsAStraightRun) {
  for (Model m : {Model::Mlp, Model::Cnn}) {
    const auto straight = train({.model = m, .world = 2});
    for (auto [first, second] : {std::pair{2, 2}, std::pair{4, 1}}) {
      const fs::path dir = fs::temp_directory_path() /
                           format("loom_deterministic_resume_{}_{}_{}", ::getpid(), first, static_cast<int>(m));
      fs::remove_all(dir);
      train({.model = m, .world = first, .max_steps = 25, .checkpoint_dir = dir.string()});
      const auto resumed = train({.model = m, .world = second, .checkpoint_dir = dir.string()});
      fs::remove_all(dir);
      expect_same_bits(resumed, straight, format("25 steps on {} ranks, then 25 on {}", first, second));
    }
  }
}

TEST(Deterministic, AWorldThatDoesNotDivideTheAtomsIsRefused) {
  try {
    train({.model = Model::Mlp, .world = 3, .max_steps = 1});
    FAIL() << "3 ranks with 8 atoms trained";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("deterministic_atoms"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::parallel
