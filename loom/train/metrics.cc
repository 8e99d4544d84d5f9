#include "loom/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace loom::train {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

int64_t ClassificationResult::confusion_at(int64_t true_class, int64_t predicted_class) const {
  LOOM_CHECK_T(
      IndexError,
      true_class >= 0 && true_class < num_classes && predicted_class >= 0 && predicted_class < num_classes,
      "confusion_at({}, {}): classes must be in [0, {})", true_class, predicted_class, num_classes);
  return confusion[static_cast<size_t>(true_class * num_classes + predicted_class)];
}

std::map<std::string, double> ClassificationResult::as_map(std::string_view prefix) const {
  const std::string p(prefix);
  std::map<std::string, double> m{
      {p + "loss", loss},
      {p + "accuracy", accuracy},
      {p + "precision_macro", precision},
      {p + "recall_macro", recall},
      {p + "f1_macro", f1},
      {p + "num_samples", static_cast<double>(num_samples)},
  };
  if (num_classes == 2) m[p + "roc_auc"] = roc_auc;
  return m;
}

std::string ClassificationResult::to_json() const {
  nlohmann::ordered_json j;
  j["num_classes"] = num_classes;
  j["num_samples"] = num_samples;
  j["loss"] = loss;
  j["accuracy"] = accuracy;
  j["precision_macro"] = precision;
  j["recall_macro"] = recall;
  j["f1_macro"] = f1;
  if (num_classes == 2) j["roc_auc"] = roc_auc;
  auto rows = nlohmann::ordered_json::array();
  for (int64_t t = 0; t < num_classes; ++t) {
    rows.push_back(
        std::vector<int64_t>(confusion.begin() + t * num_classes, confusion.begin() + (t + 1) * num_classes));
  }
  j["confusion"] = std::move(rows);
  j["class_precision"] = class_precision;
  j["class_recall"] = class_recall;
  j["class_f1"] = class_f1;
  j["class_support"] = class_support;
  return j.dump();  // NaN becomes null
}

ClassificationMetrics::ClassificationMetrics(int64_t num_classes, OutputKind outputs)
    : num_classes_(num_classes), outputs_(outputs) {
  LOOM_CHECK(num_classes >= 2, "ClassificationMetrics: num_classes must be >= 2, got {}", num_classes);
  confusion_.assign(static_cast<size_t>(num_classes * num_classes), 0);
}

void ClassificationMetrics::reset() {
  num_samples_ = 0;
  loss_sum_ = 0.0;
  loss_samples_ = 0;
  std::fill(confusion_.begin(), confusion_.end(), 0);
  scores_.clear();  // keeps capacity: the next epoch does not reallocate
  positive_.clear();
  nan_scores_ = 0;
}

void ClassificationMetrics::add_sample(const double* row, int64_t num_columns, int64_t target) {
  int64_t predicted = 0;
  if (num_columns == 1) {
    const double threshold = outputs_ == OutputKind::Logits ? 0.0 : 0.5;
    predicted = row[0] > threshold ? 1 : 0;
  } else {
    double best = row[0];  // first maximum wins, as argmax does
    for (int64_t c = 1; c < num_columns; ++c) {
      if (row[c] > best) {
        best = row[c];
        predicted = c;
      }
    }
  }
  ++confusion_[static_cast<size_t>(target * num_classes_ + predicted)];
  ++num_samples_;
  if (num_classes_ == 2) {
    double score = row[0];
    if (num_columns == 2) score = outputs_ == OutputKind::Logits ? row[1] - row[0] : row[1];
    if (std::isnan(score)) ++nan_scores_;
    scores_.push_back(score);
    positive_.push_back(target == 1 ? 1 : 0);
  }
}

