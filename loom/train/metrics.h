// Classification metrics accumulated over batches: mean loss, accuracy,
// confusion matrix, macro precision / recall / F1 and (binary tasks) ROC-AUC.
//
//   // given: std::vector<std::pair<Tensor, Tensor>> loader, nn::Module& model
//   train::ClassificationMetrics m(10);                 // 10 classes, outputs are logits
//   for (auto& [x, y] : loader) {
//     Tensor logits = model(x);                          // [N, 10], CPU
//     Tensor loss = ops::cross_entropy(logits, y);       // mean over the batch
//     m.update(logits, y, loss.item<double>() * y.size(0));   // y: [N] i64; loss summed
//   }
//   train::ClassificationResult r = m.result();
//   r.accuracy; r.f1; r.confusion_at(3, 5);
//   r.as_map("test_");   // {"test_loss": .., "test_accuracy": .., "test_f1_macro": .., ...}
//
// Definitions follow scikit-learn, so numbers can be checked against it:
// - precision / recall / F1 are macro averages (`average="macro"`,
//   `zero_division=0`) over the classes that occur among the targets or the
//   predictions (sklearn's default `labels`); a class with no predictions has
//   precision 0, a class with no support has recall 0. F1 is the mean of the
//   per-class F1 scores, not the F1 of the mean precision and recall.
// - roc_auc equals `roc_auc_score(y, score)`: the exact area, ties counted
//   one half (trapezoid rule). The score of a sample is, for [N, 2] logits,
//   x1 - x0 (it ranks samples exactly as softmax(x)[1] does, without the
//   saturation of a float probability); for [N, 2] probabilities, p1; for a
//   single column ([N] or [N, 1], a sigmoid model), the value itself.
// Undefined values are NaN: loss when no loss was given, everything when no
// sample was seen, roc_auc when the task is not binary, when the targets hold
// one class only (sklearn raises there), or when a score was NaN.
//
// Scores for ROC-AUC are kept (one double and one byte per sample) until
// reset(); everything else is a running count.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::train {

using core::Tensor;

// What the model emits per class.
enum class OutputKind {
  Logits,         // argmax predicts; single column: x > 0 is class 1
  Probabilities,  // argmax predicts; single column: p > 0.5 is class 1
};

struct ClassificationResult {
  int64_t num_classes = 0;
  int64_t num_samples = 0;
  double loss = 0.0;       // mean per sample, over the batches that came with a loss
  double accuracy = 0.0;   // fraction of samples whose argmax is the target
  double precision = 0.0;  // macro
  double recall = 0.0;     // macro
  double f1 = 0.0;         // macro
  double roc_auc = 0.0;    // binary tasks only, else NaN

  // Row-major [num_classes, num_classes]: confusion[t * C + p] counts samples
  // of true class t predicted as p (sklearn's confusion_matrix layout).
  std::vector<int64_t> confusion;
  // Per class, for all num_classes classes (0 where undefined).
  std::vector<double> class_precision, class_recall, class_f1;
  std::vector<int64_t> class_support;  // samples whose target is the class

  int64_t confusion_at(int64_t true_class, int64_t predicted_class) const;

  // The scalar metrics by name, each name prefixed: "loss", "accuracy",
  // "precision_macro", "recall_macro", "f1_macro", "roc_auc" (binary tasks
  // only), "num_samples". Feeds MetricsLog and TensorBoardWriter directly.
  std::map<std::string, double> as_map(std::string_view prefix = "") const;
  // One JSON object: the scalars of as_map() plus "confusion" (a list of
  // rows) and the per-class lists. NaN is written as null.
  std::string to_json() const;
};

class ClassificationMetrics {
 public:
  explicit ClassificationMetrics(int64_t num_classes, OutputKind outputs = OutputKind::Logits);

  // `outputs`: [N, C] scores (f32/f64/f16/bf16, CPU, any strides); for a
  // binary task also [N] or [N, 1]. `targets`: [N] integer class indices in
  // [0, C). `loss_sum`: the loss summed (not averaged) over the N samples;
  // leave it NaN if there is none, and result().loss is NaN.
  void update(const Tensor& outputs, const Tensor& targets, double loss_sum = kNoLoss);

  // The same from plain arrays: `scores` holds N rows of `num_columns`
  // values (num_columns == num_classes, or 1 for a binary task).
  void update(std::span<const double> scores, int64_t num_columns, std::span<const int64_t> targets,
              double loss_sum = kNoLoss);

  // Adds another accumulator's samples (e.g. gathered from other workers).
  void merge(const ClassificationMetrics& other);
  void reset();

  ClassificationResult result() const;

  int64_t num_classes() const { return num_classes_; }
  int64_t num_samples() const { return num_samples_; }

  static constexpr double kNoLoss = std::numeric_limits<double>::quiet_NaN();

 private:
  void add_sample(const double* row, int64_t num_columns, int64_t target);

  int64_t num_classes_;
  OutputKind outputs_;
  int64_t num_samples_ = 0;
  double loss_sum_ = 0.0;
  int64_t loss_samples_ = 0;  // samples whose batch came with a loss
  std::vector<int64_t> confusion_;
  // Binary tasks: per sample, the positive-class score and whether it is positive.
  std::vector<double> scores_;
  std::vector<uint8_t> positive_;
  int64_t nan_scores_ = 0;
  std::vector<double> scratch_;  // reused conversion buffers
  std::vector<int64_t> target_scratch_;
};

// ROC-AUC of `scores` for binary `labels` (nonzero = positive), exactly as
// sklearn.metrics.roc_auc_score: ties count one half. NaN when either class
// is absent. Sorts a copy of the pairs (O(N log N)).
double roc_auc(std::span<const double> scores, std::span<const uint8_t> labels);

}  // namespace loom::train
