// 2-D convolution kernels: NCHW input, weight [O, C / groups, KH, KW].
//
// f32 runs on oneDNN (forward, backward-data and backward-weights
// primitives). Building a primitive costs far more than running it on the
// small shapes of a training step, so each is built once per shape and
// parameter set and kept in a cache. f64 exists for the finite-difference
// gradient checks and runs the direct loops below, which are also the
// readable statement of what the oneDNN path computes.
#include <algorithm>
#include <array>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "loom/core/parallel.h"
#include "loom/ops/cpu/cpu_backend.h"

namespace loom::ops::cpu {
namespace {

// Sizes of one convolution, read off the contiguous NCHW tensors.
struct ConvShape {
  int64_t n, c, h, w;  // input
  int64_t o, kh, kw;   // weight [o, c / groups, kh, kw]
  int64_t oh, ow;      // output
  Conv2dParams p;

  int64_t c_per_group() const { return c / p.groups; }
  int64_t o_per_group() const { return o / p.groups; }
};

ConvShape conv_shape(const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dParams& p) {
  LOOM_ASSERT(x.dim() == 4 && w.dim() == 4 && y.dim() == 4);
  LOOM_ASSERT(x.is_contiguous() && w.is_contiguous() && y.is_contiguous());
  return {x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), y.size(2), y.size(3), p};
}

// ---- reference loops (f64, and sizes oneDNN does not take) ----

// Calls f(out_index, in_index) for every output position whose kernel tap
// (ki, kj) lands inside the input plane (taps on the padding contribute 0).
template <class F>
void for_each_tap(const ConvShape& s, int64_t ki, int64_t kj, const F& f) {
  for (int64_t oy = 0; oy < s.oh; ++oy) {
    const int64_t iy = oy * s.p.stride_h - s.p.pad_h + ki * s.p.dilation_h;
    if (iy < 0 || iy >= s.h) continue;
    for (int64_t ox = 0; ox < s.ow; ++ox) {
      const int64_t ix = ox * s.p.stride_w - s.p.pad_w + kj * s.p.dilation_w;
      if (ix >= 0 && ix < s.w) f(oy * s.ow + ox, iy * s.w + ix);
    }
  }
}

// y[n, o] = bias[o] + sum over the group's input channels of x[n, c] * w[o, c].
template <class T>
void conv_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t cg = s.c_per_group(), og = s.o_per_group();
  const int64_t in_plane = s.h * s.w, out_plane = s.oh * s.ow, taps = s.kh * s.kw;
  core::parallel_for(0, s.n * s.o, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t no = lo; no < hi; ++no) {
      const int64_t n = no / s.o, o = no % s.o, g = o / og;
      T* yp = y + no * out_plane;
      std::fill(yp, yp + out_plane, bias ? bias[o] : T(0));
      for (int64_t cl = 0; cl < cg; ++cl) {
        const T* xp = x + (n * s.c + g * cg + cl) * in_plane;
        const T* wp = w + (o * cg + cl) * taps;
        for (int64_t ki = 0; ki < s.kh; ++ki) {
          for (int64_t kj = 0; kj < s.kw; ++kj) {
            const T wv = wp[ki * s.kw + kj];
            for_each_tap(s, ki, kj, [&](int64_t oi, int64_t ii) { yp[oi] += wv * xp[ii]; });
          }
        }
      }
    }
  });
}

