#include "loom/io/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>
#include <type_traits>

#include "loom/core/error.h"
#include "loom/core/stop_signals.h"

// A job file is read from tables: one per [section], one row per key (its
// name, the JobConfig member it fills and the values allowed), and a short
// function for the checks that involve several keys. read_section() walks a
// table; the rows' order is the order keys are read and listed in messages.
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

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// One [section] of the file as written (absent: no table), for lookups and
// messages that name the file, the line, the section and the key.
class Section {
 public:
  Section(const toml::table* tbl, std::string name, const std::string& file)
      : tbl_(tbl), name_(std::move(name)), file_(file) {}

  const toml::node* node(const std::string& key) const { return tbl_ ? tbl_->get(key) : nullptr; }
  const std::string& file() const { return file_; }

  // "file:line: [section] 'key' <what>"; a key that is not written (a check
  // across keys, a default) has no line.
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    const toml::node* n = node(key);
    throw ConfigError(format("{}: [{}] '{}' {}", n ? where(file_, n) : file_, name_, key, what));
  }
  void check(bool ok, const std::string& key, const std::string& what) const {
    if (!ok) fail(key, what);
  }

  void reject_unknown(const std::vector<std::string>& known) const {
    if (!tbl_) return;
    for (const auto& [k, v] : *tbl_) {
      std::string key(k.str());
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      auto hint = closest_name(key, known);
      throw ConfigError(format("{}: [{}] unknown key '{}'{}", where(file_, &v), name_, key,
                               hint ? format(" (did you mean '{}'?)", *hint)
                                    : format(" (valid keys: {})", join(known))));
    }
  }

 private:
  const toml::table* tbl_;
  std::string name_;
  const std::string& file_;
};

const toml::table* subtable(const toml::table& root, const std::string& name, const std::string& file) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) {
    throw ConfigError(format("{}: '{}' must be a table ([{}]), got {}", where(file, n), name, name, type_name(*n)));
  }
  return n->as_table();
}

void require_one_of(const Section& s, const std::string& key, const std::string& value,
                    const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  auto hint = closest_name(value, allowed);
  s.fail(key, format("is '{}', expected one of {}{}", value, join(allowed),
                     hint ? format(" (did you mean '{}'?)", *hint) : std::string()));
}

// --- Reading one value: the type is the member's ---

std::variant<int64_t, double, bool, std::string> layer_arg(const toml::node& n, const std::string& file,
                                                           const std::string& key) {
  if (n.is_integer()) return *n.value<int64_t>();
  if (n.is_floating_point()) return *n.value<double>();
  if (n.is_boolean()) return *n.value<bool>();
  if (n.is_string()) return *n.value<std::string>();
  throw ConfigError(format("{}: layer key '{}' must be a number, boolean or string, got {}", where(file, &n), key,
                           type_name(n)));
}

// [[model.layers]]: each entry keeps its own keys, which the model builder checks.
void read_layers(const Section& model, const toml::node& n, std::vector<LayerSpec>& out) {
  const std::string& file = model.file();
  const toml::array* arr = n.as_array();
  if (!arr) {
    model.fail("layers", n.is_integer() ? "must be an array of tables ([[model.layers]]); a gpt counts its "
                                          "transformer blocks with 'blocks'"
                                        : "must be an array of tables ([[model.layers]])");
  }
  for (const auto& e : *arr) {
    const toml::table* lt = e.as_table();
    if (!lt) throw ConfigError(format("{}: each [[model.layers]] entry must be a table", where(file, &e)));
    LayerSpec spec;
    spec.where = where(file, &e);
    for (const auto& [lk, lv] : *lt) {
      std::string key(lk.str());
      if (key == "type") {
        if (!lv.is_string()) throw ConfigError(format("{}: layer 'type' must be a string", where(file, &lv)));
        spec.type = *lv.value<std::string>();
      } else {
        spec.args[key] = layer_arg(lv, file, key);
      }
    }
    if (spec.type.empty()) throw ConfigError(format("{}: a [[model.layers]] entry has no 'type'", spec.where));
    out.push_back(std::move(spec));
  }
}

