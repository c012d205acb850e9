"""What feedback costs, measured side by side in one process (each pair timed alternately; medians of rounds).

    python benchmarks/overheads.py              # all three figures, CPU (a GPU when there is one)
    python benchmarks/overheads.py --quick      # fewer rounds
    python benchmarks/overheads.py --only kinds # one figure: kinds | readout | data

1. ``kinds``: a training step (forward + backward) of ``FeedbackNet(backbone, kind, steps=T)`` against T training
   steps' worth of the plain backbone (T forward + backward passes), per kind: ``ratio = time(FeedbackNet) /
   (T x time(backbone))``. Goal: at most 1.15 for ``deconv`` and the gating kinds (every kind's ratio listed).
2. ``readout``: one excitation-backprop map (:func:`feedback.readout.excitation_backprop`) against one forward +
   backward pass of the same model. Goal: at most 3x.
3. ``data``: generating a cluttered-digit scene against the training step that consumes it, per sample. Goal:
   generation at least 10x faster than training.
4. ``steps`` (run on a GPU; not part of the default set): training throughput of ``FeedbackNet(resnet50, kind,
   steps=T)`` at 224 px, batch 64, bf16 autocast + channels_last, for T = 1, 2, 4, against the plain backbone.

The models are the fast-tier ones (LeNet-5 ReLU at 32 px and a narrow ResNet-18 at 32 px), batch 32; the numbers
are whatever this machine gives, and the script prints the device and thread count it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
from feedback import FeedbackNet  # noqa: E402

KINDS = ("none", "deconv", "generative", "rectified", "cognitive", "tdm", "excitation", "wta")
BACKBONES = {"lenet5_relu": {}, "resnet18_small": {"channels": [16, 32, 64, 128]}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def alternate(fns: dict[str, Callable[[], None]], *, rounds: int, reps: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, timed alternately over ``rounds`` rounds of ``reps`` calls."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        out = model(x)
        logits = out.per_step if hasattr(out, "per_step") else [out]
        loss = sum(F.cross_entropy(lg, y) for lg in logits)
        if getattr(out, "aux_losses", None):
            loss = loss + sum(out.aux_losses.values())
        loss.backward()

    return step


def bench_kinds(device: torch.device, rounds: int, steps: int) -> list[dict]:
    rows = []
    for name, kw in BACKBONES.items():
        torch.manual_seed(0)
        bb = baselines.create_model(name, num_classes=10, in_chans=1, **kw).to(device)
        side = 32
        x = torch.rand(32, 1, side, side, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        plain = _train_step(bb, x, y)
        for kind in KINDS:
            try:
                net = FeedbackNet(bb, kind, steps=steps, input_size=(1, side, side)).to(device)
            except (TypeError, ValueError) as e:
                rows.append({"backbone": name, "kind": kind, "error": str(e).splitlines()[0]})
                continue
            t = alternate({"plain": plain, "fb": _train_step(net, x, y)}, rounds=rounds, reps=3, device=device)
            rows.append({"backbone": name, "kind": kind, "steps": steps, "ms_backbone": 1e3 * t["plain"],
                         "ms_feedback": 1e3 * t["fb"], "ratio": t["fb"] / (steps * t["plain"])})
    return rows


def bench_readout(device: torch.device, rounds: int) -> list[dict]:
    from feedback.readout import excitation_backprop

    rows = []
    for name, kw in BACKBONES.items():
        torch.manual_seed(0)
        model = baselines.create_model(name, num_classes=10, in_chans=1, **kw).to(device).eval()
        x = torch.rand(32, 1, 32, 32, device=device)
        y = torch.randint(0, 10, (32,), device=device)

        def fwd_bwd(model: torch.nn.Module = model, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            xx = x.clone().requires_grad_(True)
            model(xx).gather(1, y[:, None]).sum().backward()

        t = alternate({"fb": fwd_bwd, "eb": lambda m=model, x=x, y=y: excitation_backprop(m, x, y)}, rounds=rounds, reps=3,
                      device=device)
        rows.append({"backbone": name, "ms_forward_backward": 1e3 * t["fb"], "ms_excitation_backprop": 1e3 * t["eb"],
                     "ratio": t["eb"] / t["fb"]})
    return rows


def bench_data(device: torch.device, rounds: int) -> list[dict]:
    from experiments.data import create_dataset

    n = 256
    gen = lambda: create_dataset("cluttered_digits", seed=1, num_train=n, num_test=1, image_size=32)  # noqa: E731
    torch.manual_seed(0)
    rows = []
    for name, kw in BACKBONES.items():
        model = baselines.create_model(name, num_classes=10, in_chans=1, **kw).to(device)
        net = FeedbackNet(model, "none", steps=1, input_size=(1, 32, 32)).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        x = torch.rand(32, 1, 32, 32, device=device)
        y = (torch.rand(32, 10, device=device) > 0.8).float()

        def train_step(net: torch.nn.Module = net, opt: torch.optim.Optimizer = opt, x: torch.Tensor = x,
                       y: torch.Tensor = y) -> None:
            loss = F.binary_cross_entropy_with_logits(net(x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t = alternate({"gen": gen, "train": train_step}, rounds=rounds, reps=1, device=device)
        gen_per_sample, train_per_sample = t["gen"] / (n + 1), t["train"] / 32
        rows.append({"backbone": name, "us_generate_per_sample": 1e6 * gen_per_sample,
                     "us_train_per_sample": 1e6 * train_per_sample, "ratio_train_over_generate":
                     train_per_sample / gen_per_sample})
    return rows


def bench_steps(device: torch.device, rounds: int, kind: str = "deconv") -> list[dict]:
    bb = baselines.create_model("resnet50", num_classes=1000, in_chans=3).to(device, memory_format=torch.channels_last)
    x = torch.rand(64, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (64,), device=device)
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    rows, fns = [], {}

    def with_amp(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with amp():
                fn()
        return run

    fns["backbone"] = with_amp(_train_step(bb, x, y))
    for t in (1, 2, 4):
        net = FeedbackNet(bb, kind, steps=t, input_size=(3, 224, 224)).to(device, memory_format=torch.channels_last)
        fns[f"T={t}"] = with_amp(_train_step(net, x, y))
    times = alternate(fns, rounds=rounds, reps=3, device=device)
    for k, v in times.items():
        rows.append({"what": k, "kind": kind, "ms_step": 1e3 * v, "images_per_s": 64 / v,
                     "vs_backbone": v / times["backbone"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["kinds", "readout", "data", "steps"], default=None)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", default="")
    args = p.parse_args()
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    rounds = 3 if args.quick else 7
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {where}; torch {torch.__version__}")
    out: dict[str, list[dict]] = {}
    if args.only in (None, "kinds"):
        out["kinds"] = bench_kinds(device, rounds, args.steps)
        print(f"\n1. FeedbackNet training step at T={args.steps} / (T x backbone step); goal <= 1.15")
        for r in out["kinds"]:
            if "error" in r:
                print(f"  {r['backbone']:<15} {r['kind']:<11} n/a ({r['error']})")
            else:
                print(f"  {r['backbone']:<15} {r['kind']:<11} {r['ms_feedback']:8.1f} ms vs {args.steps} x "
                      f"{r['ms_backbone']:6.1f} ms  ratio {r['ratio']:.2f}")
    if args.only in (None, "readout"):
        out["readout"] = bench_readout(device, rounds)
        print("\n2. excitation-backprop map / (forward + backward); goal <= 3")
        for r in out["readout"]:
            print(f"  {r['backbone']:<15} {r['ms_excitation_backprop']:7.1f} ms vs {r['ms_forward_backward']:6.1f} ms"
                  f"  ratio {r['ratio']:.2f}")
    if args.only in (None, "data"):
        out["data"] = bench_data(device, rounds)
        print("\n3. cluttered-digit generation vs the training step, per sample; goal: training >= 10x generation")
        for r in out["data"]:
            print(f"  {r['backbone']:<15} generate {r['us_generate_per_sample']:7.1f} us, train "
                  f"{r['us_train_per_sample']:7.1f} us  ratio {r['ratio_train_over_generate']:.1f}")
    if args.only == "steps":
        out["steps"] = bench_steps(device, rounds)
        print("\n4. FeedbackNet(resnet50, deconv) training step, 224 px, batch 64, bf16 + channels_last")
        for r in out["steps"]:
            print(f"  {r['what']:<9} {r['ms_step']:7.1f} ms  {r['images_per_s']:7.1f} img/s  "
                  f"x{r['vs_backbone']:.2f} of the backbone")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, **out}, indent=2))


if __name__ == "__main__":
    main()