void ClassificationMetrics::update(std::span<const double> scores, int64_t num_columns,
                                   std::span<const int64_t> targets, double loss_sum) {
  LOOM_CHECK_T(ShapeError, num_columns == num_classes_ || (num_classes_ == 2 && num_columns == 1),
               "ClassificationMetrics::update: {} score columns for {} classes (expected {}{})", num_columns,
               num_classes_, num_classes_, num_classes_ == 2 ? " or 1" : "");
  const auto n = static_cast<int64_t>(targets.size());
  LOOM_CHECK_T(ShapeError, static_cast<int64_t>(scores.size()) == n * num_columns,
               "ClassificationMetrics::update: {} scores for {} targets of {} columns", scores.size(), n,
               num_columns);
  for (int64_t i = 0; i < n; ++i) {
    LOOM_CHECK_T(IndexError, targets[i] >= 0 && targets[i] < num_classes_,
                 "ClassificationMetrics::update: target {} of sample {} is outside [0, {})", targets[i], i,
                 num_classes_);
  }
  for (int64_t i = 0; i < n; ++i) add_sample(scores.data() + i * num_columns, num_columns, targets[i]);
  if (!std::isnan(loss_sum)) {
    loss_sum_ += loss_sum;
    loss_samples_ += n;
  }
}

void ClassificationMetrics::update(const Tensor& outputs, const Tensor& targets, double loss_sum) {
  LOOM_CHECK(outputs.defined() && targets.defined(), "ClassificationMetrics::update: undefined tensor");
  LOOM_CHECK(outputs.device().is_cpu() && targets.device().is_cpu(),
             "ClassificationMetrics::update: tensors must be on the CPU, got outputs on {} and targets on {}",
             outputs.device(), targets.device());
  LOOM_CHECK_T(TypeError, core::is_floating(outputs.dtype()),
               "ClassificationMetrics::update: outputs must be floating point, got {}", outputs.dtype());
  LOOM_CHECK_T(TypeError, core::is_integral(targets.dtype()) && targets.dtype() != core::DType::Bool,
               "ClassificationMetrics::update: targets must be integer class indices, got {}",
               targets.dtype());
  LOOM_CHECK_T(ShapeError, targets.dim() == 1, "ClassificationMetrics::update: targets must be [N], got {}",
               core::to_string(targets.shape()));
  const int64_t n = targets.size(0);
  LOOM_CHECK_T(ShapeError,
               (outputs.dim() == 2 && outputs.size(0) == n) || (outputs.dim() == 1 && outputs.size(0) == n),
               "ClassificationMetrics::update: outputs {} do not match targets {} (expected [N, C] or [N])",
               core::to_string(outputs.shape()), core::to_string(targets.shape()));
  const int64_t cols = outputs.dim() == 2 ? outputs.size(1) : 1;
  const int64_t row_stride = n > 0 ? outputs.stride(0) : 0;
  const int64_t col_stride = outputs.dim() == 2 ? outputs.stride(1) : 0;

  // Strided copies into reused buffers; no allocation once they have grown.
  scratch_.resize(static_cast<size_t>(n * cols));
  core::visit_dtype(outputs.dtype(), [&]<class S>() {
    const S* base = static_cast<const S*>(outputs.data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < cols; ++c) {
        scratch_[static_cast<size_t>(i * cols + c)] =
            core::cast_value<double>(base[i * row_stride + c * col_stride]);
      }
    }
  });
  target_scratch_.resize(static_cast<size_t>(n));
  const int64_t target_stride = n > 0 ? targets.stride(0) : 0;
  core::visit_dtype(targets.dtype(), [&]<class S>() {
    const S* base = static_cast<const S*>(targets.data_ptr());
    for (int64_t i = 0; i < n; ++i)
      target_scratch_[static_cast<size_t>(i)] = static_cast<int64_t>(base[i * target_stride]);
  });
  update(scratch_, cols, target_scratch_, loss_sum);
}

void ClassificationMetrics::merge(const ClassificationMetrics& other) {
  LOOM_CHECK(other.num_classes_ == num_classes_, "ClassificationMetrics::merge: {} classes into {}",
             other.num_classes_, num_classes_);
  num_samples_ += other.num_samples_;
  loss_sum_ += other.loss_sum_;
  loss_samples_ += other.loss_samples_;
  for (size_t i = 0; i < confusion_.size(); ++i) confusion_[i] += other.confusion_[i];
  scores_.insert(scores_.end(), other.scores_.begin(), other.scores_.end());
  positive_.insert(positive_.end(), other.positive_.begin(), other.positive_.end());
  nan_scores_ += other.nan_scores_;
}