// Reads `n` into `out` or says which type the key wants. A named value (an
// enum: mode, optimizer and schedule name) is only type-checked here; its name
// is checked, and turned into the enum, with the section's ranges.
template <class T>
void read_value(const Section& s, const std::string& key, const toml::node& n, T& out) {
  auto fail = [&](const char* want) { s.fail(key, format("must be {}, got {}", want, type_name(n))); };
  if constexpr (std::is_same_v<T, bool>) {
    if (!n.is_boolean()) fail("a boolean (true/false)");
    out = *n.value<bool>();
  } else if constexpr (std::is_enum_v<T>) {
    if (!n.is_string()) fail("a string");
  } else if constexpr (std::is_integral_v<T>) {
    if (!n.is_integer()) fail("an integer");
    int64_t v = *n.value<int64_t>();
    if (std::is_unsigned_v<T> && v < 0) s.fail(key, format("must be >= 0, got {}", v));
    out = static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!n.is_number()) fail("a number");
    out = *n.value<double>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!n.is_string()) fail("a string");
    out = *n.value<std::string>();
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    const toml::array* arr = n.as_array();
    if (!arr) fail("an array of strings");
    out.clear();
    for (const auto& e : *arr) {
      if (!e.is_string()) fail("an array of strings");
      out.push_back(*e.value<std::string>());
    }
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    const toml::array* arr = n.as_array();
    if (!arr) fail("an array of integers");
    out.clear();
    for (const auto& e : *arr) {
      if (!e.is_integer()) fail("an array of integers");
      out.push_back(*e.value<int64_t>());
    }
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    const toml::array* arr = n.as_array();
    if (!arr) fail("an array of numbers");
    out.clear();
    for (const auto& e : *arr) {
      if (!e.is_number()) fail("an array of numbers");
      out.push_back(*e.value<double>());
    }
  } else {
    static_assert(std::is_same_v<T, std::vector<LayerSpec>>);
    read_layers(s, n, out);
  }
}

std::optional<optim::Rule> parse_name(std::string_view text, optim::Rule) { return optim::parse_rule(text); }
std::optional<optim::ScheduleKind> parse_name(std::string_view text, optim::ScheduleKind) {
  return optim::parse_schedule_kind(text);
}
std::optional<Mode> parse_name(std::string_view text, Mode) { return parse_mode(text); }
std::optional<PipelineSchedule> parse_name(std::string_view text, PipelineSchedule) {
  return parse_pipeline_schedule(text);
}

// --- The tables ---

// The values a key allows, checked once its whole section is read: a number
// for which `ok` holds, or a string (or enum) among `names`.
struct Allowed {
  bool (*ok)(double) = nullptr;
  const char* says = "";           // what `ok` wants, as "'key' <says>, got <value>"
  std::vector<std::string> names;  // empty: any string
};
const Allowed kPositive{[](double v) { return v > 0; }, "must be positive"};
const Allowed kPositiveFinite{[](double v) { return v > 0 && std::isfinite(v); }, "must be positive"};
const Allowed kAtLeast0{[](double v) { return v >= 0; }, "must be >= 0"};
const Allowed kAtLeast1{[](double v) { return v >= 1; }, "must be >= 1"};
const Allowed kFromZeroBelowOne{[](double v) { return v >= 0 && v < 1; }, "must be in [0, 1)"};
Allowed one_of(std::vector<std::string> names) {
  Allowed a;
  a.names = std::move(names);
  return a;
}

// Where a key's value goes: a member of the section's struct S.
template <class S>
using Member = std::variant<std::string S::*, int64_t S::*, uint64_t S::*, double S::*, bool S::*,
                            std::vector<double> S::*, std::vector<int64_t> S::*, std::vector<std::string> S::*,
                            std::vector<LayerSpec> S::*, optim::Rule S::*, optim::ScheduleKind S::*, Mode S::*,
                            PipelineSchedule S::*>;

template <class S>
struct Field {
  std::string key;
  Member<S> member;
  Allowed allowed = {};
};

