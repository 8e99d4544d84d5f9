// How long a training step is stalled by a checkpoint: synchronous
// (CheckpointManager::save inside the step) against asynchronous (the step
// copies the state with io::snapshot and hands it to an
// io::AsyncCheckpointWriter, which writes and fsyncs in the background),
// with a run that never checkpoints as the baseline.
//
//   build/bench/checkpoint_stall [--state cnn|large|both] [--steps 60] [--every 10] [--warmup 3]
//                                [--threads 2] [--rounds 1] [--dir /var/tmp] [--job examples/fashion_mnist/cnn.toml]
//                                [--snapshot all|model]
//
// States: `cnn` is the Fashion-MNIST CNN built from the job file (as `loom
// train` builds it) with Adam's state (two slots a parameter, ~39 MB in all);
// `large` is an MLP 784-2048-2048-1280-10 with Adam (~101 MB). Each step is
// real training (forward, cross-entropy, backward, Adam) on a fixed random
// batch; every `--every` steps the step also checkpoints what the Trainer
// saves: "model." + the state dict and "optim." + the optimizer's state
// (Optimizer::state_snapshot, a copy in both modes). Async snapshots all of it
// as Trainer::write_checkpoint does (--snapshot model: the model's tensors
// only, the optimizer's copy is handed over as is). The files go to a fresh
// directory under --dir (keep_last 2), on the real disk: fsync included.
//
// Per state and mode one JSON line, then a table. Each checkpoint is measured
// against the median of the 5 steps before it that had neither a checkpoint
// nor a write in flight (the load of a shared machine drifts): the extra time
// of its step, and for async the extra time of the following steps that began
// while its write was in flight (the write competes with training for the
// cores); "whole" is their sum. Also the median step without either, and the
// total run time (async: until the last write is on disk) and its ratio to
// the run without checkpoints of the same round. Modes run in turn, rotated
// each round; steps of all rounds are pooled, totals are medians over rounds.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loom/autograd/engine.h"
#include "loom/core/parallel.h"
#include "loom/io/async_checkpoint.h"
#include "loom/io/config.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/optim/optim.h"
#include "loom/train/zoo.h"

using namespace loom;
using core::Tensor;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string state = "both";
  int steps = 60;
  int every = 10;
  int warmup = 3;
  int threads = 2;
  int rounds = 1;
  int64_t batch = 128;
  fs::path dir = "/var/tmp";
  std::string job = "examples/fashion_mnist/cnn.toml";
  std::string snapshot = "all";  // async: what io::snapshot copies (model: the optimizer's state is a copy already)
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      LOOM_CHECK(i + 1 < argc, "checkpoint_stall: {} needs a value", k);
      return argv[++i];
    };
    if (k == "--state") a.state = next();
    else if (k == "--steps") a.steps = std::stoi(next());
    else if (k == "--every") a.every = std::stoi(next());
    else if (k == "--warmup") a.warmup = std::stoi(next());
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (k == "--rounds") a.rounds = std::stoi(next());
    else if (k == "--batch") a.batch = std::stoll(next());
    else if (k == "--dir") a.dir = next();
    else if (k == "--job") a.job = next();
    else if (k == "--snapshot") a.snapshot = next();
    else if (k == "--help" || k == "-h") {
      std::printf("usage: checkpoint_stall [--state cnn|large|both] [--steps N] [--every K] [--warmup W] "
                  "[--threads T] [--rounds R] [--batch B] [--dir PATH] [--job FILE] [--snapshot all|model]\n");
      std::exit(0);
    } else {
      throw ValueError(format("checkpoint_stall: unknown argument '{}' (see --help)", k));
    }
  }
  LOOM_CHECK(a.state == "cnn" || a.state == "large" || a.state == "both",
             "checkpoint_stall: --state must be cnn, large or both, got '{}'", a.state);
  LOOM_CHECK(a.snapshot == "all" || a.snapshot == "model", "checkpoint_stall: --snapshot must be all or model, got '{}'",
             a.snapshot);
  LOOM_CHECK(a.steps >= 1 && a.every >= 1 && a.rounds >= 1 && a.warmup >= 1,
             "checkpoint_stall: --steps, --every, --rounds and --warmup must be >= 1 (Adam's state exists after a step)");
  return a;
}

enum class Mode { None, Sync, Async };
const char* name(Mode m) { return m == Mode::None ? "none" : m == Mode::Sync ? "sync" : "async"; }

// A model, Adam over it, and a fixed random batch.
struct Setup {
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::Optimizer> opt;
  Tensor x, y;
};