ClassificationResult ClassificationMetrics::result() const {
  const int64_t C = num_classes_;
  ClassificationResult r;
  r.num_classes = C;
  r.num_samples = num_samples_;
  r.confusion = confusion_;
  r.class_precision.assign(static_cast<size_t>(C), 0.0);
  r.class_recall.assign(static_cast<size_t>(C), 0.0);
  r.class_f1.assign(static_cast<size_t>(C), 0.0);
  r.class_support.assign(static_cast<size_t>(C), 0);
  r.loss = loss_samples_ > 0 ? loss_sum_ / static_cast<double>(loss_samples_) : kNaN;
  if (num_samples_ == 0) {
    r.accuracy = r.precision = r.recall = r.f1 = r.roc_auc = kNaN;
    return r;
  }

  int64_t correct = 0;
  double sum_p = 0, sum_r = 0, sum_f = 0;
  int64_t labels = 0;  // classes among the targets or the predictions (sklearn's labels)
  for (int64_t c = 0; c < C; ++c) {
    int64_t support = 0, predicted = 0;
    for (int64_t k = 0; k < C; ++k) {
      support += confusion_[static_cast<size_t>(c * C + k)];
      predicted += confusion_[static_cast<size_t>(k * C + c)];
    }
    const int64_t tp = confusion_[static_cast<size_t>(c * C + c)];
    correct += tp;
    // zero_division=0: an undefined ratio counts as 0.
    const double p = predicted > 0 ? static_cast<double>(tp) / static_cast<double>(predicted) : 0.0;
    const double rc = support > 0 ? static_cast<double>(tp) / static_cast<double>(support) : 0.0;
    const double f = p + rc > 0 ? 2.0 * p * rc / (p + rc) : 0.0;
    r.class_precision[static_cast<size_t>(c)] = p;
    r.class_recall[static_cast<size_t>(c)] = rc;
    r.class_f1[static_cast<size_t>(c)] = f;
    r.class_support[static_cast<size_t>(c)] = support;
    if (support > 0 || predicted > 0) {
      ++labels;
      sum_p += p;
      sum_r += rc;
      sum_f += f;
    }
  }
  r.accuracy = static_cast<double>(correct) / static_cast<double>(num_samples_);
  r.precision = sum_p / static_cast<double>(labels);
  r.recall = sum_r / static_cast<double>(labels);
  r.f1 = sum_f / static_cast<double>(labels);
  r.roc_auc = (C == 2 && nan_scores_ == 0) ? roc_auc(scores_, positive_) : kNaN;
  return r;
}

double roc_auc(std::span<const double> scores, std::span<const uint8_t> labels) {
  LOOM_CHECK_T(ShapeError, scores.size() == labels.size(), "roc_auc: {} scores for {} labels", scores.size(),
               labels.size());
  std::vector<std::pair<double, uint8_t>> pairs(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) return kNaN;  // no order to rank by
    pairs[i] = {scores[i], labels[i] != 0 ? uint8_t{1} : uint8_t{0}};
  }
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  // AUC = P(score of a random positive > score of a random negative), ties
  // counting 1/2: the Mann-Whitney U statistic over (#pos * #neg), which is
  // the trapezoid area under the ROC curve. Counted twice over in integers
  // so that the only rounding is the final division.
  unsigned __int128 twice_u = 0;
  uint64_t negatives_below = 0, positives = 0;
  for (size_t i = 0; i < pairs.size();) {
    size_t j = i;
    uint64_t pos = 0, neg = 0;
    for (; j < pairs.size() && pairs[j].first == pairs[i].first; ++j) (pairs[j].second ? pos : neg)++;
    twice_u +=
        static_cast<unsigned __int128>(2 * pos) * negatives_below + static_cast<unsigned __int128>(pos) * neg;
    negatives_below += neg;
    positives += pos;
    i = j;
  }
  const uint64_t negatives = negatives_below;
  if (positives == 0 || negatives == 0) return kNaN;
  return static_cast<double>(static_cast<long double>(twice_u) / (2.0L * static_cast<long double>(positives) *
                                                                  static_cast<long double>(negatives)));
}

}  // namespace loom::train
