#include "loom/io/async_checkpoint.h"

#include <atomic>
#include <memory>

#include <gtest/gtest.h>

#include "loom/core/half.h"
#include "loom/ops/view.h"
#include "tests/io/temp_dir.h"

namespace loom::io {
namespace {

using core::Tensor;
using testing::TempDir;

std::vector<int64_t> steps(const CheckpointManager& m) {
  std::vector<int64_t> out;
  for (const auto& c : m.list()) out.push_back(c.step);
  return out;
}

// `numel` floats whose memory counts its release in `released`: the writer
// drops a job's tensors when its write has ended, so the count says which
// writes are over without sleeping or polling. 16M floats (64 MiB) make a
// write that takes far longer than a submit() call.
Tensor tracked_tensor(int64_t numel, float value, std::atomic<int>& released) {
  auto* data = new float[static_cast<size_t>(numel)];
  std::fill(data, data + numel, value);
  auto impl = std::make_shared<core::TensorImpl>();
  impl->storage = core::Storage(data, static_cast<size_t>(numel) * sizeof(float), core::Device::cpu(),
                                [&released](void* p) {
                                  delete[] static_cast<float*>(p);
                                  released.fetch_add(1);
                                });
  impl->shape = {numel};
  impl->strides = core::contiguous_strides(impl->shape);
  return Tensor(std::move(impl));
}

constexpr int64_t kLargeNumel = int64_t{16} << 20;

NamedTensors mixed_tensors() {
  Tensor m = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  return {{"model.w", m},
          {"model.w_t", ops::transpose(m, 0, 1)},  // a strided view
          {"model.ids", Tensor::from_vector<int64_t>({7, -8, 9}, {3})},
          {"model.h", Tensor::from_vector<core::BFloat16>({core::BFloat16(0.5f), core::BFloat16(-2.0f)}, {2})},
          {"optim.step", Tensor::scalar<int64_t>(42)},
          {"empty", Tensor::empty({0, 4})}};
}

TEST(AsyncCheckpoint, SnapshotIsADeepContiguousCopy) {
  Tensor w = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  w.set_requires_grad(true);
  NamedTensors copy = snapshot({{"w", w}, {"w_t", ops::transpose(w.detach(), 0, 1)}});
  ASSERT_EQ(copy.size(), 2u);
  EXPECT_EQ(copy[0].first, "w");
  EXPECT_EQ(copy[1].first, "w_t");
  EXPECT_FALSE(copy[0].second.storage().is_same(w.storage()));
  EXPECT_FALSE(copy[0].second.requires_grad());
  EXPECT_TRUE(copy[1].second.is_contiguous());
  EXPECT_EQ(copy[1].second.shape(), (core::Shape{3, 2}));
  w.data<float>()[0] = 99;  // the training step goes on changing the original
  EXPECT_EQ(copy[0].second.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(copy[1].second.to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_FALSE(snapshot({{"u", Tensor()}})[0].second.defined());  // for the write to refuse, naming it
}

TEST(AsyncCheckpoint, SnapshotPassesOnWhatIsACopyAlready) {
  const Tensor live = Tensor::from_vector<float>({1, 2}, {2}), copied = Tensor::from_vector<float>({3, 4}, {2});
  const NamedTensors out = snapshot({{"model.w", live}, {"optim.w.m", copied}},
                                    [](const std::string& name) { return name.starts_with("optim."); });
  EXPECT_FALSE(out[0].second.storage().is_same(live.storage()));
  EXPECT_TRUE(out[1].second.storage().is_same(copied.storage()));  // not copied a second time
}

TEST(AsyncCheckpoint, WritesTheBytesASynchronousSaveWrites) {
  TempDir dir;
  const Metadata meta{{"format", "pt"}, {"loom.step", "7"}};
  CheckpointManager sync_manager(dir / "sync");
  const auto sync_path = sync_manager.save(7, mixed_tensors(), meta);

  CheckpointManager async_manager(dir / "async");
  AsyncCheckpointWriter writer(async_manager);
  EXPECT_FALSE(writer.wait().has_value());  // nothing written yet
  writer.submit(7, snapshot(mixed_tensors()), meta);
  const auto async_path = writer.wait();
  ASSERT_TRUE(async_path.has_value());
  EXPECT_EQ(*async_path, dir / "async" / "ckpt-000000007.safetensors");
  EXPECT_FALSE(writer.busy());
  const std::string bytes = testing::read_file(*async_path);
  EXPECT_GT(bytes.size(), 8u);
  EXPECT_EQ(bytes, testing::read_file(sync_path));
}

TEST(AsyncCheckpoint, SubmitWaitsForTheWriteInFlight) {
  TempDir dir;
  CheckpointManager m(dir.path());
  AsyncCheckpointWriter writer(m);
  std::atomic<int> released{0};
  writer.submit(1, {{"w", tracked_tensor(kLargeNumel, 1.0f, released)}});
  writer.submit(2, {{"w", tracked_tensor(kLargeNumel, 2.0f, released)}});
  // Had the second submit() queued or started a write beside the first, the
  // first 64 MiB would still be on their way to disk here.
  EXPECT_EQ(released.load(), 1);
  EXPECT_EQ(read_safetensors_header(m.path_for(1)).data_nbytes, static_cast<uint64_t>(kLargeNumel) * 4);
  writer.submit(3, {{"w", tracked_tensor(kLargeNumel, 3.0f, released)}});
  EXPECT_EQ(released.load(), 2);
  EXPECT_TRUE(std::filesystem::exists(m.path_for(2)));
  EXPECT_EQ(*writer.wait(), m.path_for(3));
  EXPECT_EQ(released.load(), 3);
  EXPECT_FALSE(writer.busy());
  EXPECT_EQ(read_safetensors(m.path_for(3)).at("w").at<float>({kLargeNumel - 1}), 3.0f);
}

TEST(AsyncCheckpoint, DestructorWaitsForTheWrite) {
  TempDir dir;
  CheckpointManager m(dir.path());
  std::atomic<int> released{0};
  {
    AsyncCheckpointWriter writer(m);
    writer.submit(5, {{"w", tracked_tensor(kLargeNumel, 5.0f, released)}}, {{"step", "5"}});
  }
  EXPECT_EQ(released.load(), 1);
  SafetensorsFile f = read_safetensors(m.path_for(5));
  EXPECT_EQ(f.metadata.at("step"), "5");
  EXPECT_EQ(f.at("w").at<float>({kLargeNumel - 1}), 5.0f);
  EXPECT_EQ(dir.entries(), (std::set<std::string>{"ckpt-000000005.safetensors"}));  // no temporary left
}

TEST(AsyncCheckpoint, KeepLastStillPrunes) {
  TempDir dir;
  CheckpointManager m(dir.path(), {.keep_last = 2});
  AsyncCheckpointWriter writer(m);
  for (int64_t step = 1; step <= 5; ++step) {
    writer.submit(step, snapshot({{"w", Tensor::from_vector<float>({static_cast<float>(step)}, {1})}}));
  }
  EXPECT_EQ(*writer.wait(), m.path_for(5));
  EXPECT_EQ(steps(m), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(read_safetensors(m.path_for(4)).at("w").to_vector<float>(), (std::vector<float>{4}));
}

TEST(AsyncCheckpoint, AFailedWriteIsAnIoErrorOfTheNextSubmitAndKeepsEarlierCheckpoints) {
  TempDir dir;
  CheckpointManager m(dir.path(), {.keep_last = 2});
  AsyncCheckpointWriter writer(m);
  writer.submit(1, snapshot({{"w", Tensor::from_vector<float>({1, 2}, {2})}}));
  EXPECT_EQ(*writer.wait(), m.path_for(1));
  const std::string first = testing::read_file(m.path_for(1));

  // A directory where checkpoint 2 goes: its write reaches the final rename and fails there.
  std::filesystem::create_directories(m.path_for(2));
  writer.submit(2, snapshot({{"w", Tensor::from_vector<float>({3, 4}, {2})}}));
  try {
    writer.submit(3, snapshot({{"w", Tensor::from_vector<float>({5, 6}, {2})}}));
    FAIL() << "expected the failed write of step 2";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt-000000002.safetensors"), std::string::npos) << e.what();
  }
  // Reported once; that submit() handed nothing over; the earlier checkpoint is whole.
  EXPECT_EQ(*writer.wait(), m.path_for(1));
  EXPECT_FALSE(std::filesystem::exists(m.path_for(3)));
  EXPECT_EQ(testing::read_file(m.path_for(1)), first);
  EXPECT_EQ(read_safetensors(m.path_for(1)).at("w").to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_EQ(dir.entries(), (std::set<std::string>{"ckpt-000000001.safetensors", "ckpt-000000002.safetensors"}));

  // The writer goes on working once the cause is gone.
  std::filesystem::remove(m.path_for(2));
  writer.submit(3, snapshot({{"w", Tensor::from_vector<float>({5, 6}, {2})}}));
  EXPECT_EQ(*writer.wait(), m.path_for(3));
  EXPECT_EQ(steps(m), (std::vector<int64_t>{1, 3}));
}

TEST(AsyncCheckpoint, ARemovedDirectoryAndUnwritableTensorsSurfaceFromWait) {
  TempDir dir;
  CheckpointManager m(dir / "run");
  AsyncCheckpointWriter writer(m);
  std::filesystem::remove_all(dir / "run");
  writer.submit(1, snapshot({{"w", Tensor::from_vector<float>({1}, {1})}}));
  EXPECT_THROW(writer.wait(), IoError);
  EXPECT_FALSE(writer.wait().has_value());  // once

  std::filesystem::create_directories(dir / "run");
  Tensor t = Tensor::from_vector<float>({1}, {1});
  writer.submit(2, {{"w", t}, {"w", t}});  // a duplicate name cannot be written
  EXPECT_THROW(writer.wait(), ValueError);
  EXPECT_TRUE(steps(m).empty());
}

}  // namespace
}  // namespace loom::io
