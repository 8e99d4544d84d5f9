#include "loom/data/csv.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>
#include <vector>

#include "loom/core/error.h"

namespace loom::data {
namespace {

std::string_view trim(std::string_view s, char delimiter) {
  auto blank = [&](char c) { return c != delimiter && (c == ' ' || c == '\t' || c == '\r'); };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

void split(std::string_view line, char delimiter, std::vector<std::string_view>& out) {
  out.clear();
  size_t start = 0;
  for (;;) {
    size_t pos = line.find(delimiter, start);
    out.push_back(trim(line.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start),
                       delimiter));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
}

bool parse_number(std::string_view s, double* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool is_blank(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

// The label column's index in a row of `ncols` fields, or -1 for none.
int64_t resolve_label(const CsvOptions& o, const std::vector<std::string>& header, int64_t ncols,
                      const std::string& path) {
  if (std::holds_alternative<std::monostate>(o.label_column)) return -1;
  if (const auto* name = std::get_if<std::string>(&o.label_column)) {
    LOOM_CHECK(o.has_header, "read_csv: '{}': label_column '{}' is a name, but has_header is false", path, *name);
    std::string names;
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == *name) return static_cast<int64_t>(i);
      names += (i ? ", " : "") + header[i];
    }
    throw ValueError(format("read_csv: '{}' has no column named '{}' (columns: {})", path, *name, names));
  }
  int64_t idx = std::get<int64_t>(o.label_column);
  LOOM_CHECK(idx >= -ncols && idx < ncols, "read_csv: '{}': label_column {} out of range for {} columns", path, idx,
             ncols);
  return idx < 0 ? idx + ncols : idx;
}

}  // namespace

TensorDataset read_csv(const std::string& path, const CsvOptions& options) {
  LOOM_CHECK_T(TypeError,
               options.target_dtype == core::DType::I64 || options.target_dtype == core::DType::F32,
               "read_csv: target_dtype must be i64 or f32, got {}", options.target_dtype);
  LOOM_CHECK(options.delimiter != '"' && options.delimiter != '\n', "read_csv: invalid delimiter");
  std::ifstream file(path, std::ios::binary);
  LOOM_CHECK_T(IoError, file.good(), "read_csv: cannot open '{}'", path);
  std::stringstream ss;
  ss << file.rdbuf();
  LOOM_CHECK_T(IoError, !file.bad(), "read_csv: error while reading '{}'", path);
  const std::string text = ss.str();

  std::vector<std::string> header;
  std::vector<std::string_view> fields;
  std::vector<float> features;
  std::vector<int64_t> labels_i;
  std::vector<float> labels_f;
  int64_t ncols = -1, label = -1, first_line = 0, rows = 0;

  auto column_name = [&](size_t c) {
    return c < header.size() ? format(" ('{}')", header[c]) : std::string();
  };

  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    if (is_blank(line)) continue;
    split(line, options.delimiter, fields);
    if (ncols < 0) {
      ncols = static_cast<int64_t>(fields.size());
      first_line = line_no;
      if (options.has_header) {
        for (auto f : fields) header.emplace_back(f);
      }
      label = resolve_label(options, header, ncols, path);
      LOOM_CHECK_T(IoError, ncols > (label >= 0 ? 1 : 0), "read_csv: '{}' line {} has no feature columns", path,
                   line_no);
      if (options.has_header) continue;
    }
    LOOM_CHECK_T(IoError, static_cast<int64_t>(fields.size()) == ncols,
                 "read_csv: '{}' line {} has {} fields, expected {} (as on line {})", path, line_no, fields.size(),
                 ncols, first_line);
    for (size_t c = 0; c < fields.size(); ++c) {
      double v = 0;
      LOOM_CHECK_T(IoError, parse_number(fields[c], &v),
                   "read_csv: '{}' line {}, column {}{}: '{}' is not a number", path, line_no, c + 1,
                   column_name(c), fields[c]);
      if (static_cast<int64_t>(c) != label) {
        features.push_back(static_cast<float>(v));
      } else if (options.target_dtype == core::DType::F32) {
        labels_f.push_back(static_cast<float>(v));
      } else {
        LOOM_CHECK_T(IoError,
                     std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9.007199254740992e15,
                     "read_csv: '{}' line {}, column {}{}: label '{}' is not an integer (use target_dtype f32 for "
                     "real-valued targets)",
                     path, line_no, c + 1, column_name(c), fields[c]);
        labels_i.push_back(static_cast<int64_t>(v));
      }
    }
    ++rows;
  }
  LOOM_CHECK_T(IoError, rows > 0, "read_csv: '{}' has no data rows", path);

  const int64_t nfeat = ncols - (label >= 0 ? 1 : 0);
  Tensor inputs = Tensor::from_vector<float>(features, {rows, nfeat});
  if (label < 0) return TensorDataset(std::move(inputs));
  Tensor targets = options.target_dtype == core::DType::F32 ? Tensor::from_vector<float>(labels_f, {rows})
                                                            : Tensor::from_vector<int64_t>(labels_i, {rows});
  return TensorDataset(std::move(inputs), std::move(targets));
}

}  // namespace loom::data
