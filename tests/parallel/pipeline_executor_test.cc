// run_rank (parallel/pipeline/executor.h) over InProcessLinks, one thread a rank: payloads reach the right
// action, every schedule finishes with fewer micro-batches than stages, receives time out naming the peer,
// and stages that sleep a set time per action show each schedule's bubble within 0.05 of its formula.
#include "loom/parallel/pipeline/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <latch>
#include <set>
#include <thread>

#include "loom/core/error.h"
#include "loom/parallel/pipeline/in_process_links.h"
#include "loom/parallel/pipeline/simulate.h"

namespace loom::parallel::pipeline {
namespace {

using io::PipelineSchedule;
using Clock = std::chrono::steady_clock;

// Runs every rank of `plan` on its own thread; the first error of any rank is rethrown.
template <class MakeWork>
void run_all(const Plan& plan, MakeWork make_work, Clock::duration timeout = std::chrono::seconds(20)) {
  const int p = plan.options.stages;
  InProcessLinks links(p);
  std::vector<std::exception_ptr> errors(p);
  std::vector<std::thread> threads;
  const Deadline deadline = Clock::now() + timeout;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      try {
        run_rank(plan, r, make_work(r), links.rank(r), deadline);
      } catch (const std::exception& e) {
        errors[r] = std::current_exception();
        links.abort(format("rank {} failed: {}", r, e.what()));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Checks each payload: an activation carries 1000 c + i of the chunk c that made it, a gradient -(1000 c + i) - 1.
class TracingWork : public StageWork {
 public:
  explicit TracingWork(int last_chunk) : last_(last_chunk) {}
  core::Tensor forward(int c, int i, core::Tensor in) override {
    if (c == 0) {
      EXPECT_FALSE(in.defined());
    } else {
      EXPECT_TRUE(in.defined() && in.item<double>() == 1000.0 * (c - 1) + i) << "forward c " << c << " mb " << i;
    }
    EXPECT_TRUE(forwards.insert({c, i}).second);
    return core::Tensor::scalar<double>(1000.0 * c + i);
  }
  core::Tensor backward(int c, int i, core::Tensor g) override {
    check_gradient(c, i, g);
    EXPECT_TRUE(backwards.insert({c, i}).second);
    EXPECT_TRUE(weights.insert({c, i}).second);
    return core::Tensor::scalar<double>(-(1000.0 * c + i) - 1);
  }
  core::Tensor backward_input(int c, int i, core::Tensor g) override {
    check_gradient(c, i, g);
    EXPECT_TRUE(backwards.insert({c, i}).second);
    return core::Tensor::scalar<double>(-(1000.0 * c + i) - 1);
  }
  void backward_weight(int c, int i) override {
    EXPECT_TRUE(backwards.count({c, i})) << "W before Bi, c " << c << " mb " << i;
    EXPECT_TRUE(weights.insert({c, i}).second);
  }
  void recompute(int c, int i) override {
    EXPECT_TRUE(forwards.count({c, i}) && !backwards.count({c, i})) << "R outside F..B, c " << c << " mb " << i;
    EXPECT_TRUE(recomputed.insert({c, i}).second);
  }
  std::set<std::pair<int, int>> forwards, backwards, weights, recomputed;

 private:
  void check_gradient(int c, int i, const core::Tensor& g) {
    EXPECT_TRUE(forwards.count({c, i})) << "B before F, c " << c << " mb " << i;
    if (c == last_) {
      EXPECT_FALSE(g.defined());
    } else {
      EXPECT_TRUE(g.defined() && g.item<double>() == -(1000.0 * (c + 1) + i) - 1) << "backward c " << c << " mb " << i;
    }
  }
  int last_;
};

void run_traced(const ScheduleOptions& o) {
  const Plan plan = compile_schedule(o);
  std::vector<std::unique_ptr<TracingWork>> work;
  for (int r = 0; r < o.stages; ++r) work.push_back(std::make_unique<TracingWork>(plan.num_chunks() - 1));
  run_all(plan, [&](int r) -> StageWork& { return *work[r]; });
  for (int r = 0; r < o.stages; ++r) {
    const size_t expected = static_cast<size_t>(o.microbatches * o.virtual_stages);
    EXPECT_EQ(work[r]->forwards.size(), expected) << io::name(o.kind) << " rank " << r;
    EXPECT_EQ(work[r]->backwards.size(), expected) << io::name(o.kind) << " rank " << r;
    EXPECT_EQ(work[r]->weights.size(), expected) << io::name(o.kind) << " rank " << r;
    size_t recomputed = 0;
    for (int c = r; c < plan.num_chunks(); c += o.stages) recomputed += plan.recomputes(c) ? o.microbatches : 0;
    EXPECT_EQ(work[r]->recomputed.size(), recomputed) << io::name(o.kind) << " rank " << r;
  }
}

TEST(PipelineExecutor, PayloadsReachTheirActions) {
  for (PipelineSchedule kind : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB, PipelineSchedule::ZbH1}) {
    for (int p : {1, 2, 3, 4}) run_traced({.kind = kind, .stages = p, .microbatches = 5});
  }
  // Recomputation on every other chunk.
  run_traced({.kind = PipelineSchedule::ZbH1, .stages = 4, .microbatches = 6, .recompute = {true, false, true, false}});
  run_traced({.kind = PipelineSchedule::Interleaved, .stages = 2, .microbatches = 4, .virtual_stages = 2,
              .recompute = {false, true, true, false}});
  for (int p : {1, 2, 4}) {
    for (int v : {2, 3}) {
      run_traced({.kind = PipelineSchedule::Interleaved, .stages = p, .microbatches = 2 * p, .virtual_stages = v});
    }
  }
}

// A known failure elsewhere: fewer micro-batches than stages hangs. Every schedule that allows it finishes.
TEST(PipelineExecutor, FewerMicrobatchesThanStagesFinish) {
  for (PipelineSchedule kind : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB, PipelineSchedule::ZbH1}) {
    for (int p : {2, 4, 8}) {
      for (int m = 1; m < p; ++m) run_traced({.kind = kind, .stages = p, .microbatches = m});
    }
  }
  // Interleaved needs m a multiple of p, so m < p is refused with the rule, not run.
  EXPECT_THROW(
      compile_schedule({.kind = PipelineSchedule::Interleaved, .stages = 4, .microbatches = 2, .virtual_stages = 2}),
      ConfigError);
}

TEST(PipelineExecutor, ReceiveTimesOutNamingThePeer) {
  const Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 1});
  InProcessLinks links(2);
  TracingWork work(1);
  try {
    run_rank(plan, 1, work, links.rank(1), Clock::now() + std::chrono::milliseconds(50));  // rank 0 never runs
    ADD_FAILURE() << "no timeout";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "rank 1 waited for the activation of micro-batch 0 for chunk 1 from rank 0 past its deadline"),
              std::string::npos)
        << e.what();
  }
}