// One [section]: its name, the struct it fills, its keys, and the checks that
// need several keys (run last; none: nullptr).
template <class S>
struct SectionTable {
  std::string name;
  S& (*of)(JobConfig&);
  std::vector<Field<S>> fields;
  void (*check)(const Section&, const JobConfig&) = nullptr;
};

template <class S, class T>
void check_value(const Section& s, const Field<S>& f, T& value) {
  if constexpr (std::is_enum_v<T>) {
    const toml::node* n = s.node(f.key);
    if (!n) return;  // the default
    const std::string text = *n->value<std::string>();
    require_one_of(s, f.key, text, f.allowed.names);
    value = *parse_name(text, value);
  } else if constexpr (std::is_arithmetic_v<T>) {
    if (f.allowed.ok && !f.allowed.ok(static_cast<double>(value))) {
      s.fail(f.key, format("{}, got {}", f.allowed.says, value));
    }
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!f.allowed.names.empty()) require_one_of(s, f.key, value, f.allowed.names);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!f.allowed.names.empty()) {
      for (const std::string& v : value) require_one_of(s, f.key, v, f.allowed.names);
    }
  }
}

// The generic reader: every key's type, then unknown keys, then every key's
// range, then the checks across keys. Absent keys keep JobConfig's defaults.
template <class S>
void read_section(const SectionTable<S>& table, const toml::table& root, JobConfig& job) {
  const Section s(subtable(root, table.name, job.path), table.name, job.path);
  S& out = table.of(job);
  std::vector<std::string> known;
  for (const Field<S>& f : table.fields) {
    known.push_back(f.key);
    if (const toml::node* n = s.node(f.key)) std::visit([&](auto m) { read_value(s, f.key, *n, out.*m); }, f.member);
  }
  s.reject_unknown(known);
  for (const Field<S>& f : table.fields) std::visit([&](auto m) { check_value(s, f, out.*m); }, f.member);
  if (table.check) table.check(s, job);
}

const std::vector<std::string> kZooModels = {"mlp", "cnn", "lenet", "resnet18", "gpt"};
const std::vector<std::string> kGptKeys = {"context", "blocks", "heads", "embed", "mlp_ratio", "dropout", "tied"};

// Keys that only one model or data set reads are refused for the others, so a misplaced key is not silently ignored.
void only_for(const Section& s, const std::vector<std::string>& keys, const std::string& condition) {
  for (const auto& k : keys) s.check(s.node(k) == nullptr, k, format("applies to {} only", condition));
}

void check_gpt(const Section& s, const ModelConfig& m) {
  s.check(m.context >= 1, "context", format("must be >= 1 for gpt, got {}", m.context));
  s.check(m.blocks >= 1, "blocks", format("must be >= 1 for gpt, got {}", m.blocks));
  s.check(m.embed >= 1, "embed", format("must be >= 1 for gpt, got {}", m.embed));
  s.check(m.heads >= 1 && m.embed % m.heads == 0, "heads",
          format("({}) must be >= 1 and divide embed ({})", m.heads, m.embed));
}

void check_model(const Section& s, const JobConfig& job) {
  const ModelConfig& m = job.model;
  if (m.name.empty() && m.layers.empty()) {
    throw ConfigError(format("{}: [model] needs 'name' ({}) or [[model.layers]]", s.file(), join(kZooModels)));
  }
  s.check(m.name.empty() || m.layers.empty(), "name", "and [[model.layers]] are both given; use one");
  if (!m.name.empty()) require_one_of(s, "name", m.name, kZooModels);
  if (m.name == "gpt") check_gpt(s, m);
  else only_for(s, kGptKeys, "name = \"gpt\"");
}

