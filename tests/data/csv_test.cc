#include "loom/data/csv.h"

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "temp_dir.h"

namespace loom::data {
namespace {

using core::DType;
using testing::TempDir;
using testing::write_bytes;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Csv, HeaderAndNamedLabel) {
  TempDir dir;
  write_bytes(dir.file("a.csv"), "x1, x2 ,label,x3\n1,2,0,3\n4.5,-5e-1,2,+6\n\n7,8,1,9\r\n");
  TensorDataset ds = read_csv(dir.file("a.csv"), {.label_column = "label"});
  EXPECT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.inputs().dtype(), DType::F32);
  EXPECT_EQ(ds.inputs().shape(), (core::Shape{3, 3}));
  EXPECT_EQ(ds.inputs().to_vector<float>(), (std::vector<float>{1, 2, 3, 4.5f, -0.5f, 6, 7, 8, 9}));
  EXPECT_EQ(ds.targets().dtype(), DType::I64);
  EXPECT_EQ(ds.targets().to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 1}));
}

TEST(Csv, NoHeaderIndexedLabelTabsAndF32Targets) {
  TempDir dir;
  write_bytes(dir.file("b.tsv"), "0.5\t1\t2\n1.5\t3\t4");  // no newline at the end
  TensorDataset ds = read_csv(dir.file("b.tsv"), {.has_header = false,
                                                  .label_column = int64_t{-1},
                                                  .delimiter = '\t',
                                                  .target_dtype = DType::F32});
  EXPECT_EQ(ds.inputs().to_vector<float>(), (std::vector<float>{0.5f, 1, 1.5f, 3}));
  EXPECT_EQ(ds.targets().dtype(), DType::F32);
  EXPECT_EQ(ds.targets().to_vector<float>(), (std::vector<float>{2, 4}));

  TensorDataset first = read_csv(dir.file("b.tsv"), {.has_header = false, .label_column = int64_t{0},
                                                     .delimiter = '\t', .target_dtype = DType::F32});
  EXPECT_EQ(first.inputs().to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(first.targets().to_vector<float>(), (std::vector<float>{0.5f, 1.5f}));
}

TEST(Csv, NoLabelColumnMeansNoTargets) {
  TempDir dir;
  write_bytes(dir.file("c.csv"), "a;b\n1;2\n3;4\n");
  TensorDataset ds = read_csv(dir.file("c.csv"), {.delimiter = ';'});
  EXPECT_EQ(ds.inputs().shape(), (core::Shape{2, 2}));
  EXPECT_FALSE(ds.targets().defined());
}

TEST(Csv, NonNumericFieldNamesFileLineAndColumn) {
  TempDir dir;
  write_bytes(dir.file("d.csv"), "a,b,c\n1,2,3\n4,oops,6\n");
  std::string msg = error_of([&] { read_csv(dir.file("d.csv")); });
  EXPECT_NE(msg.find(dir.file("d.csv")), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("column 2 ('b')"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'oops'"), std::string::npos) << msg;
  EXPECT_THROW(read_csv(dir.file("d.csv")), IoError);
}

TEST(Csv, EmptyFieldIsAnError) {
  TempDir dir;
  write_bytes(dir.file("e.csv"), "1,,3\n");
  std::string msg = error_of([&] { read_csv(dir.file("e.csv"), {.has_header = false}); });
  EXPECT_NE(msg.find("line 1, column 2"), std::string::npos) << msg;
}

TEST(Csv, RaggedRowNamesLineAndCounts) {
  TempDir dir;
  write_bytes(dir.file("r.csv"), "a,b,c\n1,2,3\n4,5\n");
  std::string msg = error_of([&] { read_csv(dir.file("r.csv")); });
  EXPECT_NE(msg.find(dir.file("r.csv")), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3 has 2 fields, expected 3"), std::string::npos) << msg;
  write_bytes(dir.file("r2.csv"), "1,2\n3,4,5\n");
  msg = error_of([&] { read_csv(dir.file("r2.csv"), {.has_header = false}); });
  EXPECT_NE(msg.find("line 2 has 3 fields, expected 2"), std::string::npos) << msg;
}

TEST(Csv, NonIntegerClassLabel) {
  TempDir dir;
  write_bytes(dir.file("l.csv"), "x,y\n1,0\n2,0.5\n");
  std::string msg = error_of([&] { read_csv(dir.file("l.csv"), {.label_column = "y"}); });
  EXPECT_NE(msg.find("line 3, column 2 ('y')"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an integer"), std::string::npos) << msg;
}

TEST(Csv, OptionErrors) {
  TempDir dir;
  write_bytes(dir.file("o.csv"), "a,b\n1,2\n");
  EXPECT_THROW(read_csv(dir.file("o.csv"), {.label_column = "zzz"}), ValueError);
  EXPECT_NE(error_of([&] { read_csv(dir.file("o.csv"), {.label_column = "zzz"}); }).find("columns: a, b"),
            std::string::npos);
  EXPECT_THROW(read_csv(dir.file("o.csv"), {.label_column = int64_t{2}}), ValueError);
  EXPECT_THROW(read_csv(dir.file("o.csv"), {.has_header = false, .label_column = "a"}), ValueError);
  EXPECT_THROW(read_csv(dir.file("o.csv"), {.target_dtype = DType::F64}), TypeError);
  EXPECT_THROW(read_csv(dir.file("missing.csv")), IoError);
  write_bytes(dir.file("h.csv"), "a,b\n");
  EXPECT_THROW(read_csv(dir.file("h.csv")), IoError);  // header only: no data rows
  write_bytes(dir.file("one.csv"), "y\n1\n");
  EXPECT_THROW(read_csv(dir.file("one.csv"), {.label_column = "y"}), IoError);  // no feature left
}

}  // namespace
}  // namespace loom::data
