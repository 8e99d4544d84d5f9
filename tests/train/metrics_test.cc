// ClassificationMetrics against scikit-learn. The golden numbers come from
// metrics_golden.py (same data, same formulas), run with scikit-learn 1.2.1.
#include "loom/train/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace loom::train {
namespace {

using core::DType;

constexpr double kTol = 1e-12;

// metrics_golden.py: multiclass_case()
void multiclass_case(std::vector<float>& scores, std::vector<int64_t>& targets) {
  const int64_t n = 200, c = 6;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < c; ++k) {
      scores.push_back(k == 4 ? -1.0f : static_cast<float>((i * i * 31 + k * 17 + i * k * 7) % 23) / 8.0f);
    }
    targets.push_back((i * 13 + i / 5) % 5);
  }
}

// metrics_golden.py: binary_case(); scores are multiples of 1/16, exact in f32
void binary_case(std::vector<double>& scores, std::vector<int64_t>& targets) {
  for (int64_t i = 0; i < 300; ++i) {
    scores.push_back(static_cast<double>((i * i * 13 + i * 5) % 16) / 16.0);
    targets.push_back((i * 7 + i * i) % 3 == 0 ? 1 : 0);
  }
}

Tensor rows_to_tensor(const std::vector<double>& s, int64_t rows, int64_t cols) {
  std::vector<float> f(s.begin(), s.end());
  return Tensor::from_vector<float>(f, {rows, cols});
}

TEST(ClassificationMetrics, MulticlassMatchesSklearn) {
  std::vector<float> scores;
  std::vector<int64_t> targets;
  multiclass_case(scores, targets);
  ClassificationMetrics m(6);
  // Uneven batches: 7, 64, 129.
  int64_t start = 0;
  for (int64_t batch : {7, 64, 129}) {
    std::vector<float> s(scores.begin() + start * 6, scores.begin() + (start + batch) * 6);
    std::vector<int64_t> t(targets.begin() + start, targets.begin() + start + batch);
    m.update(Tensor::from_vector<float>(s, {batch, 6}), Tensor::from_vector<int64_t>(t, {batch}));
    start += batch;
  }
  const ClassificationResult r = m.result();
  EXPECT_EQ(r.num_samples, 200);
  EXPECT_NEAR(r.accuracy, 0.185, kTol);
  EXPECT_NEAR(r.precision, 0.13502837032248796, kTol);
  EXPECT_NEAR(r.recall, 0.1541666666666667, kTol);
  EXPECT_NEAR(r.f1, 0.13889143380668803, kTol);
  const std::vector<int64_t> expected = {8, 14, 7, 8, 0, 3, 6, 16, 7, 7, 0, 4, 8, 15, 7, 7, 0, 3,
                                         7, 14, 9, 6, 0, 4, 6, 19, 5, 6, 0, 4, 0, 0,  0, 0, 0, 0};
  EXPECT_EQ(r.confusion, expected);
  EXPECT_EQ(r.confusion_at(4, 1), 19);
  // Class 4 has support but no predictions; class 5 predictions but no support.
  EXPECT_EQ(r.class_precision[4], 0.0);
  EXPECT_EQ(r.class_recall[5], 0.0);
  EXPECT_EQ(r.class_support[4], 40);
  EXPECT_EQ(r.class_support[5], 0);
  EXPECT_TRUE(std::isnan(r.roc_auc));  // not a binary task
  EXPECT_TRUE(std::isnan(r.loss));     // no loss given
  EXPECT_EQ(r.as_map().count("roc_auc"), 0u);
}

// Every way of giving a binary model's outputs ranks and predicts the same.
TEST(ClassificationMetrics, BinaryMatchesSklearnForEveryOutputForm) {
  std::vector<double> s;
  std::vector<int64_t> y;
  binary_case(s, y);
  const auto n = static_cast<int64_t>(s.size());
  std::vector<double> probs2, logits2, logit1;
  for (double v : s) {
    probs2.insert(probs2.end(), {1.0 - v, v});
    logits2.insert(logits2.end(), {0.5, v});  // x1 - x0 = v - 0.5; argmax is class 1 iff v > 0.5
    logit1.push_back(v - 0.5);
  }
  const Tensor targets = Tensor::from_vector<int64_t>(y, {n});
  struct Form {
    const char* name;
    Tensor outputs;
    OutputKind kind;
  };
  const std::vector<Form> forms = {
      {"probabilities [N,2]", rows_to_tensor(probs2, n, 2), OutputKind::Probabilities},
      {"probabilities [N]", Tensor::from_vector<double>(s, {n}), OutputKind::Probabilities},
      {"probabilities [N,1]", rows_to_tensor(s, n, 1), OutputKind::Probabilities},
      {"logits [N,2]", rows_to_tensor(logits2, n, 2), OutputKind::Logits},
      {"logits [N]", Tensor::from_vector<double>(logit1, {n}), OutputKind::Logits},
  };
  for (const Form& f : forms) {
    SCOPED_TRACE(f.name);
    ClassificationMetrics m(2, f.kind);
    m.update(f.outputs, targets);
    const ClassificationResult r = m.result();
    EXPECT_NEAR(r.roc_auc, 0.512425, kTol);
    EXPECT_NEAR(r.accuracy, 0.4666666666666667, kTol);
    EXPECT_NEAR(r.precision, 0.5094984802431611, kTol);
    EXPECT_NEAR(r.recall, 0.51, kTol);
    EXPECT_NEAR(r.f1, 0.4658119658119658, kTol);
    EXPECT_EQ(r.confusion, (std::vector<int64_t>{64, 36, 124, 76}));
  }
}

