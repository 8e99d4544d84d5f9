#!/usr/bin/python3
"""Golden values from PyTorch for Loom's tests (tests/golden/*_test.cc).

Usage: /usr/bin/python3 tests/golden/make_golden.py   (Debian: apt-get install python3-torch)

Writes, next to this script:
  optim_sgd.txt, optim_adam.txt, optim_adamw.txt  parameter trajectories of torch.optim
  optim_schedules.txt                             learning rates of torch.optim.lr_scheduler
  cnn.txt                                         logits, loss and gradients of the reference CNN
  gpt.txt                                         a GPT (nn/transformer.h), tied and untied: logits,
                                                  loss, gradients, and logits after one SGD step

Fixture format, one entry per line ('#' starts a comment line):
  name d0 d1 ... : v0 v1 ...
The dims are the shape (none for a scalar); values are row-major. f64 values
are printed with %.17g and f32 values with %.9g (both round-trip exactly).

Every input is a closed-form formula that the C++ tests compute too, so no
random numbers cross the language boundary:
  optimizer tests: n = 10, i = 0..9
    w0[i] = sin(0.7 i + 0.3), target[i] = 0.5 cos(0.45 i), c[i] = 0.5 + 0.15 i
    grad(w)[i] = c[i] (w[i] - target[i]) + 0.1 sin(w[i])    (in f64; cast to f32 for f32 cases)
  CNN: parameter p (in named_parameters() order) has element
    p[i] = amp * sin(0.375 i + phase), phase = index of p + 1,
    amp = 2 / sqrt(fan_in) for weights, 1 / sqrt(fan_in) for biases
  computed in f64 (libm sin, as C++'s std::sin) and rounded to f32;
    x[i] = sin(0.109375 i) over the flattened [8, 1, 28, 28] batch, labels[b] = b % 10.
  The steps are binary fractions (3/8, 7/64) so that step * i is exact and the
  sine's argument has the same bits in both languages, fused multiply-add or not.
  GPT: parameter p (named_parameters() order, Loom's names) has element
    p[i] = base + amp * sin(0.375 i + phase), phase = index of p + 1,
    amp = 0.3 for matrices, 0.1 for vectors, base = 1 for LayerNorm weights, else 0,
  computed in f64 and rounded to f32; tokens[b, t] = (31 b + 17 t^2 + 3) mod V,
    targets[b, t] = tokens[b, t + 1] by the same formula.

Usage with names (cnn, gpt, optim, schedules) writes only those fixtures.
"""
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
N = 10
STEPS = 20


class Fixture:
    def __init__(self, path, header):
        self.path = path
        self.lines = ["# " + line for line in header.strip().splitlines()]

    def comment(self, text):
        self.lines.append("# " + text)

    def put(self, name, values, shape=None, fmt="%.17g"):
        arr = np.asarray(values)
        if shape is None:
            shape = list(arr.shape)
        flat = arr.reshape(-1)
        dims = "".join(" %d" % d for d in shape)
        self.lines.append("%s%s : %s" % (name, dims, " ".join(fmt % float(v) for v in flat)))

    def write(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        return os.path.getsize(self.path)


# ---------------------------------------------------------------- optimizers

def problem():
    i = torch.arange(N, dtype=torch.float64)
    w0 = torch.tensor([math.sin(0.7 * k + 0.3) for k in range(N)], dtype=torch.float64)
    target = torch.tensor([0.5 * math.cos(0.45 * k) for k in range(N)], dtype=torch.float64)
    c = 0.5 + 0.15 * i
    return w0, target, c


def grad_of(w, target, c):
    wd = w.detach().double()
    return (c * (wd - target) + 0.1 * torch.sin(wd)).to(w.dtype)




def run_case(opt_cls, kwargs, dtype, make_schedule):
    w0, target, c = problem()
    w = w0.clone().to(dtype).requires_grad_(True)
    opt = opt_cls([w], **kwargs)
    sched = make_schedule(opt) if make_schedule else None
    traj, lrs = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        w.grad = grad_of(w, target, c)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
        traj.append(w.detach().clone())
    return traj, lrs


def write_optim(path, title, cases):
    fx = Fixture(path, title + "\nMade by make_golden.py with torch %s." % torch.__version__)
    w0, target, c = problem()
    fx.put("w0", w0.numpy())
    fx.put("target", target.numpy())
    fx.put("c", c.numpy())
    for name, opt_cls, kwargs, dtype, options, make_schedule in cases:
        fx.comment("%s: torch.optim.%s(%s), %s%s" % (
            name, opt_cls.__name__, ", ".join("%s=%r" % kv for kv in kwargs.items()), dtype,
            ", lr schedule " + make_schedule.__doc__ if make_schedule else ""))
        for key, value in options.items():
            fx.put("%s.%s" % (name, key), [float(value)], shape=[])
        fx.put("%s.f32" % name, [1.0 if dtype == torch.float32 else 0.0], shape=[])
        traj, lrs = run_case(opt_cls, kwargs, dtype, make_schedule)
        fmt = "%.9g" if dtype == torch.float32 else "%.17g"
        if make_schedule:
            fx.put("%s.lrs" % name, lrs)
        for t, w in enumerate(traj, start=1):
            fx.put("%s.step%d" % (name, t), w.numpy(), fmt=fmt)
    return fx.write()


def cosine_t20(opt):
    """CosineAnnealingLR(T_max=20, eta_min=0.001)"""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.001)


