"""The tool experiments: ``python -m experiments.tools.run <tool> [--out DIR] [--quick] [--seed K]``.

Each tool trains small models on scikit-learn's digits (CPU, minutes; ``--quick``: well under a minute) and writes
to its run directory (default ``runs/tools/<tool>/<quick|full>-seed<k>/``):

- ``results.md``: the results table (Markdown), also printed;
- ``results.csv``: the same rows;
- ``result.json``: ``{"tool", "quick", "seed", "columns", "rows", "meta", "seconds", "environment"}``.

Tools: ``lowrank`` (SVD vs Fisher-weighted SVD, accuracy vs kept parameters, before and after a fine-tune),
``proxies`` (zero-cost proxies vs trained accuracy over a small search space: Kendall tau, Spearman rho),
``obd`` (optimal brain damage vs magnitude pruning at equal sparsity, iterative with retraining),
``diagnostics`` (vanishing gradients in deep sigmoid MLPs vs ReLU and residual MLPs; exploding gradients in a long
vanilla RNN). Models, data and the optimizer come from the runner (``experiments.train.build_model``, ``load_data``,
``batches``, ``make_optimizer``); the loop here is a plain one (cross-entropy, cosine learning rate, no run
directories per model).

An unknown tool exits with code 2 (argparse) before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.tools import logits_of
from experiments.tools.random_walk import exp_random_walk

__all__ = ["TOOLS", "accuracy", "fit", "main", "make_config", "make_model", "make_data", "write_results"]


# --------------------------------------------------------------------------------------------------- helpers


def make_config(*, backbone: str = "lenet5_relu", feedback: str = "none", steps: int = 1,
                backbone_args: dict[str, Any] | None = None, image_size: int = 32, lr: float = 2e-3,
                weight_decay: float = 0.0, batch_size: int = 64, seed: int = 0) -> Any:
    """An ``ExperimentConfig`` for the runner's builders (the only place this module touches the schema)."""
    from experiments.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.model.backbone, cfg.model.feedback, cfg.model.steps = backbone, feedback, steps
    cfg.model.backbone_args = dict(backbone_args or {})
    cfg.data.name, cfg.data.options, cfg.data.batch_size = "digits", {"image_size": image_size}, batch_size
    cfg.train.lr, cfg.train.weight_decay, cfg.train.seed = lr, weight_decay, seed
    return cfg


_DATA: dict[int, Any] = {}


def make_data(image_size: int = 32) -> Any:
    """The digits splits at ``image_size`` (cached per process)."""
    from experiments.train import load_data

    if image_size not in _DATA:
        _DATA[image_size] = load_data(make_config(image_size=image_size))
    return _DATA[image_size]


def make_model(cfg: Any, data: Any) -> nn.Module:
    """``experiments.train.build_model`` (a ``FeedbackNet``), seeded with ``cfg.train.seed``."""
    from experiments.train import build_model

    torch.manual_seed(cfg.train.seed)
    return build_model(cfg, data)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, averaged over a FeedbackNet's steps, plus its auxiliary losses (as ``train.supervise=all``)."""
    out = model(x)
    if hasattr(out, "per_step"):
        loss = torch.stack([F.cross_entropy(lg, y) for lg in out.per_step]).mean()
        return loss + sum(out.aux_losses.values()) if out.aux_losses else loss
    return F.cross_entropy(out, y)


