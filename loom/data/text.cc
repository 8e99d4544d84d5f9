#include "loom/data/text.h"

#include <glob.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

namespace fs = std::filesystem;

bool is_pattern(const std::string& p) { return p.find_first_of("*?[") != std::string::npos; }

std::vector<std::string> expand_pattern(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      if (fs::is_regular_file(g.gl_pathv[i])) out.emplace_back(g.gl_pathv[i]);  // follows links
    }
  }
  ::globfree(&g);
  LOOM_CHECK_T(IoError, !out.empty(), "text corpus: the pattern '{}' matches no file", pattern);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> expand_folder(const std::string& folder) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(folder, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file()) out.push_back(it->path().string());
  }
  LOOM_CHECK_T(IoError, !ec, "text corpus: cannot list the folder '{}': {}", folder, ec.message());
  LOOM_CHECK_T(IoError, !out.empty(), "text corpus: the folder '{}' holds no file", folder);
  std::sort(out.begin(), out.end());
  return out;
}

void append_file(const std::string& path, std::vector<uint8_t>& bytes) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK_T(IoError, in.good(), "text corpus: cannot open '{}'", path);
  bytes.insert(bytes.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  LOOM_CHECK_T(IoError, !in.bad(), "text corpus: cannot read '{}'", path);
}

}  // namespace

std::shared_ptr<const ByteCorpus> read_byte_corpus(const std::vector<std::string>& paths) {
  LOOM_CHECK_T(IoError, !paths.empty(), "text corpus: no files given");
  auto corpus = std::make_shared<ByteCorpus>();
  for (const std::string& p : paths) {
    std::vector<std::string> files;
    if (is_pattern(p)) {
      files = expand_pattern(p);
    } else {
      LOOM_CHECK_T(IoError, fs::exists(p), "text corpus: '{}' does not exist", p);
      files = fs::is_directory(p) ? expand_folder(p) : std::vector<std::string>{p};
    }
    for (const std::string& f : files) {
      append_file(f, corpus->bytes);
      corpus->files.push_back(f);
    }
  }
  std::string shown = corpus->files.front() + (corpus->files.size() > 1 ? format(" and {} more", corpus->files.size() - 1) : "");
  LOOM_CHECK_T(IoError, !corpus->bytes.empty(), "text corpus: {} is empty", shown);
  return corpus;
}

ByteWindowDataset::ByteWindowDataset(std::shared_ptr<const ByteCorpus> corpus, int64_t begin, int64_t end,
                                     int64_t context, int64_t stride)
    : corpus_(std::move(corpus)), begin_(begin), end_(end), context_(context), stride_(stride > 0 ? stride : context) {
  LOOM_CHECK(corpus_ != nullptr, "ByteWindowDataset: no corpus");
  const int64_t n = static_cast<int64_t>(corpus_->bytes.size());
  LOOM_CHECK(0 <= begin && begin <= end && end <= n, "ByteWindowDataset: bytes [{}, {}) are not inside the corpus of {}",
             begin, end, n);
  LOOM_CHECK(context >= 1, "ByteWindowDataset: context must be at least 1, got {}", context);
  LOOM_CHECK(stride >= 0, "ByteWindowDataset: stride must be >= 0, got {}", stride);
  LOOM_CHECK(end - begin >= context + 1,
             "ByteWindowDataset: {} bytes are too few for context {} (a window needs context + 1 = {} bytes)",
             end - begin, context, context + 1);
  num_windows_ = (end - begin - context - 1) / stride_ + 1;
}

Sample ByteWindowDataset::get(int64_t index) const {
  Batch b = get_batch({index});
  return {ops::select(b.inputs, 0, 0), ops::select(b.targets, 0, 0)};
}

Batch ByteWindowDataset::get_batch(const std::vector<int64_t>& indices) const {
  LOOM_CHECK(!indices.empty(), "ByteWindowDataset::get_batch: empty index list");
  check_indices(indices, num_windows_, "ByteWindowDataset");
  const int64_t rows = static_cast<int64_t>(indices.size());
  Tensor inputs = Tensor::empty({rows, context_}, core::DType::I64);
  Tensor targets = Tensor::empty({rows, context_}, core::DType::I64);
  int64_t* x = inputs.data<int64_t>();
  int64_t* y = targets.data<int64_t>();
  const uint8_t* bytes = corpus_->bytes.data();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* window = bytes + start_of(indices[static_cast<size_t>(r)]);
    for (int64_t t = 0; t < context_; ++t) {
      x[r * context_ + t] = window[t];
      y[r * context_ + t] = window[t + 1];
    }
  }
  return {inputs, targets};
}

ByteSplit split_byte_windows(std::shared_ptr<const ByteCorpus> corpus, const ByteWindowOptions& o) {
  LOOM_CHECK(corpus != nullptr, "split_byte_windows: no corpus");
  LOOM_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "split_byte_windows: val_fraction must be in (0, 1), got {}",
             o.val_fraction);
  LOOM_CHECK(o.context >= 1, "split_byte_windows: context must be at least 1, got {}", o.context);
  const int64_t n = static_cast<int64_t>(corpus->bytes.size());
  const int64_t val_bytes = static_cast<int64_t>(std::floor(static_cast<double>(n) * o.val_fraction));
  const int64_t cut = n - val_bytes;
  LOOM_CHECK(std::min(cut, val_bytes) >= o.context + 1,
             "text corpus of {} bytes is too short for context {}: the training part has {} bytes and the validation "
             "part {} (val_fraction {}); each needs at least context + 1 = {}",
             n, o.context, cut, val_bytes, o.val_fraction, o.context + 1);
  return {std::make_shared<ByteWindowDataset>(corpus, 0, cut, o.context, o.stride),
          std::make_shared<ByteWindowDataset>(corpus, cut, n, o.context, o.stride)};
}

}  // namespace loom::data
