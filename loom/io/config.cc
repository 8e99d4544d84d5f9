#include "loom/io/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "loom/core/error.h"

namespace loom::io {
namespace {

std::string where(const std::string& file, const toml::node* n) {
  if (n && n->source().begin.line > 0) return format("{}:{}", file, n->source().begin.line);
  return format("{} (--set)", file);
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::array: return "array";
    case toml::node_type::table: return "table";
    default: return "date/time";
  }
}

// Reads the keys of one table, remembering which are known, and rejects the rest.
class Section {
 public:
  Section(const toml::table* tbl, std::string name, const std::string& file)
      : tbl_(tbl), name_(std::move(name)), file_(file) {}

  template <class T>
  void get(const std::string& key, T& out) {
    known_.push_back(key);
    if (!tbl_) return;
    const toml::node* n = tbl_->get(key);
    if (!n) return;
    auto fail = [&](const char* want) {
      throw ConfigError(format("{}: [{}] '{}' must be {}, got {}", where(file_, n), name_, key, want, type_name(*n)));
    };
    if constexpr (std::is_same_v<T, bool>) {
      if (!n->is_boolean()) fail("a boolean (true/false)");
      out = *n->value<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!n->is_integer()) fail("an integer");
      int64_t v = *n->value<int64_t>();
      if (std::is_unsigned_v<T> && v < 0) {
        throw ConfigError(format("{}: [{}] '{}' must be >= 0, got {}", where(file_, n), name_, key, v));
      }
      out = static_cast<T>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!n->is_number()) fail("a number");
      out = *n->value<double>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!n->is_string()) fail("a string");
      out = *n->value<std::string>();
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      const toml::array* arr = n->as_array();
      if (!arr) fail("an array of numbers");
      out.clear();
      for (const auto& e : *arr) {
        if (!e.is_number()) fail("an array of numbers");
        out.push_back(*e.value<double>());
      }
    }
  }

  void allow(const std::string& key) { known_.push_back(key); }

  // Positive integers and the like.
  void check(bool ok, const std::string& key, const std::string& what) const {
    if (ok) return;
    const toml::node* n = tbl_ ? tbl_->get(key) : nullptr;
    throw ConfigError(format("{}: [{}] '{}' {}", where(file_, n), name_, key, what));
  }

  void reject_unknown() const {
    if (!tbl_) return;
    for (const auto& [k, v] : *tbl_) {
      std::string key(k.str());
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      auto hint = closest_name(key, known_);
      throw ConfigError(format("{}: [{}] unknown key '{}'{}", where(file_, &v), name_, key,
                               hint ? format(" (did you mean '{}'?)", *hint) : std::string(
                                   format(" (valid keys: {})", join(known_)))));
    }
  }

  const toml::table* table() const { return tbl_; }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }
  const toml::table* tbl_;
  std::string name_;
  const std::string& file_;
  std::vector<std::string> known_;
};

const toml::table* subtable(const toml::table& root, const std::string& name, const std::string& file) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) {
    throw ConfigError(format("{}: '{}' must be a table ([{}]), got {}", where(file, n), name, name, type_name(*n)));
  }
  return n->as_table();
}

void one_of(Section& s, const std::string& key, const std::string& value, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  auto hint = closest_name(value, allowed);
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  s.check(false, key, format("is '{}', expected one of {}{}", value, list,
                             hint ? format(" (did you mean '{}'?)", *hint) : std::string()));
}

void apply_override(toml::table& root, const std::string& text, const std::string& file) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(format("{}: --set '{}' must look like section.key=value", file, text));
  }
  std::string path = text.substr(0, eq), value = text.substr(eq + 1);
  auto dot = path.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == path.size() || path.find('.', dot + 1) != std::string::npos) {
    throw ConfigError(format("{}: --set '{}': the key must be section.key (e.g. train.epochs)", file, text));
  }
  std::string section = path.substr(0, dot), key = path.substr(dot + 1);
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed.insert_or_assign("v", value);  // a bare word is a string
  }
  if (!root.contains(section)) root.insert_or_assign(section, toml::table{});
  toml::table* t = root.get(section)->as_table();
  if (!t) throw ConfigError(format("{}: --set '{}': '{}' is not a table", file, text, section));
  t->insert_or_assign(key, *parsed.get("v"));
}

