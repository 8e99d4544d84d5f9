// Byte-level text: reading files, folders and patterns; windows; the split
// by position; errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

#include "loom/data/loader.h"
#include "loom/data/text.h"
#include "tests/data/temp_dir.h"

namespace loom::data {
namespace {

using testing::TempDir;
using testing::write_bytes;

std::string alphabet(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>('a' + i % 26);
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

TEST(ByteCorpus, ReadsFilesFoldersAndPatternsInOrder) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("sub/deeper"));
  write_bytes(dir.file("sub/b.txt"), "BB");
  write_bytes(dir.file("sub/deeper/a.txt"), "A");
  write_bytes(dir.file("x.py"), "xx");
  write_bytes(dir.file("y.py"), "yy");
  write_bytes(dir.file("z.txt"), "zz");
  auto c = read_byte_corpus({dir.file("z.txt"), dir.file("*.py"), dir.file("sub")});
  EXPECT_EQ(std::string(c->bytes.begin(), c->bytes.end()), "zzxxyyBBA");  // given order; matches sorted by path
  EXPECT_EQ(c->files.size(), 5u);
}

TEST(ByteCorpus, MissingEmptyAndUnmatchedAreClearErrors) {
  TempDir dir;
  write_bytes(dir.file("empty.txt"), "");
  EXPECT_NE(error_of([&] { read_byte_corpus({dir.file("nope.txt")}); }).find("nope.txt' does not exist"), std::string::npos);
  EXPECT_NE(error_of([&] { read_byte_corpus({dir.file("*.md")}); }).find("matches no file"), std::string::npos);
  EXPECT_NE(error_of([&] { read_byte_corpus({dir.file("empty.txt")}); }).find("is empty"), std::string::npos);
  EXPECT_THROW(read_byte_corpus({dir.file("empty.txt")}), IoError);
}

TEST(ByteWindows, InputAndTargetAreShiftedByOne) {
  auto corpus = std::make_shared<ByteCorpus>();
  const std::string text = alphabet(20);
  corpus->bytes.assign(text.begin(), text.end());
  ByteWindowDataset ds(corpus, 0, 20, 4);  // stride 4: starts 0, 4, 8, 12 (15 needs byte 16: start 12 ends at 16)
  EXPECT_EQ(ds.size(), 4);
  Sample s = ds.get(2);
  EXPECT_EQ(s.input.to_vector<int64_t>(), (std::vector<int64_t>{'i', 'j', 'k', 'l'}));
  EXPECT_EQ(s.target.to_vector<int64_t>(), (std::vector<int64_t>{'j', 'k', 'l', 'm'}));
  Batch b = ds.get_batch({3, 0});
  EXPECT_EQ(b.inputs.shape(), (core::Shape{2, 4}));
  EXPECT_EQ(b.targets.to_vector<int64_t>()[3], 'q');  // window 3's last target: byte 16
  ByteWindowDataset overlapping(corpus, 0, 20, 4, 1);
  EXPECT_EQ(overlapping.size(), 16);  // starts 0..15: the last target is byte 19
  EXPECT_THROW(ds.get(4), IndexError);
}

TEST(ByteWindows, SplitKeepsEveryValidationByteOutOfTraining) {
  auto corpus = std::make_shared<ByteCorpus>();
  const std::string text = alphabet(1000);
  corpus->bytes.assign(text.begin(), text.end());
  for (int64_t stride : {0, 1, 7}) {
    ByteSplit split = split_byte_windows(corpus, {.context = 16, .stride = stride, .val_fraction = 0.1});
    EXPECT_EQ(split.train->end(), 900);
    EXPECT_EQ(split.val->begin(), 900);
    EXPECT_EQ(split.val->end(), 1000);
    const int64_t last = split.train->start_of(split.train->size() - 1);
    EXPECT_LE(last + 16 + 1, 900) << "a training target reaches into validation";
    EXPECT_GT(last + (stride ? stride : 16) + 16 + 1, 900) << "a training window was left out";
    EXPECT_EQ(split.val->start_of(0), 900);
  }
}

TEST(ByteWindows, DeterministicThroughTheLoader) {
  auto corpus = std::make_shared<ByteCorpus>();
  const std::string text = alphabet(5000);
  corpus->bytes.assign(text.begin(), text.end());
  auto once = [&] {
    ByteSplit split = split_byte_windows(corpus, {.context = 8, .val_fraction = 0.2});
    DataLoader loader(split.train, {.batch_size = 16, .shuffle = true, .seed = 5});
    return loader.next()->inputs.to_vector<int64_t>();
  };
  EXPECT_EQ(once(), once());
}

TEST(ByteWindows, TooShortCorpusNamesTheContext) {
  auto corpus = std::make_shared<ByteCorpus>();
  const std::string text = alphabet(100);
  corpus->bytes.assign(text.begin(), text.end());
  const std::string e = error_of([&] { split_byte_windows(corpus, {.context = 32, .val_fraction = 0.1}); });
  EXPECT_NE(e.find("too short for context 32"), std::string::npos) << e;
  EXPECT_NE(e.find("validation part 10"), std::string::npos) << e;
  EXPECT_THROW(split_byte_windows(corpus, {.context = 8, .val_fraction = 1.0}), ValueError);
}

}  // namespace
}  // namespace loom::data