TEST(ClassificationMetrics, RocAucCountsTiesAsHalf) {
  // sklearn.metrics.roc_auc_score([0,0,1,1,0,1], [.1,.4,.4,.8,.8,.8]) == 0.7222...
  // By hand: 9 (pos, neg) pairs, 4 won, 3 tied: (4 + 3/2) / 9 = 13/18.
  const std::vector<double> scores = {0.1, 0.4, 0.4, 0.8, 0.8, 0.8};
  const std::vector<uint8_t> labels = {0, 0, 1, 1, 0, 1};
  EXPECT_NEAR(roc_auc(scores, labels), 13.0 / 18.0, kTol);
  EXPECT_NEAR(roc_auc(scores, labels), 0.7222222222222222, kTol);

  // The same through the accumulator, one single-score sample per batch.
  ClassificationMetrics m(2, OutputKind::Probabilities);
  for (size_t i = 0; i < scores.size(); ++i) {
    m.update(std::span<const double>(&scores[i], 1), 1, std::vector<int64_t>{labels[i]});
  }
  EXPECT_NEAR(m.result().roc_auc, 13.0 / 18.0, kTol);

  // All scores tied: 0.5. Perfect and reversed rankings: 1 and 0.
  EXPECT_EQ(roc_auc(std::vector<double>{1, 1, 1, 1}, std::vector<uint8_t>{0, 1, 0, 1}), 0.5);
  EXPECT_EQ(roc_auc(std::vector<double>{1, 2, 3, 4}, std::vector<uint8_t>{0, 0, 1, 1}), 1.0);
  EXPECT_EQ(roc_auc(std::vector<double>{1, 2, 3, 4}, std::vector<uint8_t>{1, 1, 0, 0}), 0.0);
  // One class only, or a NaN score: undefined.
  EXPECT_TRUE(std::isnan(roc_auc(std::vector<double>{1, 2}, std::vector<uint8_t>{1, 1})));
  EXPECT_TRUE(std::isnan(roc_auc(std::vector<double>{1, NAN}, std::vector<uint8_t>{0, 1})));
}

TEST(ClassificationMetrics, ClassWithNoPredictionsCountsZero) {
  // y_true [0,0,1,1,2,2], y_pred [0,1,1,1,0,0]: class 2 is never predicted.
  // sklearn (zero_division=0): precision 1/3, recall 1/2, f1 0.4.
  const std::vector<int64_t> y = {0, 0, 1, 1, 2, 2}, pred = {0, 1, 1, 1, 0, 0};
  std::vector<double> onehot;
  for (int64_t p : pred) {
    for (int64_t c = 0; c < 3; ++c) onehot.push_back(c == p ? 1.0 : 0.0);
  }
  ClassificationMetrics m(3, OutputKind::Probabilities);
  m.update(onehot, 3, y);
  const ClassificationResult r = m.result();
  EXPECT_NEAR(r.precision, 1.0 / 3.0, kTol);
  EXPECT_NEAR(r.recall, 0.5, kTol);
  EXPECT_NEAR(r.f1, 0.4, kTol);
  EXPECT_NEAR(r.accuracy, 0.5, kTol);
  EXPECT_EQ(r.class_precision, (std::vector<double>{1.0 / 3.0, 2.0 / 3.0, 0.0}));
  EXPECT_EQ(r.class_recall, (std::vector<double>{0.5, 1.0, 0.0}));
}

TEST(ClassificationMetrics, ClassesAbsentEverywhereAreLeftOutOfTheMacroAverage) {
  // 4 classes, but only 0 and 1 occur: sklearn's default labels are {0, 1}.
  ClassificationMetrics m(4, OutputKind::Probabilities);
  const std::vector<double> probs = {0.9, 0.1, 0, 0, 0.2, 0.8, 0, 0, 0.6, 0.4, 0, 0};
  m.update(probs, 4, std::vector<int64_t>{0, 1, 1});
  const ClassificationResult r = m.result();
  // class 0: p 1/2, r 1; class 1: p 1, r 1/2.
  EXPECT_NEAR(r.precision, 0.75, kTol);
  EXPECT_NEAR(r.recall, 0.75, kTol);
  EXPECT_NEAR(r.f1, 2.0 / 3.0, kTol);
}