std::variant<int64_t, double, bool, std::string> layer_arg(const toml::node& n, const std::string& file,
                                                           const std::string& key) {
  if (n.is_integer()) return *n.value<int64_t>();
  if (n.is_floating_point()) return *n.value<double>();
  if (n.is_boolean()) return *n.value<bool>();
  if (n.is_string()) return *n.value<std::string>();
  throw ConfigError(format("{}: layer key '{}' must be a number, boolean or string, got {}", where(file, &n), key,
                           type_name(n)));
}

}  // namespace

std::optional<std::string> closest_name(const std::string& word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_d = std::max<size_t>(3, word.size() / 2) + 1;  // accept up to this many edits
  for (const auto& c : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= c.size(); ++j) {
        size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (word[i - 1] == c[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    size_t d = row[c.size()];
    // A prefix ("lr" for "lrate", "momentum" for "momentum_x") is the likeliest meaning.
    if (word.rfind(c, 0) == 0 || c.rfind(word, 0) == 0) d = std::min<size_t>(d, 1);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

JobConfig parse_job(const std::string& text, const std::string& name, const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw ConfigError(format("{}:{}: invalid TOML: {}", name, e.source().begin.line, std::string(e.description())));
  }
  for (const auto& o : overrides) apply_override(root, o, name);

  JobConfig job;
  job.path = name;
  const std::vector<std::string> sections = {"model", "data", "optimizer", "schedule", "train", "distributed"};
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    if (std::find(sections.begin(), sections.end(), key) != sections.end()) continue;
    auto hint = closest_name(key, sections);
    throw ConfigError(format("{}: unknown section [{}]{}", where(name, &v), key,
                             hint ? format(" (did you mean [{}]?)", *hint) : std::string()));
  }

  Section model(subtable(root, "model", name), "model", name);
  model.get("name", job.model.name);
  model.get("init_seed", job.model.init_seed);
  model.allow("layers");  // [[model.layers]]: read by hand below, each layer keeps its own keys
  if (const toml::table* mt = model.table()) {
    if (const toml::node* ln = mt->get("layers")) {
      const toml::array* arr = ln->as_array();
      if (!arr) throw ConfigError(format("{}: [model] 'layers' must be an array of tables ([[model.layers]])", where(name, ln)));
      for (const auto& e : *arr) {
        const toml::table* lt = e.as_table();
        if (!lt) throw ConfigError(format("{}: each [[model.layers]] entry must be a table", where(name, &e)));
        LayerSpec spec;
        spec.where = where(name, &e);
        for (const auto& [lk, lv] : *lt) {
          std::string key(lk.str());
          if (key == "type") {
            if (!lv.is_string()) throw ConfigError(format("{}: layer 'type' must be a string", where(name, &lv)));
            spec.type = *lv.value<std::string>();
          } else {
            spec.args[key] = layer_arg(lv, name, key);
          }
        }
        if (spec.type.empty()) throw ConfigError(format("{}: a [[model.layers]] entry has no 'type'", spec.where));
        job.model.layers.push_back(std::move(spec));
      }
    }
  }
  model.reject_unknown();
  if (job.model.name.empty() && job.model.layers.empty()) {
    throw ConfigError(format("{}: [model] needs 'name' (mlp, cnn, lenet, resnet18) or [[model.layers]]", name));
  }
  if (!job.model.name.empty() && !job.model.layers.empty()) {
    model.check(false, "name", "and [[model.layers]] are both given; use one");
  }
  if (!job.model.name.empty()) one_of(model, "name", job.model.name, {"mlp", "cnn", "lenet", "resnet18"});

  Section data(subtable(root, "data", name), "data", name);
  auto& d = job.data;
  data.get("dataset", d.dataset);
  data.get("root", d.root);
  data.get("train_file", d.train_file);
  data.get("test_file", d.test_file);
  data.get("train_labels", d.train_labels);
  data.get("test_labels", d.test_labels);
  data.get("label_column", d.label_column);
  data.get("batch_size", d.batch_size);
  data.get("test_batch_size", d.test_batch_size);
  data.get("shuffle", d.shuffle);
  data.get("drop_last", d.drop_last);
  data.get("num_workers", d.num_workers);
  data.get("augment", d.augment);
  data.get("mean", d.mean);
  data.get("std", d.std);
  data.reject_unknown();
  one_of(data, "dataset", d.dataset, {"fashion-mnist", "idx", "csv"});
  data.check(d.batch_size > 0, "batch_size", format("must be positive, got {}", d.batch_size));
  data.check(d.test_batch_size > 0, "test_batch_size", format("must be positive, got {}", d.test_batch_size));
  data.check(d.num_workers >= 0, "num_workers", format("must be >= 0, got {}", d.num_workers));
  data.check(d.mean.size() == d.std.size(), "std", "must have as many entries as 'mean'");
  for (double s : d.std) data.check(s > 0, "std", "entries must be positive");

  Section opt(subtable(root, "optimizer", name), "optimizer", name);
  auto& o = job.optimizer;
  std::string rule(optim::name(o.rule));
  opt.get("name", rule);
  opt.get("lr", o.lr);
  opt.get("momentum", o.momentum);
  opt.get("dampening", o.dampening);
  opt.get("nesterov", o.nesterov);
  opt.get("weight_decay", o.weight_decay);
  opt.get("beta1", o.beta1);
  opt.get("beta2", o.beta2);
  opt.get("eps", o.eps);
  opt.get("amsgrad", o.amsgrad);
  opt.reject_unknown();
  one_of(opt, "name", rule, optim::rule_names());
  o.rule = *optim::parse_rule(rule);
  opt.check(o.lr > 0 && std::isfinite(o.lr), "lr", format("must be positive, got {}", o.lr));
  opt.check(o.momentum >= 0, "momentum", "must be >= 0");
  opt.check(o.weight_decay >= 0, "weight_decay", "must be >= 0");
  opt.check(o.beta1 >= 0 && o.beta1 < 1, "beta1", "must be in [0, 1)");
  opt.check(o.beta2 >= 0 && o.beta2 < 1, "beta2", "must be in [0, 1)");
  opt.check(o.eps >= 0, "eps", "must be >= 0");
  opt.check(!o.nesterov || o.rule != optim::Rule::Sgd || (o.momentum > 0 && o.dampening == 0), "nesterov",
            "needs momentum > 0 and dampening = 0");

  Section sch(subtable(root, "schedule", name), "schedule", name);
  auto& s = o.schedule;
  std::string kind(optim::name(s.kind));
  sch.get("name", kind);
  sch.get("step_size", s.step_size);
  sch.get("gamma", s.gamma);
  sch.get("min_lr", s.min_lr);
  sch.get("warmup_steps", s.warmup_steps);
  sch.reject_unknown();
  one_of(sch, "name", kind, optim::schedule_names());
  s.kind = *optim::parse_schedule_kind(kind);
  sch.check(s.step_size > 0, "step_size", "must be positive");
  sch.check(s.gamma >= 0, "gamma", "must be >= 0");
  sch.check(s.min_lr >= 0, "min_lr", "must be >= 0");
  sch.check(s.warmup_steps >= 0, "warmup_steps", "must be >= 0");
  // Whatever a job file can say, the factory and the servers accept (what is
  // left: values that are not finite).
  try {
    optim::check_spec(o);
  } catch (const ValueError& e) {
    throw ConfigError(format("{}: [optimizer] {}", name, e.what()));
  }

  Section tr(subtable(root, "train", name), "train", name);
  auto& t = job.train;
  tr.get("epochs", t.epochs);
  tr.get("max_steps", t.max_steps);
  tr.get("seed", t.seed);
  tr.get("eval_interval", t.eval_interval);
  tr.get("threads", t.threads);
  tr.get("log_interval", t.log_interval);
  tr.get("checkpoint_dir", t.checkpoint_dir);
  tr.get("checkpoint_every", t.checkpoint_every);
  tr.get("checkpoint_keep", t.checkpoint_keep);
  tr.get("metrics_out", t.metrics_out);
  tr.get("tensorboard_dir", t.tensorboard_dir);
  tr.get("label_smoothing", t.label_smoothing);
  tr.reject_unknown();
  tr.check(t.epochs >= 1, "epochs", format("must be >= 1, got {}", t.epochs));
  tr.check(t.max_steps >= 0, "max_steps", "must be >= 0");
  tr.check(t.eval_interval >= 0, "eval_interval", "must be >= 0");
  tr.check(t.threads >= 0, "threads", "must be >= 0");
  tr.check(t.log_interval >= 1, "log_interval", "must be >= 1");
  tr.check(t.checkpoint_every >= 1, "checkpoint_every", "must be >= 1");
  tr.check(t.checkpoint_keep >= 1, "checkpoint_keep", "must be >= 1");
  tr.check(t.label_smoothing >= 0 && t.label_smoothing < 1, "label_smoothing", "must be in [0, 1)");

  Section dist(subtable(root, "distributed", name), "distributed", name);
  auto& ds = job.distributed;
  std::string mode(io::name(ds.mode));
  dist.get("mode", mode);
  dist.get("workers", ds.workers);
  dist.get("deterministic", ds.deterministic);
  dist.get("transport", ds.transport);
  dist.get("algorithm", ds.algorithm);
  dist.get("bucket_mb", ds.bucket_mb);
  dist.get("first_bucket_mb", ds.first_bucket_mb);
  dist.get("timeout_s", ds.timeout_s);
  dist.get("heartbeat_timeout_s", ds.heartbeat_timeout_s);
  dist.get("servers", ds.servers);
  dist.get("staleness", ds.staleness);
  dist.get("replicas", ds.replicas);
  dist.get("split_bound", ds.split_bound);
  dist.reject_unknown();
  one_of(dist, "mode", mode, mode_names());
  ds.mode = *parse_mode(mode);
  const bool ps = uses_servers(ds.mode);
  dist.check(ds.servers >= 0, "servers", format("must be >= 0, got {}", ds.servers));
  dist.check(ps || ds.servers == 0, "servers", format("parameter servers need mode = dist_sync, dist_async or dist_ssp (mode is \"{}\")", mode));
  dist.check(ds.staleness >= 0, "staleness", format("must be >= 0, got {}", ds.staleness));
  dist.check(ds.replicas >= 0 && (ds.replicas == 0 || ds.servers == 0 || ds.replicas < ds.servers), "replicas",
             format("must be >= 0 and less than servers ({}), got {}", ds.servers, ds.replicas));
  dist.check(ds.split_bound >= 1, "split_bound", "must be >= 1");
  dist.check(!(ps && ds.deterministic), "deterministic", "applies to mode = \"allreduce\" only");
  one_of(dist, "transport", ds.transport, {"auto", "zmq", "shm"});
  one_of(dist, "algorithm", ds.algorithm, {"auto", "ring", "halving_doubling", "tree", "hierarchical"});
  dist.check(ds.workers >= 1, "workers", format("must be >= 1, got {}", ds.workers));
  dist.check(ds.bucket_mb > 0 && ds.first_bucket_mb > 0, "bucket_mb", "bucket sizes must be positive");
  dist.check(ds.timeout_s > 0, "timeout_s", "must be positive");
  dist.check(ds.heartbeat_timeout_s > 0, "heartbeat_timeout_s", "must be positive");
  return job;
}

JobConfig load_job_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(format("{}: cannot open job file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ConfigError(format("{}: cannot read job file", path));
  return parse_job(ss.str(), path, overrides);
}

}  // namespace loom::io