// gx[n, c] = sum over the group's output channels of gy[n, o] * w[o, c],
// scattered back through the taps. Each task owns one gx plane.
template <class T>
void conv_backward_data_ref(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t cg = s.c_per_group(), og = s.o_per_group();
  const int64_t in_plane = s.h * s.w, out_plane = s.oh * s.ow, taps = s.kh * s.kw;
  core::parallel_for(0, s.n * s.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nc = lo; nc < hi; ++nc) {
      const int64_t n = nc / s.c, c = nc % s.c, g = c / cg, cl = c % cg;
      T* gxp = gx + nc * in_plane;
      std::fill(gxp, gxp + in_plane, T(0));
      for (int64_t o = g * og; o < (g + 1) * og; ++o) {
        const T* gyp = gy + (n * s.o + o) * out_plane;
        const T* wp = w + (o * cg + cl) * taps;
        for (int64_t ki = 0; ki < s.kh; ++ki) {
          for (int64_t kj = 0; kj < s.kw; ++kj) {
            const T wv = wp[ki * s.kw + kj];
            for_each_tap(s, ki, kj, [&](int64_t oi, int64_t ii) { gxp[ii] += wv * gyp[oi]; });
          }
        }
      }
    }
  });
}

// gw[o, c, ki, kj] = sum over n and output positions of gy[n, o] * x[n, c] at the tap.
template <class T>
void conv_backward_weights_ref(const ConvShape& s, const T* x, const T* gy, T* gw) {
  const int64_t cg = s.c_per_group(), og = s.o_per_group();
  const int64_t in_plane = s.h * s.w, out_plane = s.oh * s.ow, taps = s.kh * s.kw;
  core::parallel_for(0, s.o, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t o = lo; o < hi; ++o) {
      const int64_t g = o / og;
      for (int64_t cl = 0; cl < cg; ++cl) {
        T* gwp = gw + (o * cg + cl) * taps;
        for (int64_t k = 0; k < taps; ++k) {
          const int64_t ki = k / s.kw, kj = k % s.kw;
          T acc = 0;
          for (int64_t n = 0; n < s.n; ++n) {
            const T* gyp = gy + (n * s.o + o) * out_plane;
            const T* xp = x + (n * s.c + g * cg + cl) * in_plane;
            for_each_tap(s, ki, kj, [&](int64_t oi, int64_t ii) { acc += gyp[oi] * xp[ii]; });
          }
          gwp[k] = acc;
        }
      }
    }
  });
}

// gbias[o] = sum of gy[:, o, :, :], accumulated in double.
template <class T>
void conv_backward_bias(const ConvShape& s, const T* gy, T* gbias) {
  const int64_t out_plane = s.oh * s.ow;
  core::parallel_for(0, s.o, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t o = lo; o < hi; ++o) {
      double acc = 0;
      for (int64_t n = 0; n < s.n; ++n) {
        const T* p = gy + (n * s.o + o) * out_plane;
        for (int64_t i = 0; i < out_plane; ++i) acc += p[i];
      }
      gbias[o] = static_cast<T>(acc);
    }
  });
}

// ---- oneDNN ----

using dnnl::memory;
using Tag = memory::format_tag;

// Whether primitives run directly on Loom's plain NCHW/OIHW tensors, or are
// offered format_tag::any and pick blocked layouts (nChw16c on AVX-512), with
// reorders from and to the plain tensors around each run. Measured on the
// reference CNN, batch 128, 1 thread, AVX-512 host, forward + backward of
// conv 1->32 5x5 on 28x28 and conv 32->64 5x5 on 14x14: plain layouts run
// oneDNN's im2col + GEMM path in 75 ms; blocked layouts run its direct JIT
// kernels in 39 ms, reorders included. Blocked it is.
constexpr bool kPlainLayouts = false;

enum class Pass : int64_t { Forward, BackwardData, BackwardWeights };

// One argument of a cached primitive. `user` is the plain layout of Loom's
// tensor; `want` is what the primitive chose. When they differ, `reorder`
// converts user -> want (inputs) or want -> user (outputs) around each run.
struct PlanArg {
  int id;  // DNNL_ARG_*
  bool is_output;
  memory::desc user, want;
  dnnl::reorder reorder;
};

struct Plan {
  dnnl::primitive prim;
  std::vector<PlanArg> args;
  memory::desc scratchpad;
};

// All that identifies a plan: the pass, every size and parameter, and
// whether the bias (or its gradient) is part of the primitive.
using PlanKey = std::array<int64_t, 16>;