def warmup5_step4(opt):
    """SequentialLR([LinearLR(start_factor=0.25, total_iters=5), StepLR(step_size=4, gamma=0.5)], milestones=[5])"""
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=5)
    after = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, after], milestones=[5])


def optimizer_fixtures():
    f64, f32 = torch.float64, torch.float32
    sgd = torch.optim.SGD
    sgd_cases = [
        ("momentum", sgd, dict(lr=0.05, momentum=0.9), f64,
         dict(lr=0.05, momentum=0.9, dampening=0, weight_decay=0, nesterov=0), None),
        ("nesterov_wd", sgd, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), f64,
         dict(lr=0.05, momentum=0.9, dampening=0, weight_decay=0.01, nesterov=1), None),
        ("dampening_wd", sgd, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02), f64,
         dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02, nesterov=0), None),
        ("plain", sgd, dict(lr=0.1), f64,
         dict(lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=0), None),
        ("momentum_f32", sgd, dict(lr=0.05, momentum=0.9), f32,
         dict(lr=0.05, momentum=0.9, dampening=0, weight_decay=0, nesterov=0), None),
        ("warmup_step", sgd, dict(lr=0.08, momentum=0.9), f64,
         dict(lr=0.08, momentum=0.9, dampening=0, weight_decay=0, nesterov=0), warmup5_step4),
    ]
    adam = torch.optim.Adam
    adam_cases = [
        ("default", adam, dict(lr=0.05), f64,
         dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0, amsgrad=0), None),
        ("l2_amsgrad", adam, dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, amsgrad=True), f64,
         dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.05, amsgrad=1), None),
        ("default_f32", adam, dict(lr=0.05), f32,
         dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0, amsgrad=0), None),
    ]
    adamw = torch.optim.AdamW
    adamw_cases = [
        ("wd", adamw, dict(lr=0.05, weight_decay=0.1), f64,
         dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=0), None),
        ("amsgrad", adamw, dict(lr=0.05, betas=(0.85, 0.99), weight_decay=0.2, amsgrad=True), f64,
         dict(lr=0.05, beta1=0.85, beta2=0.99, eps=1e-8, weight_decay=0.2, amsgrad=1), None),
        ("cosine", adamw, dict(lr=0.05, weight_decay=0.1), f64,
         dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=0), cosine_t20),
    ]
    sizes = {}
    sizes["optim_sgd.txt"] = write_optim(os.path.join(HERE, "optim_sgd.txt"), "torch.optim.SGD trajectories", sgd_cases)
    sizes["optim_adam.txt"] = write_optim(os.path.join(HERE, "optim_adam.txt"), "torch.optim.Adam trajectories",
                                          adam_cases)
    sizes["optim_adamw.txt"] = write_optim(os.path.join(HERE, "optim_adamw.txt"), "torch.optim.AdamW trajectories",
                                           adamw_cases)
    return sizes


def schedule_fixture():
    fx = Fixture(os.path.join(HERE, "optim_schedules.txt"),
                 "torch.optim.lr_scheduler learning rates at steps 0..39 (before each scheduler.step()).\n"
                 "Made by make_golden.py with torch %s." % torch.__version__)
    S = torch.optim.lr_scheduler

    def lrs(make, base_lr, steps=40):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=base_lr)
        sched = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    fx.comment("step_lr: StepLR(step_size=7, gamma=0.3), base lr 0.2")
    fx.put("step_lr", lrs(lambda o: S.StepLR(o, step_size=7, gamma=0.3), 0.2))
    fx.comment("cosine: CosineAnnealingLR(T_max=15, eta_min=0.01), base lr 0.5 (40 steps: goes past T_max)")
    fx.put("cosine", lrs(lambda o: S.CosineAnnealingLR(o, T_max=15, eta_min=0.01), 0.5))
    fx.comment("warmup_cosine: SequentialLR([LinearLR(start_factor=0.1, total_iters=8), "
               "CosineAnnealingLR(T_max=30)], milestones=[8]), base lr 0.3")
    fx.put("warmup_cosine", lrs(lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8), S.CosineAnnealingLR(o, T_max=30)],
        milestones=[8]), 0.3))
    return {"optim_schedules.txt": fx.write()}


