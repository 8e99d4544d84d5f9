// Byte-level text for language modelling: files read as one byte stream,
// served as (input, next-byte target) windows, split by position.
//
//   auto corpus = data::read_byte_corpus({"/usr/share/games/fortunes/*.u8"});   // files, folders, globs
//   data::ByteSplit split = data::split_byte_windows(corpus, {.context = 64, .val_fraction = 0.1});
//   data::Sample s = split.train->get(0);  // input i64 [64] = bytes [0, 64), target i64 [64] = bytes [1, 65)
//   data::DataLoader loader(split.train, {.batch_size = 32, .shuffle = true});   // inputs, targets [32, 64]
//
// Splitting: the first (1 - val_fraction) of the bytes are the training
// part, the rest the validation part, and every window (its target byte
// included) lies inside one part, so no byte of the validation part is ever
// a training input or target. Window w of a part starts at byte
// begin + w * stride (stride = context by default: windows do not overlap);
// all is a function of the files and the options, nothing random.
//
// Paths: a file; a folder (every regular file below it, recursively); or a
// glob pattern ("*.py"). Files are read in the order given, a folder's or a
// pattern's matches sorted by path, and concatenated as they are (no
// separator). Errors: IoError for a path that does not exist, a pattern that
// matches nothing, an unreadable file or an empty corpus; ValueError when a
// part is shorter than context + 1 bytes (naming the context and the sizes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/data/dataset.h"

namespace loom::data {

struct ByteCorpus {
  std::vector<uint8_t> bytes;
  std::vector<std::string> files;  // what was read, in order
};

std::shared_ptr<const ByteCorpus> read_byte_corpus(const std::vector<std::string>& paths);

// Windows of bytes [begin, end) of a corpus: input bytes [s, s + context),
// target bytes [s + 1, s + context + 1), both i64, for s = begin + w * stride.
class ByteWindowDataset : public Dataset {
 public:
  ByteWindowDataset(std::shared_ptr<const ByteCorpus> corpus, int64_t begin, int64_t end, int64_t context,
                    int64_t stride = 0);

  int64_t size() const override { return num_windows_; }
  Sample get(int64_t index) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;  // one pass over the bytes

  int64_t context() const { return context_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  int64_t start_of(int64_t index) const { return begin_ + index * stride_; }  // first input byte of a window

 private:
  std::shared_ptr<const ByteCorpus> corpus_;
  int64_t begin_, end_, context_, stride_, num_windows_;
};

struct ByteWindowOptions {
  int64_t context = 0;        // bytes per window, >= 1
  int64_t stride = 0;         // bytes between window starts; 0: context
  double val_fraction = 0.1;  // the tail of the corpus kept for validation, in (0, 1)
};

struct ByteSplit {
  std::shared_ptr<ByteWindowDataset> train, val;
};
ByteSplit split_byte_windows(std::shared_ptr<const ByteCorpus> corpus, const ByteWindowOptions& o);

}  // namespace loom::data