Setup make_setup(const std::string& state, const Args& args) {
  Setup s;
  optim::OptimizerSpec spec{.rule = optim::Rule::Adam, .lr = 1e-3};
  if (state == "cnn") {
    // The job file's model, as `loom train` builds it; Adam instead of its SGD (more state to save).
    io::JobConfig job = io::load_job_file(args.job, {"optimizer.name=adam", "optimizer.lr=0.001"});
    s.model = train::build_model(job.model, {1, 28, 28}, 10);
    spec = job.optimizer;
  } else {
    s.model = std::make_shared<nn::Sequential>(
        nn::Flatten(), nn::Linear({.in = 784, .out = 2048, .seed = 1}), nn::ReLU(),
        nn::Linear({.in = 2048, .out = 2048, .seed = 2}), nn::ReLU(), nn::Linear({.in = 2048, .out = 1280, .seed = 3}),
        nn::ReLU(), nn::Linear({.in = 1280, .out = 10, .seed = 4}));
  }
  s.opt = std::make_unique<optim::Optimizer>(optim::make_optimizer(s.model->named_parameters(), spec));
  core::Generator gen(0);
  s.x = ops::randn({args.batch, 1, 28, 28}, gen);
  s.y = ops::to_dtype(ops::mul(ops::rand({args.batch}, gen), 10.0), core::DType::I64);
  return s;
}

void train_step(Setup& s) {
  s.opt->zero_grad();
  Tensor loss = ops::cross_entropy((*s.model)(s.x), s.y);
  autograd::backward(loss);
  s.opt->step();
}