PlanKey plan_key(Pass pass, const ConvShape& s, bool with_bias) {
  return {static_cast<int64_t>(pass), s.n, s.c, s.h, s.w, s.o, s.kh, s.kw, s.p.stride_h, s.p.stride_w,
          s.p.pad_h, s.p.pad_w, s.p.dilation_h, s.p.dilation_w, s.p.groups, with_bias ? 1 : 0};
}

// The engine and the plan cache. The engine is thread-safe; the cache is
// behind a mutex; plans are immutable once built, so runs share them freely.
struct DnnlContext {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mu;
  std::map<PlanKey, std::shared_ptr<const Plan>> plans;
};

DnnlContext& dnnl_context() {
  static DnnlContext ctx;
  return ctx;
}

// Plain descriptors of the four tensors, and the geometry in oneDNN's terms.
struct ConvDescs {
  memory::desc x, w, b, y;
  memory::dims strides, dilates, pad_l, pad_r;

  ConvDescs(const ConvShape& s, bool with_bias) {
    const auto f32 = memory::data_type::f32;
    x = memory::desc({s.n, s.c, s.h, s.w}, f32, Tag::nchw);
    y = memory::desc({s.n, s.o, s.oh, s.ow}, f32, Tag::nchw);
    // Grouped weights are 5-D in oneDNN; [O, C/G, KH, KW] row-major is goihw.
    w = s.p.groups == 1 ? memory::desc({s.o, s.c, s.kh, s.kw}, f32, Tag::oihw)
                        : memory::desc({s.p.groups, s.o_per_group(), s.c_per_group(), s.kh, s.kw}, f32, Tag::goihw);
    if (with_bias) b = memory::desc({s.o}, f32, Tag::x);
    strides = {s.p.stride_h, s.p.stride_w};
    dilates = {s.p.dilation_h - 1, s.p.dilation_w - 1};  // oneDNN counts the gaps
    // Symmetric padding: oneDNN's output size uses the same floor as ours.
    pad_l = pad_r = {s.p.pad_h, s.p.pad_w};
  }

  // What the primitive is offered for a tensor: its plain layout, or "any".
  static memory::desc offer(const memory::desc& plain) {
    if (kPlainLayouts) return plain;
    return memory::desc(plain.dims(), plain.data_type(), Tag::any);
  }
};

struct ArgSpec {
  int id;
  const memory::desc* user;
  bool is_output;
};

Plan make_plan(const dnnl::primitive_desc& pd, dnnl::primitive prim, std::initializer_list<ArgSpec> specs) {
  DnnlContext& ctx = dnnl_context();
  Plan plan{std::move(prim), {}, pd.scratchpad_desc()};
  for (const ArgSpec& spec : specs) {
    if (!*spec.user) continue;  // no bias
    PlanArg a{spec.id, spec.is_output, *spec.user, pd.query_md(dnnl::query::exec_arg_md, spec.id), {}};
    if (a.want != a.user) {
      a.reorder = spec.is_output ? dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, a.want, ctx.engine, a.user))
                                 : dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, a.user, ctx.engine, a.want));
    }
    plan.args.push_back(std::move(a));
  }
  return plan;
}