TEST(PipelineExecutor, AStageThatCannotRecomputeSaysSo) {
  struct NoRecompute : StageWork {
    core::Tensor forward(int, int, core::Tensor) override { return {}; }
    core::Tensor backward(int, int, core::Tensor) override { return {}; }
    core::Tensor backward_input(int, int, core::Tensor) override { return {}; }
    void backward_weight(int, int) override {}
  } work;
  const Plan plan =
      compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 1, .microbatches = 1, .recompute = {true}});
  InProcessLinks links(1);
  try {
    run_rank(plan, 0, work, links.rank(0), Clock::now() + std::chrono::seconds(1));
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("this stage cannot recompute activations (chunk 0, micro-batch 0)"),
              std::string::npos)
        << e.what();
  }
}

TEST(PipelineExecutor, AFailedRankStopsTheOthers) {
  const Plan plan = compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = 3, .microbatches = 4});
  struct Failing : TracingWork {
    using TracingWork::TracingWork;
    core::Tensor forward(int c, int i, core::Tensor in) override {
      if (c == 1 && i == 2) throw ValueError("stage 1 broke");
      return TracingWork::forward(c, i, std::move(in));
    }
  };
  std::vector<std::unique_ptr<Failing>> work;
  for (int r = 0; r < 3; ++r) work.push_back(std::make_unique<Failing>(2));
  const auto start = Clock::now();
  EXPECT_THROW(run_all(plan, [&](int r) -> StageWork& { return *work[r]; }, std::chrono::seconds(30)), Error);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));  // aborted, not left to the deadline
}

// ---- The sleeping harness --------------------------------------------------------------------------------
// Each action sleeps: F, Bi and W one unit each, a full B two (B = 2F, the formulas' assumption). Busy time
// is measured around each sleep (so a late wake-up counts as work, not as bubble); a rank's idle time is the
// step's wall time minus its busy time. Units scale so each rank has ~480 ms of work (4 ms at least): a thread
// woken late on a loaded machine adds idle time, a fixed amount per hand-over, which more work dilutes.

class SleepingWork : public StageWork {
 public:
  explicit SleepingWork(Clock::duration unit) : unit_(unit) {}
  core::Tensor forward(int, int, core::Tensor) override { return sleep(1); }
  core::Tensor backward(int, int, core::Tensor) override { return sleep(2); }
  core::Tensor backward_input(int, int, core::Tensor) override { return sleep(1); }
  void backward_weight(int, int) override { sleep(1); }
  void recompute(int, int) override { sleep(1); }
  Clock::duration busy{};
  Clock::time_point first{Clock::time_point::max()}, last{};