const SectionTable<ModelConfig> kModel{
    "model",
    [](JobConfig& j) -> ModelConfig& { return j.model; },
    {
        {"name", &ModelConfig::name},  // one of kZooModels, unless layers are given: check_model
        {"init_seed", &ModelConfig::init_seed},
        {"layers", &ModelConfig::layers},
        {"context", &ModelConfig::context},  // gpt's, with blocks, heads, embed: check_gpt
        {"blocks", &ModelConfig::blocks},
        {"heads", &ModelConfig::heads},
        {"embed", &ModelConfig::embed},
        {"mlp_ratio", &ModelConfig::mlp_ratio, kAtLeast1},
        {"dropout", &ModelConfig::dropout, kFromZeroBelowOne},
        {"tied", &ModelConfig::tied},
    },
    check_model,
};

// Language modelling: text data and the gpt model go together.
void check_text(const Section& s, const JobConfig& job) {
  const DataConfig& d = job.data;
  const bool text = d.dataset == "text", gpt = job.model.name == "gpt";
  if (!text) {
    s.check(!gpt, "dataset", format("is '{}', but [model] name = \"gpt\" needs dataset = \"text\"", d.dataset));
    return only_for(s, {"files", "context", "stride", "val_fraction"}, "dataset = \"text\"");
  }
  s.check(gpt, "dataset", "= \"text\" needs a language model: [model] name = \"gpt\"");
  for (const char* k : {"train_file", "test_file", "train_labels", "test_labels", "label_column", "augment", "mean", "std"}) {
    s.check(s.node(k) == nullptr, k, "does not apply to dataset = \"text\" (its keys: files, context, stride, val_fraction)");
  }
  s.check(!d.files.empty(), "files", "must list the corpus: files, folders or glob patterns");
  s.check(d.val_fraction > 0, "val_fraction", format("must be in (0, 1), got {}", d.val_fraction));
  s.check(d.context <= job.model.context, "context",
          format("({}) must not exceed [model] context ({})", d.context, job.model.context));
}

void check_data(const Section& s, const JobConfig& job) {
  s.check(job.data.mean.size() == job.data.std.size(), "std", "must have as many entries as 'mean'");
  for (double x : job.data.std) s.check(x > 0, "std", "entries must be positive");
  check_text(s, job);
}

const SectionTable<DataConfig> kData{
    "data",
    [](JobConfig& j) -> DataConfig& { return j.data; },
    {
        {"dataset", &DataConfig::dataset, one_of({"fashion-mnist", "idx", "csv", "text"})},
        {"root", &DataConfig::root},
        {"train_file", &DataConfig::train_file},
        {"test_file", &DataConfig::test_file},
        {"train_labels", &DataConfig::train_labels},
        {"test_labels", &DataConfig::test_labels},
        {"label_column", &DataConfig::label_column},
        {"batch_size", &DataConfig::batch_size, kPositive},
        {"test_batch_size", &DataConfig::test_batch_size, kPositive},
        {"shuffle", &DataConfig::shuffle},
        {"drop_last", &DataConfig::drop_last},
        {"num_workers", &DataConfig::num_workers, kAtLeast0},
        {"augment", &DataConfig::augment},
        {"mean", &DataConfig::mean},
        {"std", &DataConfig::std},
        {"files", &DataConfig::files},  // text's, with val_fraction > 0: check_text
        {"context", &DataConfig::context, kAtLeast0},
        {"stride", &DataConfig::stride, kAtLeast0},
        {"val_fraction", &DataConfig::val_fraction, kFromZeroBelowOne},
    },
    check_data,
};

void check_optimizer(const Section& s, const JobConfig& job) {
  const optim::OptimizerSpec& o = job.optimizer;
  s.check(!o.nesterov || o.rule != optim::Rule::Sgd || (o.momentum > 0 && o.dampening == 0), "nesterov",
          "needs momentum > 0 and dampening = 0");
}