std::shared_ptr<const Plan> build_plan(Pass pass, const ConvShape& s, bool with_bias) {
  DnnlContext& ctx = dnnl_context();
  const ConvDescs d(s, with_bias);
  const auto x = ConvDescs::offer(d.x), w = ConvDescs::offer(d.w), y = ConvDescs::offer(d.y);
  const auto direct = dnnl::algorithm::convolution_direct;
  // Scratch space comes from Loom's caching allocator at each run instead
  // of being held by every cached primitive.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  // The backward primitives are built against the forward one (a "hint").
  const dnnl::convolution_forward::desc fwd_desc(dnnl::prop_kind::forward_training, direct, x, w, d.b, y, d.strides,
                                                 d.dilates, d.pad_l, d.pad_r);
  const dnnl::convolution_forward::primitive_desc fwd(fwd_desc, attr, ctx.engine);
  switch (pass) {
    case Pass::Forward:
      return std::make_shared<const Plan>(make_plan(fwd, dnnl::convolution_forward(fwd),
                                                    {{DNNL_ARG_SRC, &d.x, false},
                                                     {DNNL_ARG_WEIGHTS, &d.w, false},
                                                     {DNNL_ARG_BIAS, &d.b, false},
                                                     {DNNL_ARG_DST, &d.y, true}}));
    case Pass::BackwardData: {
      const dnnl::convolution_backward_data::desc desc(direct, x, w, y, d.strides, d.dilates, d.pad_l, d.pad_r);
      const dnnl::convolution_backward_data::primitive_desc pd(desc, attr, ctx.engine, fwd);
      return std::make_shared<const Plan>(make_plan(pd, dnnl::convolution_backward_data(pd),
                                                    {{DNNL_ARG_DIFF_DST, &d.y, false},
                                                     {DNNL_ARG_WEIGHTS, &d.w, false},
                                                     {DNNL_ARG_DIFF_SRC, &d.x, true}}));
    }
    case Pass::BackwardWeights: {
      const dnnl::convolution_backward_weights::desc desc(direct, x, w, d.b, y, d.strides, d.dilates, d.pad_l,
                                                          d.pad_r);
      const dnnl::convolution_backward_weights::primitive_desc pd(desc, attr, ctx.engine, fwd);
      return std::make_shared<const Plan>(make_plan(pd, dnnl::convolution_backward_weights(pd),
                                                    {{DNNL_ARG_SRC, &d.x, false},
                                                     {DNNL_ARG_DIFF_DST, &d.y, false},
                                                     {DNNL_ARG_DIFF_WEIGHTS, &d.w, true},
                                                     {DNNL_ARG_DIFF_BIAS, &d.b, true}}));
    }
  }
  LOOM_ASSERT(false);
  return nullptr;
}

std::shared_ptr<const Plan> get_plan(Pass pass, const ConvShape& s, bool with_bias) {
  DnnlContext& ctx = dnnl_context();
  const PlanKey key = plan_key(pass, s, with_bias);
  std::lock_guard<std::mutex> lock(ctx.mu);
  auto it = ctx.plans.find(key);
  if (it != ctx.plans.end()) return it->second;
  try {
    return ctx.plans.emplace(key, build_plan(pass, s, with_bias)).first->second;
  } catch (const dnnl::error& e) {
    throw InternalError(format("conv2d: oneDNN could not build a primitive for input [{}, {}, {}, {}], "
                               "weight [{}, {}, {}, {}], groups {}: {}",
                               s.n, s.c, s.h, s.w, s.o, s.c_per_group(), s.kh, s.kw, s.p.groups, e.what()));
  }
}

// Runs a plan on user pointers given as {DNNL_ARG_*, pointer}; arguments the
// plan does not have (a bias it was built without) are ignored. Blocked
// copies and the scratchpad come from the caching allocator, so a repeated
// step asks the system for no memory.
void run_plan(const Plan& plan, std::initializer_list<std::pair<int, const void*>> ptrs) {
  DnnlContext& ctx = dnnl_context();
  // A stream per thread: concurrent callers (ranks as threads) never share one.
  thread_local dnnl::stream stream(ctx.engine);

  std::unordered_map<int, memory> args;
  std::vector<Tensor> buffers;
  std::vector<std::pair<const PlanArg*, memory>> copy_back;  // outputs computed in a blocked layout
  for (const PlanArg& a : plan.args) {
    void* ptr = nullptr;
    for (const auto& [id, p] : ptrs) {
      if (id == a.id) ptr = const_cast<void*>(p);  // oneDNN takes void* even for inputs
    }
    LOOM_ASSERT(ptr != nullptr);
    memory user(a.user, ctx.engine, ptr);
    if (!a.reorder) {
      args.emplace(a.id, user);
      continue;
    }
    buffers.push_back(Tensor::empty({static_cast<int64_t>(a.want.get_size())}, DType::U8));
    memory mine(a.want, ctx.engine, buffers.back().data_ptr());
    if (a.is_output) {
      copy_back.emplace_back(&a, user);
    } else {
      a.reorder.execute(stream, user, mine);
    }
    args.emplace(a.id, mine);
  }
  if (const size_t nbytes = plan.scratchpad.get_size(); nbytes > 0) {
    buffers.push_back(Tensor::empty({static_cast<int64_t>(nbytes)}, DType::U8));
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(plan.scratchpad, ctx.engine, buffers.back().data_ptr()));
  }
  plan.prim.execute(stream, args);
  for (auto& [a, user] : copy_back) {
    memory mine = args.at(a->id);
    a->reorder.execute(stream, mine, user);
  }
  stream.wait();
}

