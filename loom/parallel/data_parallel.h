// Synchronous data parallelism over all-reduce, as PyTorch DDP / Horovod do it:
// every worker holds a full replica, computes gradients on its share of the
// batch, and the gradients are summed across workers before the optimizer step.
//
//   // given: nn::Module& model, optim::Optimizer& opt, Tensor loss_scaled, Tensor loss, comm::Communicator& comm
//   parallel::DataParallel dp(model, comm, {.bucket_bytes = 25 << 20});   // broadcasts rank 0's weights
//   for (int64_t step = 0; step < 1000; ++step) {
//     opt.zero_grad();
//     autograd::backward(loss_scaled);   // buckets start all-reducing from the gradient hooks
//     dp.finish_gradient_sync();         // waits; every rank now holds the same summed gradients
//     opt.step();
//   }
//   { auto no_sync = dp.no_sync(); autograd::backward(loss); }   // accumulate locally, sync later
//
// Buckets: parameters are grouped in reverse registration order (the order
// backward finishes them) into flat buffers of at most bucket_bytes (the first
// bucket: first_bucket_bytes, so communication starts early). Each parameter's
// .grad is a view into its bucket, so backward writes straight into the buffer
// that goes on the wire: no copies. When every gradient of a bucket is final,
// the bucket is queued to a communication thread, which all-reduces buckets in
// index order (the same order on every rank) while backward continues.
//
// The reduction is a sum: scale the loss by (local batch / global batch) to get
// the global-batch mean (Trainer does). With `.deterministic`, gradients are
// summed in 64-bit fixed point, which is associative: the result is bitwise the
// same for any number of workers and any all-reduce algorithm, as long as the
// gradients added (one per atom of the batch) are the same (see
// DataParallelStrategy and docs/ARCHITECTURE.md, "Data parallelism").
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/collectives/communicator.h"
#include "loom/nn/module.h"
#include "loom/ops/math.h"
#include "loom/parallel/weight_factors.h"