 private:
  core::Tensor sleep(int units) {
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(unit_ * units);
    const auto t1 = Clock::now();
    busy += t1 - t0;
    last = t1;
    return {};
  }
  Clock::duration unit_;
};

struct Timed {
  double makespan = 0;
  std::vector<double> busy;
};

Timed run_sleeping(const Plan& plan, Clock::duration unit) {
  const int p = plan.options.stages;
  InProcessLinks links(p);
  std::vector<SleepingWork> work(p, SleepingWork(unit));
  std::vector<Clock::time_point> begin(p);
  std::latch ready(p);
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      ready.arrive_and_wait();
      begin[r] = Clock::now();
      run_rank(plan, r, work[r], links.rank(r), begin[r] + std::chrono::seconds(30));
    });
  }
  for (auto& t : threads) t.join();
  const Clock::time_point start = *std::min_element(begin.begin(), begin.end());
  Clock::time_point end = start;
  for (const auto& w : work) end = std::max(end, w.last);
  Timed out;
  out.makespan = std::chrono::duration<double>(end - start).count();
  for (const auto& w : work) out.busy.push_back(std::chrono::duration<double>(w.busy).count());
  return out;
}

// The issue's formula for each schedule (ZB-H1: "about (p-1)/(3m)").
double issue_formula(const ScheduleOptions& o) {
  const double p = o.stages, m = o.microbatches, v = o.virtual_stages;
  switch (o.kind) {
    case PipelineSchedule::GPipe: return (p - 1) / (m + p - 1);
    case PipelineSchedule::OneFOneB: return (p - 1) / m;
    case PipelineSchedule::Interleaved: return (p - 1) / (v * m);
    case PipelineSchedule::ZbH1: return (p - 1) / (3 * m);
  }
  return 0;
}

TEST(PipelineHarness, MeasuredBubbleMatchesTheFormula) {
  constexpr double kTolerance = 0.05;  // absolute, in the formula's own normalisation (simulate.h)
  std::vector<ScheduleOptions> cases;
  for (PipelineSchedule kind : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB, PipelineSchedule::Interleaved,
                                PipelineSchedule::ZbH1}) {
    for (int p : {2, 4}) {
      for (int m : {1, 2, 4, 8, 16}) {
        const int v = kind == PipelineSchedule::Interleaved ? 2 : 1;
        if (kind == PipelineSchedule::Interleaved && m % p != 0) continue;  // refused: m a multiple of p
        cases.push_back({.kind = kind, .stages = p, .microbatches = m, .virtual_stages = v});
      }
    }
  }
  std::printf("%-12s %2s %3s %2s %8s %8s %8s %8s %9s\n", "schedule", "p", "m", "v", "issue", "formula", "simulated",
              "measured", "wall ms");
  for (const ScheduleOptions& o : cases) {
    const Plan plan = compile_schedule(o);
    const BubbleFormula f = bubble_formula(o);
    const double simulated = simulate(plan).bubble(f.normalisation);
    const auto unit = std::max<Clock::duration>(
        std::chrono::milliseconds(4), std::chrono::microseconds(480000 / (3 * o.microbatches * o.virtual_stages)));
    Timed t = run_sleeping(plan, unit);
    double measured = bubble_of(t.makespan, t.busy, f.normalisation);
    if (std::abs(measured - f.value) > kTolerance) {  // once more: a loaded machine can wake a thread late
      std::printf("  retry: measured %.4f against %.4f\n", measured, f.value);
      t = run_sleeping(plan, unit);
      measured = bubble_of(t.makespan, t.busy, f.normalisation);
    }
    std::printf("%-12s %2d %3d %2d %8.4f %8.4f %9.4f %8.4f %9.0f\n", std::string(io::name(o.kind)).c_str(), o.stages,
                o.microbatches, o.virtual_stages, issue_formula(o), f.value, simulated, measured, t.makespan * 1000);
    EXPECT_NEAR(simulated, f.value, 1e-12);
    EXPECT_NEAR(measured, f.value, kTolerance) << io::name(o.kind) << " p " << o.stages << " m " << o.microbatches;
    // ZB-H1's (p-1)/(3m) is the formula for m >= p; below it bubble_formula gives the exact (2p-m-1)/(3m).
    if (o.kind != PipelineSchedule::ZbH1 || o.microbatches >= o.stages) {
      EXPECT_DOUBLE_EQ(f.value, issue_formula(o));
    }
  }
}

}  // namespace
}  // namespace loom::parallel::pipeline