def fit(model: nn.Module, data: Any, *, epochs: int, lr: float = 2e-3, seed: int = 0, batch_size: int = 64,
        weight_decay: float = 0.0, after_step: Callable[[], None] | None = None,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = loss_of) -> float:
    """Train ``model`` on ``data.train`` with AdamW and a cosine learning rate; return the seconds spent.

    ``after_step`` runs after every optimizer step (pruning masks re-apply themselves there).
    """
    from experiments.train import batches, make_optimizer

    cfg = make_config(lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    opt = make_optimizer(model, cfg)
    total = max(1, epochs * math.ceil(len(data.train) / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    model.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for x, y in batches(data.train, batch_size, shuffle=True, seed=seed, epoch=epoch):
            loss = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, ds: Any, *, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent of ``model`` on an ``ImageSet`` (eval mode; the mode is restored)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(ds), batch_size):
        x, y = ds.images[i : i + batch_size], ds.labels[i : i + batch_size]
        correct += int((logits_of(model(x)).argmax(1) == y).sum())
    model.train(was)
    return 100.0 * correct / len(ds)


def train_batches(data: Any, n: int, *, batch_size: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """The first ``n`` shuffled training minibatches (seeded)."""
    from experiments.train import batches

    out = []
    for b in batches(data.train, batch_size, shuffle=True, seed=seed, epoch=10_000):
        out.append(b)
        if len(out) == n:
            break
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e5 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` in order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(out: Path, *, tool: str, tables: dict[str, tuple[list[dict], list[str]]], meta: dict[str, Any],
                  quick: bool, seed: int, seconds: float) -> str:
    """Write ``results.md`` (every table), ``results.csv`` (``<table>.csv`` beyond the first) and ``result.json``."""
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {tool} ({'quick' if quick else 'full'}, seed {seed}, {seconds:.0f} s)", ""]
    for i, (name, (rows, columns)) in enumerate(tables.items()):
        md += [f"## {name}", "", markdown_table(rows, columns), ""]
        path = out / ("results.csv" if i == 0 else f"{name}.csv")
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    if meta.get("notes"):
        md += ["", *meta["notes"]]
    text = "\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    payload = {"tool": tool, "quick": quick, "seed": seed, "seconds": round(seconds, 2), "environment": env,
               "tables": {k: {"columns": list(c), "rows": r} for k, (r, c) in tables.items()}, "meta": meta}
    (out / "result.json").write_text(json.dumps(payload, indent=1, default=float))
    return text


# --------------------------------------------------------------------------------------------------- lowrank


def exp_lowrank(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """SVD vs Fisher-weighted SVD on a trained ``lenet5_relu``: accuracy vs kept parameters, then a fine-tune.

    Every Linear/Conv2d except the classifier head is factorized at the same target ratio of its own parameters
    (layers where factoring would not save stay dense). Fisher: squared minibatch gradients summed over a few
    training batches.
    """
    from experiments.tools.lowrank import compress_model, count_params, fisher_information

    data = make_data(32)
    cfg = make_config(seed=seed)
    model = make_model(cfg, data)
    epochs, ft_epochs = (8, 1) if quick else (25, 3)
    ratios = (0.5, 0.2, 0.1) if quick else (0.7, 0.5, 0.3, 0.2, 0.1, 0.05)
    t_train = fit(model, data, epochs=epochs, seed=seed)
    base_acc, base_params = accuracy(model, data.test), count_params(model)
    t0 = time.perf_counter()
    fisher = fisher_information(model, train_batches(data, 4 if quick else 16, seed=seed), loss_of)
    t_fisher = time.perf_counter() - t0
    rows = [{"method": "dense", "ratio": 1.0, "params": base_params, "kept %": 100.0, "acc %": base_acc,
             "acc ft %": base_acc}]
    for ratio in ratios:
        for method in ("svd", "fwsvd", "fwsvd0"):  # fwsvd0: FWSVD with dead (zero-Fisher) units kept silent
            small, ranks = compress_model(model, ratio=ratio, fisher=fisher if method != "svd" else None,
                                          skip=("backbone.head",), zero_dead=method == "fwsvd0")
            acc0 = accuracy(small, data.test)
            fit(small, data, epochs=ft_epochs, lr=5e-4, seed=seed + 1)
            n = count_params(small)
            rows.append({"method": method, "ratio": ratio, "params": n, "kept %": 100.0 * n / base_params,
                         "acc %": acc0, "acc ft %": accuracy(small, data.test),
                         "ranks": " ".join(str(r) for r in ranks.values())})
    meta = {"model": "lenet5_relu", "data": "digits 32px (1347 train / 450 test)", "train_epochs": epochs,
            "finetune_epochs": ft_epochs, "finetune_lr": 5e-4, "train_seconds": round(t_train, 2),
            "fisher_seconds": round(t_fisher, 3),
            "notes": ["ratio: target share of each factorized layer's parameters; kept %: of the whole model "
                      "(the head stays dense). acc ft: after the fine-tune. ranks: C1 C3 C5 F6. fwsvd0: "
                      "FWSVD whose rows with zero Fisher information (dead units) are set to zero."]}
    cols = ["method", "ratio", "params", "kept %", "acc %", "acc ft %", "ranks"]
    return {"lowrank": (rows, cols)}, meta


# --------------------------------------------------------------------------------------------------- proxies

# (backbone, feedback, steps, backbone_args): backbone family x width x depth x feedback kind x steps; 22
# architectures whose trained accuracies spread from poor (deep sigmoid MLPs) to good (LeNet, ResNet), so that a
# rank correlation has something to rank. `--quick` takes the first QUICK_SPACE of them.
SEARCH_SPACE: tuple[tuple[str, str, int, dict[str, Any]], ...] = (
    ("lenet5_relu", "none", 1, {}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 1, "width": 16}),
    ("resnet18_small", "none", 1, {"channels": (4, 8, 16, 32)}),
    ("lenet5_relu", "deconv", 2, {}),
    ("lenet5_relu", "deconv", 3, {}),
    ("lenet5_relu", "cognitive", 2, {}),
    ("lenet5_relu", "rectified", 2, {}),
    ("resnet18_small", "deconv", 2, {"channels": (4, 8, 16, 32)}),
    ("resnet18_small", "none", 1, {"channels": (8, 16, 32, 64)}),
    ("resnet18_small", "deconv", 2, {"channels": (8, 16, 32, 64)}),
    ("resnet18_small", "none", 1, {"channels": (2, 4, 8, 16)}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 1, "width": 64}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 2, "width": 16}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 2, "width": 64}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 4, "width": 64}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 2, "width": 64, "act": "sigmoid"}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 4, "width": 64, "act": "sigmoid"}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 6, "width": 32, "act": "sigmoid"}),
    ("mlp", "none", 1, {"img_size": 32, "depth": 3, "width": 32, "act": "tanh"}),
    ("mlp", "deconv", 2, {"img_size": 32, "depth": 2, "width": 64}),
    ("mlp", "cognitive", 2, {"img_size": 32, "depth": 2, "width": 64}),
    ("lenet5_relu", "tdm", 2, {}),
)
QUICK_SPACE = 3


def _arch_width(args: dict[str, Any]) -> str:
    if "channels" in args:
        return "x".join(str(c) for c in args["channels"])
    if "width" in args:
        return f"{args.get('depth', 2)}x{args['width']} {args.get('act', 'relu')}"
    return "-"


def exp_proxies(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """Zero-cost proxies at initialisation (one minibatch of 32) vs accuracy after a short training, per arch."""
    from scipy.stats import kendalltau, spearmanr

    from experiments.tools.proxies import PROXIES, flops, timed_proxies

    data = make_data(32)
    space = SEARCH_SPACE[:QUICK_SPACE] if quick else SEARCH_SPACE
    epochs = 1 if quick else 5  # ResNets at 32 px are still at chance after 2 epochs on the digits
    x, y = train_batches(data, 1, batch_size=32, seed=seed)[0]
    names = tuple(PROXIES)
    flops(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (4,))  # warm-up: the first FLOP count pays a one-off import
    archs = []
    for bb, fb, steps, args in space:
        cfg = make_config(backbone=bb, feedback=fb, steps=steps, backbone_args=args, seed=seed)
        model = make_model(cfg, data)
        scores = timed_proxies(model, x, y, names=names, seed=seed)
        t_train = fit(model, data, epochs=epochs, seed=seed)
        width = _arch_width(args)
        row = {"backbone": bb, "width": width, "feedback": fb, "steps": steps, "acc %": accuracy(model, data.test),
               "train s": t_train, "proxies s": sum(t for _, t in scores.values())}
        row.update({n: int(s) if n in ("params", "flops") else s for n, (s, _) in scores.items()})
        row.update({f"{n} s": t for n, (_, t) in scores.items()})
        archs.append(row)
    acc = [r["acc %"] for r in archs]
    corr = []
    for n in names:
        v = [r[n] for r in archs]
        ok = [i for i, s in enumerate(v) if math.isfinite(s)]
        tau = kendalltau([v[i] for i in ok], [acc[i] for i in ok])
        rho = spearmanr([v[i] for i in ok], [acc[i] for i in ok])
        corr.append({"proxy": n, "kendall tau": float(tau.statistic), "tau p": float(tau.pvalue),
                     "spearman rho": float(rho.statistic), "rho p": float(rho.pvalue),
                     "mean s": sum(r[f"{n} s"] for r in archs) / len(archs)})
    corr.append({"proxy": "(training)", "mean s": sum(r["train s"] for r in archs) / len(archs)})
    meta = {"data": "digits 32px", "epochs": epochs, "proxy_batch": 32, "archs": len(archs),
            "notes": [f"Proxies on one minibatch of 32 training images at initialisation; accuracy after {epochs} "
                      "epoch(s) of AdamW (lr 2e-3, cosine). Correlations over the archs above "
                      f"(n = {len(archs)}); p-values from scipy.stats. Times are wall-clock seconds on this "
                      "machine's shared CPU."]}
    arch_cols = ["backbone", "width", "feedback", "steps", "acc %", "train s", "proxies s", *names]
    return {"proxies": (corr, ["proxy", "kendall tau", "tau p", "spearman rho", "rho p", "mean s"]),
            "archs": (archs, arch_cols)}, meta


# --------------------------------------------------------------------------------------------------- obd


def exp_obd(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """OBD (Fisher = Gauss-Newton diagonal) vs magnitude pruning of a trained ``lenet5_relu``, iterative, retrained.

    Both start from the same trained weights; at each target sparsity (global over every conv/linear weight) the
    saliencies are recomputed on the current pruned model, the lowest are pruned, accuracy is measured, and the
    model is retrained with its mask before the next step.
    """
    import copy

    from experiments.tools.obd import Pruner, fisher_diagonal, magnitude_saliency, obd_saliency

    data = make_data(32)
    trained = make_model(make_config(seed=seed), data)
    epochs, retrain = (8, 1) if quick else (25, 2)
    targets = (0.5, 0.8, 0.9) if quick else (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    fit(trained, data, epochs=epochs, seed=seed)
    dense = accuracy(trained, data.test)
    rows = [{"method": "dense", "sparsity %": 0.0, "acc %": dense, "acc retrained %": dense}]
    t_sal = {"obd": 0.0, "magnitude": 0.0}
    for method in ("obd", "magnitude"):
        model = copy.deepcopy(trained)
        pruner = Pruner(model)
        gen = torch.Generator().manual_seed(seed)
        for step, target in enumerate(targets):
            t0 = time.perf_counter()
            if method == "obd":
                h = fisher_diagonal(model, train_batches(data, 4 if quick else 8, seed=seed + step), pruner.names,
                                    generator=gen)
                sal = {n: obd_saliency(p, h[n]) for n, p in pruner.params.items()}
            else:
                sal = {n: magnitude_saliency(p) for n, p in pruner.params.items()}
            t_sal[method] += time.perf_counter() - t0
            pruner.prune_to(target, sal)
            acc0 = accuracy(model, data.test)
            fit(model, data, epochs=retrain, lr=5e-4, seed=seed + 1 + step, after_step=pruner.apply)
            rows.append({"method": method, "sparsity %": 100 * pruner.sparsity(), "acc %": acc0,
                         "acc retrained %": accuracy(model, data.test)})
    rows.sort(key=lambda r: (r["sparsity %"], r["method"]))
    meta = {"model": "lenet5_relu", "train_epochs": epochs, "retrain_epochs": retrain, "retrain_lr": 5e-4,
            "saliency_seconds": {k: round(v, 3) for k, v in t_sal.items()},
            "notes": ["Global unstructured pruning of every conv/linear weight (61,496 of 61,706 parameters); "
                      "sparsity steps applied in sequence to the same model per method. acc %: right after "
                      f"pruning; acc retrained %: after {retrain} epoch(s) with the mask. OBD Hessian diagonal: "
                      "Fisher with labels sampled from the model (= Gauss-Newton diagonal in expectation), "
                      f"per-sample gradients over {4 if quick else 8} minibatches of 64."]}
    return {"obd": (rows, ["method", "sparsity %", "acc %", "acc retrained %"])}, meta


# --------------------------------------------------------------------------------------------------- diagnostics


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(width, width), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(x))


def deep_mlp(kind: str, depth: int, *, width: int = 64, inputs: int = 64, classes: int = 10) -> nn.Sequential:
    """``depth`` hidden layers of ``width``: ``sigmoid`` / ``relu`` (Linear + activation) or ``residual``
    (``x + relu(Linear(x))``); PyTorch's default initialisation."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(inputs, width)]
    for _ in range(depth):
        if kind == "residual":
            layers.append(_Residual(width))
        else:
            layers += [nn.Linear(width, width), nn.Sigmoid() if kind == "sigmoid" else nn.ReLU()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def rnn_gradients(*, gain: float, nonlinearity: str, steps: int, x: torch.Tensor, y: torch.Tensor,
                  hidden: int = 64, seed: int = 0) -> dict[str, float]:
    """``||dL/dh_t||`` at t = 1 and T of an unrolled ``nn.RNNCell`` (``W_hh = gain * orthogonal``) reading ``x``
    ``(B, T, D)``, with a linear readout of ``h_T`` and cross-entropy."""
    torch.manual_seed(seed)
    cell, readout = nn.RNNCell(x.shape[2], hidden, nonlinearity=nonlinearity), nn.Linear(hidden, 10)
    with torch.no_grad():
        nn.init.orthogonal_(cell.weight_hh)
        cell.weight_hh.mul_(gain)
    h = torch.zeros(x.shape[0], hidden)
    states = []
    for t in range(steps):
        h = cell(x[:, t], h)
        h.retain_grad()
        states.append(h)
    F.cross_entropy(readout(h), y).backward()
    first, last = float(states[0].grad.norm()), float(states[-1].grad.norm())
    return {"|dL/dh_1|": first, "|dL/dh_T|": last, "ratio 1/T": first / last,
            "|dL/dW_hh|": float(cell.weight_hh.grad.norm())}


def exp_diagnostics(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """Vanishing gradients in deep sigmoid MLPs vs ReLU and residual MLPs; exploding gradients in a long RNN."""
    from experiments.tools.diagnostics import ReLUMonitor, grad_norms

    data = make_data(8)
    depths = (4, 16) if quick else (2, 8, 16, 32)
    epochs = 2 if quick else 10
    x, y = train_batches(data, 1, batch_size=256, seed=seed)[0]
    mlp_rows = []
    for kind in ("sigmoid", "relu", "residual"):
        for depth in depths:
            torch.manual_seed(seed)
            net = deep_mlp(kind, depth)
            mon = ReLUMonitor(net)
            F.cross_entropy(net(x), y).backward()
            g = grad_norms(net, prefix="")
            dead = mon.summary()
            first, last = g["1"], g[str(len(net) - 1)]
            mon.remove()
            net.zero_grad()
            fit(net, data, epochs=epochs, lr=1e-3, seed=seed)
            dead_vals = [v for k, v in dead.items() if k.startswith("dead_relu/")]
            mlp_rows.append({"net": kind, "depth": depth, "|g| first": first, "|g| last": last,
                             "first/last": first / last,
                             "dead relu %": 100 * sum(dead_vals) / len(dead_vals) if dead_vals else "",
                             "acc %": accuracy(net, data.test)})
    seq = data.train.images[:256].reshape(-1, 64, 1)  # each 8x8 digit read pixel by pixel: T = 64
    rnn_rows = []
    for nl in ("tanh", "relu"):
        for gain in (0.5, 1.0, 1.5, 2.0):
            r = rnn_gradients(gain=gain, nonlinearity=nl, steps=64, x=seq, y=data.train.labels[:256], seed=seed)
            rnn_rows.append({"cell": nl, "gain": gain, **r})
    meta = {"mlp_width": 64, "mlp_epochs": epochs, "mlp_lr": 1e-3, "rnn_hidden": 64, "rnn_steps": 64,
            "notes": ["MLPs: gradient norms at initialisation on one batch of 256 digits (8x8, flattened): |g| "
                      "first = the input layer's weight gradient, last = the output layer's; dead relu % = ReLU "
                      "units zero for all 256 samples (averaged over layers); acc after training. RNN: "
                      "nn.RNNCell unrolled over the 64 pixels of 256 digits, W_hh = gain x orthogonal, loss on "
                      "h_T; ratio 1/T = |dL/dh_1| / |dL/dh_T|."]}
    return {"mlp": (mlp_rows, ["net", "depth", "|g| first", "|g| last", "first/last", "dead relu %", "acc %"]),
            "rnn": (rnn_rows, ["cell", "gain", "|dL/dh_1|", "|dL/dh_T|", "ratio 1/T", "|dL/dW_hh|"])}, meta


def exp_tiling(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """Tiling (members trained on the ensemble's residual error) vs one network with the same parameters."""
    from experiments.tools.tiling import ensemble_logits, fit_member, fit_tiling, mlp_member

    data = make_data(8)
    xtr, ytr = data.train.images.flatten(1), data.train.labels
    xte, yte = data.test.images.flatten(1), data.test.labels
    members, hidden, epochs = (3, 8, 10) if quick else (6, 8, 40)

    def acc(logits: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * float((logits.argmax(-1) == y).float().mean())

    t0 = time.perf_counter()
    tiles = fit_tiling(xtr, ytr, num_classes=10, members=members, hidden=hidden, epochs=epochs, seed=seed)
    tiling_s = time.perf_counter() - t0
    rows = []
    for k in range(1, members + 1):
        params = sum(p.numel() for m in tiles[:k] for p in m.parameters())
        rows.append({"model": f"tiling, {k} member(s) of width {hidden}", "params": params,
                     "train acc %": acc(ensemble_logits(tiles[:k], xtr), ytr),
                     "test acc %": acc(ensemble_logits(tiles[:k], xte), yte)})
    # one network with the same number of parameters: a single hidden layer members x hidden wide
    torch.manual_seed(seed)
    single = mlp_member(xtr.shape[1], members * hidden, 10)
    t0 = time.perf_counter()
    fit_member(single, xtr, ytr, None, epochs=epochs * members, seed=seed)
    single_s = time.perf_counter() - t0
    single.eval()
    with torch.no_grad():
        rows.append({"model": f"one network of width {members * hidden}",
                     "params": sum(p.numel() for p in single.parameters()),
                     "train acc %": acc(single(xtr), ytr), "test acc %": acc(single(xte), yte)})
    meta = {"members": members, "hidden": hidden, "epochs_per_member": epochs, "single_epochs": epochs * members,
            "seconds": {"tiling": round(tiling_s, 2), "single": round(single_s, 2)},
            "notes": ["digits 8x8 flattened; members are one-hidden-layer ReLU MLPs added in logit space, each "
                      "trained with Adam on CE(frozen ensemble + member); the single network gets the same total "
                      "number of epochs."]}
    return {"tiling": (rows, ["model", "params", "train acc %", "test acc %"])}, meta


# --------------------------------------------------------------------------------------------------- main


TOOLS: dict[str, Callable[..., tuple[dict, dict]]] = {
    "lowrank": exp_lowrank,
    "proxies": exp_proxies,
    "obd": exp_obd,
    "diagnostics": exp_diagnostics,
    "tiling": exp_tiling,
    "random_walk": exp_random_walk,
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tools.run", description=__doc__.split("\n\n")[0])
    p.add_argument("tool", choices=sorted(TOOLS))
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/tools/<tool>/<mode>-seed<k>)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster version (smoke scale)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / "tools" / args.tool / f"{'quick' if args.quick else 'full'}-seed{args.seed}"
    t0 = time.perf_counter()
    tables, meta = TOOLS[args.tool](quick=args.quick, seed=args.seed)
    text = write_results(out, tool=args.tool, tables=tables, meta=meta, quick=args.quick, seed=args.seed,
                         seconds=time.perf_counter() - t0)
    print(text)
    print(f"wrote {out}/results.md, results.csv, result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