const SectionTable<optim::OptimizerSpec> kOptimizer{
    "optimizer",
    [](JobConfig& j) -> optim::OptimizerSpec& { return j.optimizer; },
    {
        {"name", &optim::OptimizerSpec::rule, one_of(optim::rule_names())},
        {"lr", &optim::OptimizerSpec::lr, kPositiveFinite},
        {"momentum", &optim::OptimizerSpec::momentum, kAtLeast0},
        {"dampening", &optim::OptimizerSpec::dampening},
        {"nesterov", &optim::OptimizerSpec::nesterov},
        {"weight_decay", &optim::OptimizerSpec::weight_decay, kAtLeast0},
        {"beta1", &optim::OptimizerSpec::beta1, kFromZeroBelowOne},
        {"beta2", &optim::OptimizerSpec::beta2, kFromZeroBelowOne},
        {"eps", &optim::OptimizerSpec::eps, kAtLeast0},
        {"amsgrad", &optim::OptimizerSpec::amsgrad},
    },
    check_optimizer,
};

// [schedule] completes the optimizer spec: whatever a job file can say, the
// factory and the servers accept (what is left to check_spec: values that
// are not finite).
void check_schedule(const Section& s, const JobConfig& job) {
  try {
    optim::check_spec(job.optimizer);
  } catch (const ValueError& e) {
    throw ConfigError(format("{}: [optimizer] {}", s.file(), e.what()));
  }
}

const SectionTable<optim::ScheduleSpec> kSchedule{
    "schedule",
    [](JobConfig& j) -> optim::ScheduleSpec& { return j.optimizer.schedule; },
    {
        {"name", &optim::ScheduleSpec::kind, one_of(optim::schedule_names())},
        {"step_size", &optim::ScheduleSpec::step_size, kPositive},
        {"gamma", &optim::ScheduleSpec::gamma, kAtLeast0},
        {"min_lr", &optim::ScheduleSpec::min_lr, kAtLeast0},
        {"warmup_steps", &optim::ScheduleSpec::warmup_steps, kAtLeast0},
    },
    check_schedule,
};

const SectionTable<TrainConfig> kTrain{
    "train",
    [](JobConfig& j) -> TrainConfig& { return j.train; },
    {
        {"epochs", &TrainConfig::epochs, kAtLeast1},
        {"max_steps", &TrainConfig::max_steps, kAtLeast0},
        {"seed", &TrainConfig::seed},
        {"eval_interval", &TrainConfig::eval_interval, kAtLeast0},
        {"threads", &TrainConfig::threads, kAtLeast0},
        {"log_interval", &TrainConfig::log_interval, kAtLeast1},
        {"checkpoint_dir", &TrainConfig::checkpoint_dir},
        {"checkpoint_every", &TrainConfig::checkpoint_every, kAtLeast1},
        {"checkpoint_every_steps", &TrainConfig::checkpoint_every_steps, kAtLeast0},
        {"checkpoint_every_minutes", &TrainConfig::checkpoint_every_minutes, kAtLeast0},
        {"checkpoint_keep", &TrainConfig::checkpoint_keep, kAtLeast1},
        {"checkpoint_async", &TrainConfig::checkpoint_async},
        {"stop_signals", &TrainConfig::stop_signals, one_of(core::stop_signal_names())},
        {"stop_grace_s", &TrainConfig::stop_grace_s, kPositiveFinite},
        {"metrics_out", &TrainConfig::metrics_out},
        {"tensorboard_dir", &TrainConfig::tensorboard_dir},
        {"label_smoothing", &TrainConfig::label_smoothing, kFromZeroBelowOne},
        {"microbatches", &TrainConfig::microbatches, kAtLeast1},
        {"eval_timeout_s", &TrainConfig::eval_timeout_s, kPositiveFinite},
    },
};

