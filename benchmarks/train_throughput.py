"""Training throughput of the runner's loop against a bare PyTorch loop, on the same model, data and card.

    python benchmarks/train_throughput.py            # CUDA: ResNet-50, 224 px, bf16 autocast, channels_last
    python benchmarks/train_throughput.py --quick    # fewer steps (what benchmarks/gpu_check.sh runs)
    python benchmarks/train_throughput.py --compile  # add torch.compile rows

Both loops train the same network (a copy of the same weights) on the same in-memory batches, which are copied
from CPU memory to the device every step as the runner does. The bare loop is what one writes by hand:
``autocast -> model(x) -> cross_entropy -> backward -> AdamW.step``. Ours is the runner's step: the network inside
``FeedbackNet(backbone, "none", steps=1)`` (the Staged loop, per-step bookkeeping), the task's loss, the
``GradScaler``/scheduler/clip plumbing of :class:`experiments.train.TrainStep`, the epoch order, the augmentation
call and the non-finite-loss accumulator of ``train_run``, with the training split where the runner puts it
(``data.on_device: auto``: in GPU memory when it fits, so shuffled batches are gathered there). The row
``bare+gpu_data`` is the bare loop slicing the same GPU-resident tensor, which separates the data path from the
framework's own cost. The two are timed alternately (``--rounds`` rounds
after warm-up) in one process, and the script prints images/s for each and their ratio (ours / bare): 1.00 means
the framework costs nothing. Without CUDA it measures a small CPU configuration (ResNet-18-small at 32 px) instead.
Numbers are whatever this card gives: the script prints the device it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
from experiments.augment import augment_batch  # noqa: E402
from experiments.data import ImageSet  # noqa: E402
from experiments.tasks import create_task  # noqa: E402
from experiments.train import TrainStep, epoch_order, train_split_on_device  # noqa: E402
from feedback import FeedbackNet  # noqa: E402


def backbone(name: str, *, num_classes: int, in_chans: int, **kw) -> nn.Module:
    if name in baselines.list_models():
        return baselines.create_model(name, num_classes=num_classes, in_chans=in_chans, **kw)
    import timm

    from baselines.resnet import StagedResNet

    return StagedResNet.from_timm(timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kw))


def setup(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        cfg = dict(model="resnet50", kw={}, size=224, chans=3, classes=1000, batch=args.batch or 128, amp=True)
        torch.backends.cudnn.benchmark = True
    else:
        cfg = dict(model="resnet18_small", kw={"channels": [8, 16, 32, 64]}, size=32, chans=3, classes=10,
                   batch=args.batch or 32, amp=False)
    cfg.update(device=device)
    return cfg


def timed(fn, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="also time both loops under torch.compile")
    p.add_argument("--json", default="", help="write the measurements to this file")
    args = p.parse_args()
    c = setup(args)
    device, B = c["device"], c["batch"]
    small = args.quick or device.type == "cpu"
    steps = args.steps or (10 if device.type == "cpu" else 20 if args.quick else 50)
    rounds = args.rounds or (3 if small else 5)
    warmup = 3 if device.type == "cpu" else 5 if args.quick else 10
    n_images = B * 8
    torch.manual_seed(0)
    images = torch.rand(n_images, c["chans"], c["size"], c["size"])
    labels = torch.randint(0, c["classes"], (n_images,))
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    amp_dtype = torch.bfloat16
    amp = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if c["amp"] else contextlib.nullcontext

    base = backbone(c["model"], num_classes=c["classes"], in_chans=c["chans"], **c["kw"])
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    split = train_split_on_device(ImageSet(images=images, labels=labels,
                                           source_ids=torch.zeros(n_images, 1, dtype=torch.long)), device, "auto")
    on_device = device.type != "cpu" and split.images.device.type == device.type

    def make_bare(compiled: bool, gpu_data: bool = False):
        model = copy.deepcopy(base).to(device, memory_format=fmt).train()
        src_x, src_y = (split.images, split.labels) if gpu_data else (images, labels)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fwd = torch.compile(model) if compiled else model

        def run(n: int) -> None:
            for i in range(n):
                j = (i % 8) * B
                x = src_x[j : j + B].to(device, non_blocking=True, memory_format=fmt)
                y = src_y[j : j + B].to(device, non_blocking=True)
                with amp():
                    loss = F.cross_entropy(fwd(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    def make_ours(compiled: bool):
        from experiments.config import ExperimentConfig
        from experiments.train import lr_factor, make_optimizer

        cfg = ExperimentConfig()
        cfg.train.lr = 1e-4
        net = FeedbackNet(copy.deepcopy(base), "none", steps=1, input_size=(c["chans"], c["size"], c["size"]))
        net = net.to(device, memory_format=fmt).train()
        opt = make_optimizer(net, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 10**6, cfg))
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        task = create_task("classify", multilabel=False)
        step = TrainStep(torch.compile(net) if compiled else net, opt, sched, scaler, task, amp=amp)
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        state = {"epoch": 0}

        def run(n: int) -> None:
            nonlocal nonfinite
            order = epoch_order(n_images, seed=0, epoch=state["epoch"])
            state["epoch"] += 1
            for i in range(n):
                b = i % 8
                idx = order[b * B : (b + 1) * B]
                x = split.images[idx].to(device, non_blocking=True, memory_format=fmt)
                y = split.labels[idx].to(device, non_blocking=True)
                x = augment_batch(x)
                loss, _ = step(x, y)
                nonfinite |= ~torch.isfinite(loss)

        return run

    loops = {"bare": make_bare(False), "ours": make_ours(False)}
    if on_device:
        loops["bare+gpu_data"] = make_bare(False, gpu_data=True)
    if args.compile:
        loops |= {"bare+compile": make_bare(True), "ours+compile": make_ours(True)}
    for fn in loops.values():
        fn(warmup)
    times: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(rounds):
        for k, fn in loops.items():  # alternate, so drifting clocks or thermals hit both alike
            times[k].append(timed(fn, steps, device))
    ips = {k: [steps * B / t for t in v] for k, v in times.items()}
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"model: {c['model']} at {c['size']} px, batch {B}, "
          f"{'bf16 autocast + channels_last' if c['amp'] else 'float32'}; {rounds} rounds x {steps} steps")
    print(f"{'loop':<14} {'images/s (median)':>18} {'min':>9} {'max':>9}")
    for k, v in ips.items():
        print(f"{k:<14} {statistics.median(v):>18.1f} {min(v):>9.1f} {max(v):>9.1f}")
    ratios = {"ours/bare": statistics.median(ips["ours"]) / statistics.median(ips["bare"])}
    if on_device:
        ratios["ours/bare+gpu_data"] = statistics.median(ips["ours"]) / statistics.median(ips["bare+gpu_data"])
    if args.compile:
        ratios["ours+compile/bare+compile"] = (statistics.median(ips["ours+compile"])
                                              / statistics.median(ips["bare+compile"]))
        ratios["bare+compile/bare"] = statistics.median(ips["bare+compile"]) / statistics.median(ips["bare"])
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.3f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "model": c["model"], "batch": B, "ips": ips,
                                               "train_split_on_gpu": on_device,
                                               "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
