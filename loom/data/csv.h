// Numeric CSV files as in-memory datasets.
//
//   auto iris = data::read_csv("iris.csv", {.label_column = "species"});
//   // inputs f32 [N, F] (every column but the label), targets i64 [N]
//   auto reg = data::read_csv("y.tsv", {.has_header = false, .label_column = -1,
//                                       .delimiter = '\t', .target_dtype = core::DType::F32});
//
// Every field must be a number (decimal or exponent form, "nan", "inf");
// spaces around a field and double quotes around a whole field are ignored;
// blank lines are skipped. Errors are IoErrors naming the file, the line, and
// for a bad field the column (number and header name).
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include "loom/core/dtype.h"
#include "loom/data/dataset.h"

namespace loom::data {

// A column by 0-based index (negative counts from the end) or by header name;
// std::monostate means none (the dataset then has no targets).
using CsvColumn = std::variant<std::monostate, int64_t, std::string>;

struct CsvOptions {
  bool has_header = true;
  CsvColumn label_column = std::monostate{};
  char delimiter = ',';
  // i64 for class labels (the field must hold an integer), f32 for regression.
  core::DType target_dtype = core::DType::I64;
};

TensorDataset read_csv(const std::string& path, const CsvOptions& options = {});

}  // namespace loom::data