// oneDNN rejects zero-sized tensors; the reference loops handle them.
bool use_dnnl(const ConvShape& s, DType dtype) {
  return dtype == DType::F32 && s.n > 0 && s.c > 0 && s.o > 0 && s.oh > 0 && s.ow > 0;
}

}  // namespace

void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
                        Tensor& y) const {
  const ConvShape s = conv_shape(x, w, y, p);
  if (use_dnnl(s, x.dtype())) {
    const bool with_bias = bias != nullptr;
    auto plan = get_plan(Pass::Forward, s, with_bias);
    run_plan(*plan, {{DNNL_ARG_SRC, x.data_ptr()},
                     {DNNL_ARG_WEIGHTS, w.data_ptr()},
                     {DNNL_ARG_BIAS, with_bias ? bias->data_ptr() : nullptr},
                     {DNNL_ARG_DST, y.data_ptr()}});
    return;
  }
  core::visit_float_dtype(x.dtype(), "conv2d", [&]<class T>() {
    conv_forward_ref<T>(s, x.data<T>(), w.data<T>(), bias ? bias->data<T>() : nullptr, y.data<T>());
  });
}

void CpuBackend::conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Conv2dParams& p,
                                 Tensor* gx, Tensor* gw, Tensor* gbias) const {
  const ConvShape s = conv_shape(x, w, gy, p);
  if (use_dnnl(s, x.dtype())) {
    if (gx) {
      auto plan = get_plan(Pass::BackwardData, s, false);
      run_plan(*plan, {{DNNL_ARG_DIFF_DST, gy.data_ptr()},
                       {DNNL_ARG_WEIGHTS, w.data_ptr()},
                       {DNNL_ARG_DIFF_SRC, gx->data_ptr()}});
    }
    if (gw) {
      // The bias gradient comes for free from the weights pass.
      const bool with_bias = gbias != nullptr;
      auto plan = get_plan(Pass::BackwardWeights, s, with_bias);
      run_plan(*plan, {{DNNL_ARG_SRC, x.data_ptr()},
                       {DNNL_ARG_DIFF_DST, gy.data_ptr()},
                       {DNNL_ARG_DIFF_WEIGHTS, gw->data_ptr()},
                       {DNNL_ARG_DIFF_BIAS, with_bias ? gbias->data_ptr() : nullptr}});
    } else if (gbias) {
      conv_backward_bias<float>(s, gy.data<float>(), gbias->data<float>());
    }
    return;
  }
  core::visit_float_dtype(x.dtype(), "conv2d_backward", [&]<class T>() {
    if (gx) conv_backward_data_ref<T>(s, gy.data<T>(), w.data<T>(), gx->data<T>());
    if (gw) conv_backward_weights_ref<T>(s, x.data<T>(), gy.data<T>(), gw->data<T>());
    if (gbias) conv_backward_bias<T>(s, gy.data<T>(), gbias->data<T>());
  });
}

}  // namespace loom::ops::cpu