// What Trainer::checkpoint_tensors saves; the model's tensors are live, the optimizer's a copy.
io::NamedTensors model_tensors(const Setup& s) {
  io::NamedTensors out;
  for (const auto& [n, t] : s.model->state_dict()) out.emplace_back("model." + n, t);
  return out;
}
io::NamedTensors optimizer_tensors(const Setup& s) {
  io::NamedTensors out;
  for (const auto& [n, t] : optim::to_state_dict(s.opt->state_layout(), s.opt->state_snapshot())) {
    out.emplace_back("optim." + n, t);
  }
  return out;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

struct StepRecord {
  double ms = 0;
  bool checkpoint = false;
  bool overlapped = false;  // async: a write was in flight when the step began
  double snapshot_ms = 0;   // async: io::snapshot inside the step
};

struct RunResult {
  std::vector<StepRecord> steps;
  double total_s = 0;        // first timed step to the last checkpoint on disk
  double final_wait_ms = 0;  // async: writer.wait() after the last step
  uint64_t state_nbytes = 0;
  size_t checkpoints = 0;
};

RunResult run(const std::string& state, Mode mode, const Args& args, const fs::path& dir) {
  Setup s = make_setup(state, args);
  for (int i = 0; i < args.warmup; ++i) train_step(s);
  RunResult r;
  for (const auto& [n, t] : model_tensors(s)) r.state_nbytes += t.nbytes();
  for (const auto& [n, t] : optimizer_tensors(s)) r.state_nbytes += t.nbytes();

  fs::remove_all(dir);
  io::CheckpointManager manager(dir, {.keep_last = 2});
  io::AsyncCheckpointWriter writer(manager);
  const auto t_begin = Clock::now();
  for (int step = 1; step <= args.steps; ++step) {
    StepRecord rec;
    rec.overlapped = mode == Mode::Async && writer.busy();
    const auto t0 = Clock::now();
    train_step(s);
    if (mode != Mode::None && step % args.every == 0) {
      rec.checkpoint = true;
      const io::Metadata meta{{"format", "pt"}, {"loom.step", std::to_string(step)}};
      io::NamedTensors tensors;
      if (mode == Mode::Sync) {
        tensors = model_tensors(s);
        for (auto& e : optimizer_tensors(s)) tensors.push_back(std::move(e));
        manager.save(step, tensors, meta);
      } else {
        tensors = model_tensors(s);
        io::NamedTensors optim_state = optimizer_tensors(s);  // a copy already
        if (args.snapshot == "all") {  // as Trainer::write_checkpoint: everything, the optimizer's copy again
          for (auto& e : optim_state) tensors.push_back(std::move(e));
        }
        const auto ts = Clock::now();
        tensors = io::snapshot(tensors);
        rec.snapshot_ms = ms_since(ts);
        if (args.snapshot == "model") {
          for (auto& e : optim_state) tensors.push_back(std::move(e));
        }
        writer.submit(step, std::move(tensors), meta);
      }
      ++r.checkpoints;
    }
    rec.ms = ms_since(t0);
    r.steps.push_back(rec);
  }
  const auto tw = Clock::now();
  writer.wait();
  r.final_wait_ms = ms_since(tw);
  r.total_s = ms_since(t_begin) / 1e3;
  fs::remove_all(dir);
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// What one checkpoint cost the training thread, against the steps just
// before it: the load of a shared machine drifts during a run, and a
// run-wide median would charge that drift to the checkpoints.
struct CheckpointCost {
  double step_extra_ms = 0;     // the checkpointing step over the baseline
  int overlapped_steps = 0;     // async: steps after it that began while its write was in flight
  double overlap_extra_ms = 0;  // their time over the baseline (the write competing for the CPU)
  double snapshot_ms = 0;
};

// The median of the (up to) 5 latest steps before `i` without a checkpoint or a write in flight.
double baseline(const std::vector<StepRecord>& steps, size_t i, double fallback) {
  std::vector<double> before;
  for (size_t j = i; j-- > 0 && before.size() < 5;) {
    if (!steps[j].checkpoint && !steps[j].overlapped) before.push_back(steps[j].ms);
  }
  return before.empty() ? fallback : median(before);
}

std::vector<double> quiet_steps(const RunResult& r) {
  std::vector<double> out;
  for (const auto& st : r.steps) {
    if (!st.checkpoint && !st.overlapped) out.push_back(st.ms);
  }
  return out;
}

std::vector<CheckpointCost> checkpoint_costs(const RunResult& r) {
  const double fallback = median(quiet_steps(r));
  std::vector<CheckpointCost> out;
  for (size_t i = 0; i < r.steps.size(); ++i) {
    if (!r.steps[i].checkpoint) continue;
    const double base = baseline(r.steps, i, fallback);
    CheckpointCost c{.step_extra_ms = r.steps[i].ms - base, .snapshot_ms = r.steps[i].snapshot_ms};
    for (size_t j = i + 1; j < r.steps.size() && r.steps[j].overlapped && !r.steps[j].checkpoint; ++j) {
      ++c.overlapped_steps;
      c.overlap_extra_ms += r.steps[j].ms - base;
    }
    out.push_back(c);
  }
  return out;
}

struct Summary {
  double step_median_ms = 0;  // steps without a checkpoint or a write in flight
  double ckpt_extra_median_ms = 0;
  double ckpt_extra_max_ms = 0;
  double snapshot_median_ms = 0;
  double overlapped_steps_median = 0;
  double overlap_extra_median_ms = 0;
  double whole_extra_median_ms = 0;  // step_extra + overlap_extra, per checkpoint
  double whole_extra_max_ms = 0;
  size_t checkpoints = 0;
  size_t steps = 0;
  double total_s = 0;         // median over rounds
  double total_vs_none = 0;   // median over rounds of total / the same round's run without checkpoints
  double final_wait_ms = 0;
  uint64_t state_nbytes = 0;
};

Summary summarize(const std::vector<RunResult>& runs, const std::vector<RunResult>& none_runs) {
  Summary s;
  std::vector<double> quiet, extra, snap, overlapped, overlap_extra, whole, totals, ratios, waits;
  for (size_t k = 0; k < runs.size(); ++k) {
    const RunResult& r = runs[k];
    for (double ms : quiet_steps(r)) quiet.push_back(ms);
    for (const CheckpointCost& c : checkpoint_costs(r)) {
      extra.push_back(c.step_extra_ms);
      snap.push_back(c.snapshot_ms);
      overlapped.push_back(c.overlapped_steps);
      overlap_extra.push_back(c.overlap_extra_ms);
      whole.push_back(c.step_extra_ms + c.overlap_extra_ms);
    }
    totals.push_back(r.total_s);
    ratios.push_back(r.total_s / none_runs[k].total_s);
    waits.push_back(r.final_wait_ms);
    s.checkpoints += r.checkpoints;
    s.steps += r.steps.size();
    s.state_nbytes = r.state_nbytes;
  }
  auto max_of = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  s.step_median_ms = median(quiet);
  s.ckpt_extra_median_ms = median(extra);
  s.ckpt_extra_max_ms = max_of(extra);
  s.snapshot_median_ms = median(snap);
  s.overlapped_steps_median = median(overlapped);
  s.overlap_extra_median_ms = median(overlap_extra);
  s.whole_extra_median_ms = median(whole);
  s.whole_extra_max_ms = max_of(whole);
  s.total_s = median(totals);
  s.total_vs_none = median(ratios);
  s.final_wait_ms = median(waits);
  return s;
}

std::string ms_pair(double a, double b) { return format("{} / {}", static_cast<int>(a + 0.5), static_cast<int>(b + 0.5)); }

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  core::set_num_threads(args.threads);
  const fs::path root = args.dir / ("loom_checkpoint_stall_" + std::to_string(::getpid()));
  std::vector<std::string> states;
  if (args.state != "large") states.push_back("cnn");
  if (args.state != "cnn") states.push_back("large");
  const std::vector<Mode> modes{Mode::None, Mode::Sync, Mode::Async};

  std::vector<std::pair<std::string, std::map<Mode, Summary>>> table;
  for (const auto& state : states) {
    std::map<Mode, std::vector<RunResult>> results;
    for (int round = 0; round < args.rounds; ++round) {
      for (size_t k = 0; k < modes.size(); ++k) {
        const Mode mode = modes[(k + static_cast<size_t>(round)) % modes.size()];
        results[mode].push_back(run(state, mode, args, root / name(mode)));
      }
    }
    auto& row = table.emplace_back(state, std::map<Mode, Summary>{});
    for (Mode mode : modes) {
      const Summary s = summarize(results[mode], results[Mode::None]);
      row.second[mode] = s;
      std::printf("{\"bench\": \"checkpoint_stall\", \"state\": \"%s\", \"mode\": \"%s\", \"state_mb\": %.1f, "
                  "\"threads\": %d, \"batch\": %lld, \"snapshot\": \"%s\", \"steps\": %zu, \"checkpoints\": %zu, "
                  "\"every\": %d, \"rounds\": %d, \"step_ms_median\": %.2f, \"ckpt_extra_ms_median\": %.2f, "
                  "\"ckpt_extra_ms_max\": %.2f, \"snapshot_ms_median\": %.2f, \"overlapped_steps_median\": %.1f, "
                  "\"overlap_extra_ms_median\": %.2f, \"whole_extra_ms_median\": %.2f, \"whole_extra_ms_max\": %.2f, "
                  "\"final_wait_ms\": %.2f, \"total_s\": %.3f, \"total_vs_none\": %.3f}\n",
                  state.c_str(), name(mode), static_cast<double>(s.state_nbytes) / 1e6, args.threads,
                  static_cast<long long>(args.batch), args.snapshot.c_str(), s.steps, s.checkpoints, args.every,
                  args.rounds, s.step_median_ms, s.ckpt_extra_median_ms, s.ckpt_extra_max_ms, s.snapshot_median_ms,
                  s.overlapped_steps_median, s.overlap_extra_median_ms, s.whole_extra_median_ms, s.whole_extra_max_ms,
                  s.final_wait_ms, s.total_s, s.total_vs_none);
      std::fflush(stdout);
    }
  }
  std::error_code ec;
  fs::remove_all(root, ec);

  std::printf("\n| state | MB | mode | step ms | checkpoint step: extra ms (median / max) | of which snapshot ms | "
              "later steps during the write: n, extra ms | whole extra ms a checkpoint (median / max) | total s | "
              "total / none |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& [state, row] : table) {
    for (const auto& [mode, s] : row) {
      const bool ckpt = mode != Mode::None, async = mode == Mode::Async;
      std::printf("| %s | %.1f | %s | %.1f | %s | %s | %s | %s | %.2f | %.3f |\n", state.c_str(),
                  static_cast<double>(s.state_nbytes) / 1e6, name(mode), s.step_median_ms,
                  ckpt ? ms_pair(s.ckpt_extra_median_ms, s.ckpt_extra_max_ms).c_str() : "-",
                  async ? format("{}", static_cast<int>(s.snapshot_median_ms + 0.5)).c_str() : "-",
                  async ? format("{}, {}", s.overlapped_steps_median, static_cast<int>(s.overlap_extra_median_ms + 0.5)).c_str()
                        : "-",
                  ckpt ? ms_pair(s.whole_extra_median_ms, s.whole_extra_max_ms).c_str() : "-", s.total_s,
                  s.total_vs_none);
    }
    const Summary& sy = row.at(Mode::Sync);
    const Summary& as = row.at(Mode::Async);
    std::printf("| %s | | sync / async | | %.1fx | | | %.1fx | | |\n", state.c_str(),
                sy.ckpt_extra_median_ms / as.ckpt_extra_median_ms, sy.whole_extra_median_ms / as.whole_extra_median_ms);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "checkpoint_stall: %s\n", e.what());
  return 1;
}