void check_distributed(const Section& s, const JobConfig& job) {
  const DistributedConfig& d = job.distributed;
  const bool ps = uses_servers(d.mode);
  s.check(ps || d.servers == 0, "servers",
          format("parameter servers need mode = dist_sync, dist_async or dist_ssp (mode is \"{}\")", d.mode));
  s.check(d.replicas >= 0 && (d.replicas == 0 || d.servers == 0 || d.replicas < d.servers), "replicas",
          format("must be >= 0 and less than servers ({}), got {}", d.servers, d.replicas));
  s.check(!(d.deterministic && (d.mode == Mode::DistAsync || d.mode == Mode::DistSsp)), "deterministic",
          format("cannot hold with mode = \"{}\", which applies each push as it arrives (the weights depend on the "
                 "order pushes reach the servers): use allreduce, dist_sync or pipeline", d.mode));
  const bool pipeline = d.mode == Mode::Pipeline;
  s.check(!(pipeline && d.deterministic && s.node("deterministic_atoms") &&
            d.deterministic_atoms != d.data_parallel * job.train.microbatches),
          "deterministic_atoms", format("a deterministic pipeline's atoms are its data_parallel x [train] "
                                        "microbatches = {}: leave deterministic_atoms out or set it to that",
                                        d.data_parallel * job.train.microbatches));
  s.check(pipeline || !s.node("stages"), "stages", format("applies to mode = \"pipeline\" (mode is \"{}\")", d.mode));
  s.check(!pipeline || d.workers == 1 || d.workers == d.stages * d.data_parallel, "workers",
          format("a pipeline runs one process per stage and replica: leave workers out or set it to stages x "
                 "data_parallel = {}, got {}", d.stages * d.data_parallel, d.workers));
  s.check(d.bucket_mb > 0, "bucket_mb", "bucket sizes must be positive");
  s.check(d.first_bucket_mb > 0, "first_bucket_mb", "bucket sizes must be positive");
}

const SectionTable<DistributedConfig> kDistributed{
    "distributed",
    [](JobConfig& j) -> DistributedConfig& { return j.distributed; },
    {
        {"mode", &DistributedConfig::mode, one_of(mode_names())},
        {"workers", &DistributedConfig::workers, kAtLeast1},
        {"deterministic", &DistributedConfig::deterministic},
        {"deterministic_atoms", &DistributedConfig::deterministic_atoms, kAtLeast1},  // and <= 4096, workers | it: parallel::check_atoms
        {"transport", &DistributedConfig::transport, one_of({"auto", "zmq", "shm"})},
        {"algorithm", &DistributedConfig::algorithm,
         one_of({"auto", "ring", "halving_doubling", "tree", "hierarchical", "shm"})},
        {"bucket_mb", &DistributedConfig::bucket_mb},  // with first_bucket_mb: check_distributed
        {"first_bucket_mb", &DistributedConfig::first_bucket_mb},
        {"timeout_s", &DistributedConfig::timeout_s, kPositive},
        {"heartbeat_timeout_s", &DistributedConfig::heartbeat_timeout_s, kPositive},
        {"servers", &DistributedConfig::servers, kAtLeast0},
        {"staleness", &DistributedConfig::staleness, kAtLeast0},
        {"replicas", &DistributedConfig::replicas},  // against servers: check_distributed
        {"split_bound", &DistributedConfig::split_bound, kAtLeast1},
        {"stages", &DistributedConfig::stages, kAtLeast1},
        {"data_parallel", &DistributedConfig::data_parallel, kAtLeast1},
        {"schedule", &DistributedConfig::schedule, one_of(pipeline_schedule_names())},
        {"virtual_stages", &DistributedConfig::virtual_stages, kAtLeast1},  // with the schedule: pipeline::check_schedule_options
        {"placement", &DistributedConfig::placement},  // against the model's layers: pipeline::cut_at
        {"balance", &DistributedConfig::balance, one_of({"parameters", "time"})},
        {"recompute", &DistributedConfig::recompute},
    },
    check_distributed,
};

// Reads the sections in order, after refusing any table the job file may not have.
template <class... S>
void read_sections(const toml::table& root, JobConfig& job, const SectionTable<S>&... tables) {
  const std::vector<std::string> names = {tables.name...};
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    if (std::find(names.begin(), names.end(), key) != names.end()) continue;
    auto hint = closest_name(key, names);
    throw ConfigError(format("{}: unknown section [{}]{}", where(job.path, &v), key,
                             hint ? format(" (did you mean [{}]?)", *hint) : std::string()));
  }
  (read_section(tables, root, job), ...);
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
  read_sections(root, job, kModel, kData, kOptimizer, kSchedule, kTrain, kDistributed);
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