# ---------------------------------------------------------------- CNN

def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def sin_values(n, step, phase, amp):
    s = math.sin
    return np.array([amp * s(step * i + phase) for i in range(n)], dtype=np.float64)


# Tensors with more elements than this are stored as sum, sum of squares and every STRIDE-th element.
FULL_LIMIT = 16384
STRIDE = {"3.weight": 7, "7.weight": 997}


def cnn_fixture():
    fx = Fixture(os.path.join(HERE, "cnn.txt"),
                 "The reference CNN (pytorch_cpu_step.py) in f32, batch 8: logits, mean cross-entropy loss and\n"
                 "the gradient of every parameter. Inputs and weights are the formulas in make_golden.py.\n"
                 "Tensors over %d elements: <name>.sum and <name>.sumsq (of all elements, in f64) and\n"
                 "<name>.sampled = elements 0, s, 2s, ... with s = <name>.stride.\n"
                 "Made by make_golden.py with torch %s." % (FULL_LIMIT, torch.__version__))
    torch.manual_seed(0)
    model = cnn()
    params = list(model.named_parameters())
    weight_fan_in = {}
    with torch.no_grad():
        for index, (name, p) in enumerate(params):
            module = name.rsplit(".", 1)[0]
            if name.endswith("weight"):
                fan_in = p[0].numel()
                weight_fan_in[module] = fan_in
                amp = 2.0 / math.sqrt(fan_in)
            else:
                amp = 1.0 / math.sqrt(weight_fan_in[module])
            phase = float(index + 1)
            values = sin_values(p.numel(), 0.375, phase, amp)
            p.copy_(torch.from_numpy(values.astype(np.float32)).reshape(p.shape))
            fx.put("param.%s.amp" % name, [amp], shape=[])
            fx.put("param.%s.phase" % name, [phase], shape=[])
            fx.put("param.%s.sum" % name, [p.double().sum().item()], shape=[])
    batch = 8
    x = torch.from_numpy(sin_values(batch * 28 * 28, 0.109375, 0.0, 1.0).astype(np.float32)).reshape(batch, 1, 28, 28)
    labels = torch.arange(batch, dtype=torch.int64) % 10
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    # How far torch's own f32 result is from f64 (a floor for any f32 comparison).
    m64 = cnn().double()
    with torch.no_grad():
        for (_, p64), (_, p) in zip(m64.named_parameters(), params):
            p64.copy_(p.double())
    logits64 = m64(x.double())
    loss64 = F.cross_entropy(logits64, labels)
    loss64.backward()
    worst = 0.0
    for (name, p64), (_, p) in zip(m64.named_parameters(), params):
        scale = p64.grad.abs().max().item()
        worst = max(worst, ((p.grad.double() - p64.grad).abs().max() / scale).item())
    worst = max(worst, ((logits.double() - logits64).abs().max() / logits64.abs().max()).item())
    print("torch f32 vs f64: worst |diff| / max|value| over logits and gradients = %.3g" % worst)

    fx.put("input.shape", [batch, 1, 28, 28], shape=[4])
    fx.put("logits", logits.detach().numpy(), fmt="%.9g")
    fx.put("loss", [loss.item()], shape=[], fmt="%.9g")
    for name, p in params:
        g = p.grad
        if g.numel() <= FULL_LIMIT:
            fx.put("grad.%s" % name, g.numpy(), fmt="%.9g")
        else:
            stride = STRIDE[name]
            flat = g.reshape(-1)
            fx.put("grad.%s.shape" % name, list(g.shape), shape=[g.dim()])
            fx.put("grad.%s.sum" % name, [flat.double().sum().item()], shape=[])
            fx.put("grad.%s.sumsq" % name, [flat.double().square().sum().item()], shape=[])
            fx.put("grad.%s.stride" % name, [stride], shape=[])
            fx.put("grad.%s.sampled" % name, flat[::stride].numpy(), fmt="%.9g")
    return {"cnn.txt": fx.write()}


# ---------------------------------------------------------------- GPT

