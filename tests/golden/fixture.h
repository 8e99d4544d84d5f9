// Reads the golden fixtures written by make_golden.py: one entry per line,
//   name d0 d1 ... : v0 v1 ...
// ('#' lines are comments). Test-only helper, header-only.
//
//   Fixture fx(LOOM_TEST_DATA_DIR "/golden/optim_sgd.txt");
//   double lr = fx.scalar("momentum.lr");
//   const auto& w = fx.at("momentum.step3").values;
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::golden {

struct Entry {
  std::vector<int64_t> shape;  // empty for a scalar
  std::vector<double> values;  // row-major
};

class Fixture {
 public:
  explicit Fixture(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open fixture " + path + " (run tests/golden/make_golden.py)");
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty() || line[0] == '#') continue;
      auto colon = line.find(" : ");
      if (colon == std::string::npos) throw std::runtime_error(where(path, lineno) + "no ' : '");
      std::istringstream head(line.substr(0, colon));
      std::string name;
      head >> name;
      Entry e;
      int64_t d;
      while (head >> d) e.shape.push_back(d);
      int64_t expected = 1;
      for (int64_t s : e.shape) expected *= s;
      const char* p = line.c_str() + colon + 3;
      while (*p != '\0') {
        char* end = nullptr;
        double v = std::strtod(p, &end);
        if (end == p) break;
        e.values.push_back(v);
        p = end;
      }
      if (static_cast<int64_t>(e.values.size()) != expected) {
        throw std::runtime_error(where(path, lineno) + name + " has " + std::to_string(e.values.size()) +
                                 " values, shape needs " + std::to_string(expected));
      }
      if (!entries_.emplace(name, std::move(e)).second) throw std::runtime_error(where(path, lineno) + "duplicate " + name);
    }
    path_ = path;
  }

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& at(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw std::runtime_error(path_ + ": no entry " + name);
    return it->second;
  }
  double scalar(const std::string& name) const {
    const Entry& e = at(name);
    if (e.values.size() != 1) throw std::runtime_error(path_ + ": " + name + " is not a scalar");
    return e.values[0];
  }

 private:
  static std::string where(const std::string& path, int lineno) {
    return path + ":" + std::to_string(lineno) + ": ";
  }
  std::string path_;
  std::map<std::string, Entry> entries_;
};

// Worst |a - b| / max(|b|, scale) seen so far, with its location, for reporting.
struct WorstError {
  double rel = 0.0;
  std::string where;
  void update(double a, double b, double scale, const std::string& at) {
    double r = std::abs(a - b) / std::max(std::abs(b), scale);
    if (r > rel || std::isnan(r)) {
      rel = r;
      where = at;
    }
  }
};

}  // namespace loom::golden