TEST(ClassificationMetrics, LossIsTheMeanPerSample) {
  ClassificationMetrics m(2);
  const Tensor x = Tensor::from_vector<float>({1, 0, 0, 1}, {2, 2});
  const Tensor y = Tensor::from_vector<int64_t>({0, 1}, {2});
  m.update(x, y, 3.0);
  m.update(x, y, 1.0);
  EXPECT_DOUBLE_EQ(m.result().loss, 1.0);
  EXPECT_DOUBLE_EQ(m.result().accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m.result().roc_auc, 1.0);
  m.reset();
  const ClassificationResult empty = m.result();
  EXPECT_EQ(empty.num_samples, 0);
  EXPECT_TRUE(std::isnan(empty.loss));
  EXPECT_TRUE(std::isnan(empty.accuracy));
  EXPECT_TRUE(std::isnan(empty.f1));
  EXPECT_TRUE(std::isnan(empty.roc_auc));
}

TEST(ClassificationMetrics, MergeEqualsOneAccumulator) {
  std::vector<double> s;
  std::vector<int64_t> y;
  binary_case(s, y);
  ClassificationMetrics all(2, OutputKind::Probabilities), a(2, OutputKind::Probabilities),
      b(2, OutputKind::Probabilities);
  all.update(s, 1, y, 30.0);
  a.update(std::span(s).first(100), 1, std::span(y).first(100), 10.0);
  b.update(std::span(s).subspan(100), 1, std::span(y).subspan(100), 20.0);
  a.merge(b);
  EXPECT_EQ(a.result().to_json(), all.result().to_json());
  EXPECT_THROW(a.merge(ClassificationMetrics(3)), ValueError);
}

TEST(ClassificationMetrics, ReadsStridedTensorsAndIntegerTargets) {
  // [3, 2] logits stored transposed; i32 targets.
  const Tensor stored = Tensor::from_vector<double>({0.0, 5.0, 1.0, 2.0, 3.0, 0.0}, {2, 3});
  const Tensor logits = stored.as_strided({3, 2}, {1, 3}, 0);  // rows: (0,2) (5,3) (1,0)
  ClassificationMetrics m(2);
  m.update(logits, Tensor::from_vector<int32_t>({1, 0, 1}, {3}));
  const ClassificationResult r = m.result();
  EXPECT_EQ(r.confusion, (std::vector<int64_t>{1, 0, 1, 1}));  // predictions 1, 0, 0
  // scores x1 - x0: 2, -2, -1 for labels 1, 0, 1 -> pairs (2 > -2) won, (-1 > -2) won
  EXPECT_DOUBLE_EQ(r.roc_auc, 1.0);
}

TEST(ClassificationMetrics, RejectsBadInputWithoutChangingState) {
  ClassificationMetrics m(3);
  const Tensor x = Tensor::from_vector<float>({1, 0, 0, 0, 1, 0}, {2, 3});
  EXPECT_THROW(m.update(x, Tensor::from_vector<int64_t>({0, 3}, {2})), IndexError);
  EXPECT_THROW(m.update(x, Tensor::from_vector<int64_t>({0, -1}, {2})), IndexError);
  EXPECT_EQ(m.num_samples(), 0);
  EXPECT_THROW(m.update(x, Tensor::from_vector<int64_t>({0}, {1})), ShapeError);
  EXPECT_THROW(m.update(Tensor::from_vector<float>({1, 0}, {1, 2}), Tensor::from_vector<int64_t>({0}, {1})),
               ShapeError);
  EXPECT_THROW(m.update(x, Tensor::from_vector<float>({0, 1}, {2})), TypeError);
  EXPECT_THROW(ClassificationMetrics(1), ValueError);
  try {
    m.update(x, Tensor::from_vector<int64_t>({0, 7}, {2}));
    FAIL();
  } catch (const IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("target 7 of sample 1"), std::string::npos) << e.what();
  }
}

TEST(ClassificationMetrics, MapAndJsonNameEveryMetric) {
  ClassificationMetrics m(2);
  m.update(Tensor::from_vector<float>({2, 1, 0, 3, 1, 1}, {3, 2}),
           Tensor::from_vector<int64_t>({0, 1, 1}, {3}), 1.5);
  const ClassificationResult r = m.result();
  const auto map = r.as_map("test_");
  for (const char* key : {"test_loss", "test_accuracy", "test_precision_macro", "test_recall_macro",
                          "test_f1_macro", "test_roc_auc", "test_num_samples"}) {
    EXPECT_EQ(map.count(key), 1u) << key;
  }
  EXPECT_DOUBLE_EQ(map.at("test_loss"), 0.5);
  EXPECT_DOUBLE_EQ(map.at("test_num_samples"), 3.0);

  const auto j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["num_samples"], 3);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), r.accuracy);
  EXPECT_EQ(j["confusion"], nlohmann::json::parse("[[1, 0], [1, 1]]"));
  // NaN (no loss given) becomes null.
  ClassificationMetrics no_loss(2);
  no_loss.update(Tensor::from_vector<float>({0, 1}, {1, 2}), Tensor::from_vector<int64_t>({1}, {1}));
  EXPECT_TRUE(nlohmann::json::parse(no_loss.result().to_json())["loss"].is_null());
}

}  // namespace
}  // namespace loom::train