class GptEmbedding(nn.Module):
    def __init__(self, vocab, context, embed):
        super().__init__()
        self.wte = nn.Embedding(vocab, embed)
        self.wpe = nn.Embedding(context, embed)

    def forward(self, tokens):
        return self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(ln_1(x)) with a causal mask, then x + proj(gelu(fc(ln_2(x))))."""

    def __init__(self, embed, heads, mlp_ratio):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed)
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(embed)
        self.fc = nn.Linear(embed, mlp_ratio * embed)
        self.proj = nn.Linear(mlp_ratio * embed, embed)

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf"), dtype=x.dtype), diagonal=1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GptHead(nn.Module):
    def __init__(self, vocab, embed, tied):
        super().__init__()
        self.ln_f = nn.LayerNorm(embed)
        if not tied:
            self.lm_head = nn.Linear(embed, vocab, bias=False)


class Gpt(nn.Module):
    def __init__(self, vocab, context, blocks, heads, embed, mlp_ratio, tied):
        super().__init__()
        self.tied = tied
        self.embedding = GptEmbedding(vocab, context, embed)
        self.blocks = nn.Sequential(*[TransformerBlock(embed, heads, mlp_ratio) for _ in range(blocks)])
        self.head = GptHead(vocab, embed, tied)

    def forward(self, tokens):
        h = self.head.ln_f(self.blocks(self.embedding(tokens)))
        return F.linear(h, self.embedding.wte.weight) if self.tied else self.head.lm_head(h)


GPT = dict(vocab=64, context=8, blocks=2, heads=2, embed=16, mlp_ratio=4)
GPT_BATCH = 2
GPT_LR = 0.5


def gpt_tokens(batch, seq, vocab, shift):
    return torch.tensor([[(31 * b + 17 * (t + shift) ** 2 + 3) % vocab for t in range(seq)] for b in range(batch)])


def gpt_fixture():
    fx = Fixture(os.path.join(HERE, "gpt.txt"),
                 "A GPT (loom/nn/transformer.h re-implemented with torch.nn) in f32, %s, batch %d:\n"
                 "<case>.logits, <case>.loss (mean cross-entropy over all tokens), <case>.grad.<param>, and\n"
                 "<case>.after.logits, <case>.after.loss after one SGD step (lr %g, no momentum).\n"
                 "Cases: tied, untied. Weights and tokens are the formulas in make_golden.py.\n"
                 "Made by make_golden.py with torch %s." % (GPT, GPT_BATCH, GPT_LR, torch.__version__))
    for case in ("tied", "untied"):
        model = Gpt(tied=case == "tied", **GPT)
        params = list(model.named_parameters())
        with torch.no_grad():
            for index, (name, p) in enumerate(params):
                amp = 0.3 if p.dim() == 2 else 0.1
                base = 1.0 if ".ln_" in name and name.endswith("weight") else 0.0
                values = base + sin_values(p.numel(), 0.375, float(index + 1), amp)
                p.copy_(torch.from_numpy(values.astype(np.float32)).reshape(p.shape))
                fx.put("%s.param.%s.index" % (case, name), [index], shape=[])
        seq, vocab = GPT["context"], GPT["vocab"]
        tokens = gpt_tokens(GPT_BATCH, seq, vocab, 0)
        targets = gpt_tokens(GPT_BATCH, seq, vocab, 1)
        opt = torch.optim.SGD(model.parameters(), lr=GPT_LR)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        fx.put("%s.logits" % case, logits.detach().numpy(), fmt="%.9g")
        fx.put("%s.loss" % case, [loss.item()], shape=[], fmt="%.9g")
        for name, p in params:
            fx.put("%s.grad.%s" % (case, name), p.grad.numpy(), fmt="%.9g")
        opt.step()
        with torch.no_grad():
            after = model(tokens)
            after_loss = F.cross_entropy(after.reshape(-1, vocab), targets.reshape(-1))
        fx.put("%s.after.logits" % case, after.numpy(), fmt="%.9g")
        fx.put("%s.after.loss" % case, [after_loss.item()], shape=[], fmt="%.9g")
    return {"gpt.txt": fx.write()}


def main():
    # SequentialLR steps its schedulers with an explicit epoch at the milestone; torch warns about that.
    warnings.filterwarnings("ignore", message="The epoch parameter")
    torch.set_num_threads(1)
    makers = {"optim": optimizer_fixtures, "schedules": schedule_fixture, "cnn": cnn_fixture, "gpt": gpt_fixture}
    chosen = sys.argv[1:] or list(makers)
    unknown = [n for n in chosen if n not in makers]
    if unknown:
        sys.exit("make_golden.py: unknown fixture(s) %s; choose from %s" % (", ".join(unknown), ", ".join(makers)))
    sizes = {}
    for name in chosen:
        sizes.update(makers[name]())
    for name, size in sizes.items():
        print("%-20s %8d bytes" % (name, size))
    print("%-20s %8d bytes" % ("total", sum(sizes.values())))


if __name__ == "__main__":
    main()
