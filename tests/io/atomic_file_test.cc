// Atomic writes: the target holds the old content or the whole new content,
// and no temporary file outlives a failed write.
#include "loom/io/atomic_file.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "loom/io/safetensors.h"
#include "loom/ops/creation.h"
#include "tests/io/temp_dir.h"

namespace loom::io {
namespace {

using core::DType;
using core::Tensor;
using testing::TempDir;

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  write_file_atomically(dir / "a.txt", "first");
  EXPECT_EQ(testing::read_file(dir / "a.txt"), "first");
  write_file_atomically(dir / "a.txt", std::string(3 << 20, 'x'));  // past the buffer
  EXPECT_EQ(testing::read_file(dir / "a.txt"), std::string(3 << 20, 'x'));
  EXPECT_EQ(dir.entries(), std::set<std::string>{"a.txt"});
}

TEST(AtomicFile, ManySmallWrites) {
  TempDir dir;
  AtomicFile f(dir / "small.bin");
  std::string expected;
  for (int i = 0; i < 100000; ++i) {
    std::string piece = std::to_string(i) + ",";
    f.write(piece);
    expected += piece;
  }
  EXPECT_EQ(f.nbytes(), expected.size());
  f.commit();
  EXPECT_EQ(testing::read_file(dir / "small.bin"), expected);
}

TEST(AtomicFile, TargetAppearsOnlyAtCommit) {
  TempDir dir;
  testing::write_file(dir / "t.bin", "old");
  AtomicFile f(dir / "t.bin");
  f.write("new content");
  EXPECT_EQ(testing::read_file(dir / "t.bin"), "old");
  EXPECT_TRUE(std::filesystem::exists(f.temp_path()));
  EXPECT_EQ(f.temp_path().parent_path(), dir.path());
  f.commit();
  EXPECT_EQ(testing::read_file(dir / "t.bin"), "new content");
  EXPECT_EQ(dir.entries(), std::set<std::string>{"t.bin"});
}

TEST(AtomicFile, AbandonedWriteRemovesTheTemporaryFile) {
  TempDir dir;
  testing::write_file(dir / "t.bin", "old");
  {
    AtomicFile f(dir / "t.bin");
    f.write("half of it");
  }
  EXPECT_EQ(testing::read_file(dir / "t.bin"), "old");
  EXPECT_EQ(dir.entries(), std::set<std::string>{"t.bin"});
}

TEST(AtomicFile, MissingDirectoryIsAnIoErrorNamingTheTarget) {
  TempDir dir;
  try {
    write_file_atomically(dir / "no" / "such" / "dir.bin", "x");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("dir.bin"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dir.entries().empty());
}

TEST(AtomicFile, ReadOnlyDirectory) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir dir;
  testing::write_file(dir / "t.bin", "old");
  ::chmod(dir.path().c_str(), 0555);
  EXPECT_THROW(write_file_atomically(dir / "t.bin", "new"), IoError);
  ::chmod(dir.path().c_str(), 0755);
  EXPECT_EQ(testing::read_file(dir / "t.bin"), "old");
  EXPECT_EQ(dir.entries(), std::set<std::string>{"t.bin"});
}

// A write that fails part way (the file size limit stands in for a full
// disk): IoError, the old file intact, no temporary file left.
TEST(AtomicFile, FailedWriteKeepsTheOldFile) {
  TempDir dir;
  Tensor small = Tensor::from_vector<float>({1, 2, 3}, {3});
  write_safetensors(dir / "ckpt.safetensors", {{"w", small}});
  const std::string before = testing::read_file(dir / "ckpt.safetensors");

  struct rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small_limit = old_limit;
  small_limit.rlim_cur = 64 << 10;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  bool threw = false;
  try {
    write_safetensors(dir / "ckpt.safetensors", {{"w", ops::zeros({1 << 20})}});
  } catch (const IoError& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("ckpt.safetensors: write failed"), std::string::npos) << e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(threw);
  EXPECT_EQ(testing::read_file(dir / "ckpt.safetensors"), before);
  EXPECT_EQ(dir.entries(), std::set<std::string>{"ckpt.safetensors"});
}

// A tensor that cannot be brought to the CPU fails after earlier tensors
// were written: the same guarantees.
TEST(AtomicFile, TensorThatFailsMidwayKeepsTheOldFile) {
  TempDir dir;
  write_safetensors(dir / "ckpt.safetensors", {{"w", Tensor::from_vector<float>({1, 2}, {2})}});
  const std::string before = testing::read_file(dir / "ckpt.safetensors");

  static float host[4] = {};
  auto impl = std::make_shared<core::TensorImpl>();
  impl->storage = core::Storage(host, sizeof(host), core::Device::cuda(0), nullptr);
  impl->shape = {4};
  impl->strides = {1};
  Tensor on_gpu(impl);
  NamedTensors tensors = {{"first", ops::ones({1 << 18})}, {"gpu", on_gpu}};
  EXPECT_THROW(write_safetensors(dir / "ckpt.safetensors", tensors), ValueError);
  EXPECT_EQ(testing::read_file(dir / "ckpt.safetensors"), before);
  EXPECT_EQ(dir.entries(), std::set<std::string>{"ckpt.safetensors"});
}

}  // namespace
}  // namespace loom::io