namespace loom::parallel {

struct DataParallelOptions {
  size_t bucket_bytes = 25u << 20;
  size_t first_bucket_bytes = 1u << 20;
  bool broadcast_parameters = true;  // make every replica start from rank 0's weights and buffers
  comm::Algorithm algorithm = comm::Algorithm::Auto;
  std::chrono::milliseconds timeout{60000};
  // Sums the gradients of each atom in 64-bit fixed point
  // (accumulate_fixed_point) and all-reduces the integers: bitwise the same
  // for any world size. The strategy that owns determinism sets it
  // (parallel::DataParallelStrategy).
  bool deterministic = false;
};

class DataParallel {
 public:
  DataParallel(nn::Module& model, comm::Communicator& comm, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Waits until every bucket of this backward pass is all-reduced (buckets
  // whose parameters got no gradient are reduced too, as zeros) and rethrows a
  // communication error (TimeoutError, PeerLostError) if one happened.
  void finish_gradient_sync();

  // While the returned guard lives, backward accumulates gradients locally
  // without communicating (gradient accumulation); the next synced backward
  // all-reduces the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(DataParallel& dp) : dp_(dp) { dp_.sync_ = false; }
    ~NoSync() { dp_.sync_ = true; }
   private:
    DataParallel& dp_;
  };
  NoSync no_sync() { return NoSync(*this); }

  // Deterministic mode: the gradients of one atom (a fixed part of the
  // global batch) go into 64-bit fixed-point accumulators
  // (parallel::fixed_point) and are zeroed: each parameter's from its hook,
  // as backward finishes it (still in cache), the rest when this is called.
  // Call it after each atom's backward, at most fixed_point::kMaxAtoms times
  // per step over all ranks. finish_gradient_sync() then all-reduces the
  // accumulators (integer sums: exact, associative) and writes the result
  // back as the gradients. A gradient outside the exact range
  // (|g| > fixed_point::kMaxMagnitude, NaN, inf) makes finish_gradient_sync()
  // throw ValueError on every rank (the rank that saw it names the parameter
  // and the value).
  void accumulate_fixed_point();
  // Deterministic mode, as the backward sink of an atom's backward
  // (autograd::BackwardOptions::sink): adds `grad`, a parameter's whole
  // gradient for this atom, straight to its fixed-point accumulator, without
  // the add into .grad and the zeroing after it; returns false (the engine
  // then adds it into .grad and the hook adds it from there) for a tensor
  // that is not one of the model's parameters or a gradient it cannot read
  // as it is. Bitwise the same sums as the hooks' path (0 + g = g).
  //   autograd::backward(loss, {.sink = [&](const Tensor& leaf, const Tensor& g) {
  //     return dp.take_atom_gradient(leaf, g); }});
  //   dp.accumulate_fixed_point();
  // An undefined `grad`: the leaf is final with nothing dense for this atom
  // (its linear layers took their factors, below).
  bool take_atom_gradient(const core::Tensor& leaf, const core::Tensor& grad);
  // Deterministic mode: while the guard lives, linear layers hand their
  // weight gradients over as factors (parallel::WeightFactors), which are
  // rounded into the sums in one pass each step, when the parameter is final
  // in the rank's last atom (begin_last_atom) or at finish_gradient_sync.
  // Call it once a step, before the atoms (it forgets terms a failed step left).
  [[nodiscard]] ops::TakeWeightFactors take_weight_factors();
  // Deterministic mode: the next atom is this rank's last of the step, so each
  // bucket is all-reduced as soon as its sums are complete, while backward
  // goes on (as the hooks do in normal mode). Optional.
  void begin_last_atom();

  size_t num_buckets() const { return buckets_.size(); }
  // Parameter names per bucket, in bucket order (for logs and tests).
  std::vector<std::vector<std::string>> bucket_layout() const;

 private:
  struct Bucket {
    core::Tensor flat;  // the gradients of its parameters, back to back
    core::Tensor fixed; // deterministic mode: i64 fixed-point accumulator
    std::vector<std::string> names;
    std::vector<int64_t> offsets;  // of each parameter in flat
    std::vector<uint8_t> added;    // deterministic: its gradient is in `fixed` for this atom
    std::vector<uint8_t> in_sum;   // deterministic: `fixed` holds its sum for this step
    std::vector<int64_t> terms;    // deterministic: values added into its sums this step
    std::vector<core::Tensor> factored;  // deterministic: the parameter, if WeightFactors takes it
    int pending = 0;    // gradients not yet final in this pass
  };
  void on_grad_ready(size_t bucket);
  void comm_loop();
  void reset_pass();
  void add_fixed_point(size_t bucket, size_t param, const core::Tensor* grad = nullptr);
  void flush_factors(size_t bucket, size_t param);
  void count_terms(size_t bucket, size_t param, int64_t terms);
  void note_out_of_range(size_t bucket, size_t param, const fixed_point::OutOfRange& bad);
  void begin_fixed_point_sync();
  void end_fixed_point_sync(bool reduced);

  nn::Module& model_;
  comm::Communicator& comm_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  struct Slot {
    size_t bucket = 0, index = 0;
    std::weak_ptr<core::TensorImpl> param;  // the address alone could be a new tensor's after the parameter is gone
  };
  std::unordered_map<const core::TensorImpl*, Slot> slot_of_;  // parameter -> where its gradient goes
  bool sync_ = true;
  int64_t accumulated_ = 0;  // deterministic: accumulate_fixed_point() calls this step
  bool last_atom_ = false;   // deterministic: begin_last_atom() was called this step
  std::string range_error_;  // deterministic: the first out-of-range gradient this step
  std::unique_ptr<WeightFactors> factors_;  // deterministic: linear weights' gradients as factors

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<size_t> ready_;     // buckets ready to reduce, in the order they became ready
  size_t next_to_reduce_ = 0;    // the comm thread reduces buckets in index order
  size_t reduced_ = 0;           // buckets finished in this pass
  std::vector<bool> is_ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::shared_ptr<bool> alive_;  // hooks outlive us in the parameters; they check this
  std::thread comm_thread_;
};

}  // namespace loom::parallel
