"""Tests of baselines/siren.py and the coordinate-fitting datasets: initialisation, parameter counts, encodings."""

import doctest
import json
import math

import pytest
import torch

import baselines
from baselines import siren as sr
from experiments.cli import main
from experiments.data import create_dataset


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_param_counts_match_reference():
    assert n_params(sr.siren()) == 198_401  # 2-256x4-1 (reference/architectures.md)
    assert n_params(sr.siren(num_classes=3)) == 198_915
    assert n_params(sr.relu_mlp_coords()) == 2 * 256 + 256 + 3 * (256 * 256 + 256) + 257
    assert n_params(sr.relu_mlp_coords(posenc="nerf", num_freqs=10)) == n_params(sr.relu_mlp_coords()) + 40 * 256
    for name in ("siren", "relu_mlp_coords"):
        assert baselines.model_info(name)["staged"] is False


def test_initialisation_ranges():
    net = sr.siren(width=64, depth=3)
    first, *rest = net.layers
    assert first.first and float(first.linear.weight.detach().abs().max()) <= 1 / 2
    for layer in [*rest]:
        bound = math.sqrt(6 / 64) / 30
        w = layer.linear.weight.detach()
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
        assert abs(float(w.var()) - bound**2 / 3) < 0.1 * bound**2 / 3  # U(-b, b) has variance b^2 / 3
    assert float(net.head.weight.detach().abs().max()) <= math.sqrt(6 / 64) / 30


def _normal_ks(z: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance of the standardised sample ``z`` from N(0, 1)."""
    z = ((z - z.mean()) / z.std()).sort().values.double()
    n = z.numel()
    cdf = torch.special.ndtr(z)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def test_preactivations_stay_standard_across_layers():
    """Sitzmann et al., section 3.2 / supplement 1: at init every hidden pre-sine value w0 (W h + b) is ~ N(0, 1),
    every sine output arcsine-distributed (variance 1/2), at every depth; a default-initialised sine net drifts."""
    torch.manual_seed(0)
    net = sr.siren(width=256, depth=8)
    pre: list[torch.Tensor] = []
    hooks = [layer.linear.register_forward_hook(lambda m, i, o, w0=layer.w0: pre.append(w0 * o.detach()))
             for layer in net.layers]
    with torch.no_grad():
        net(torch.rand(2048, 2) * 2 - 1)
    for h in hooks:
        h.remove()
    stds = [float(p.std()) for p in pre[1:]]
    for p, std in zip(pre[1:], stds):
        assert 0.8 < std < 1.2, stds
        assert abs(float(p.mean())) < 0.1
        assert _normal_ks(p.flatten()[::7]) < 0.03  # Gaussian shape
        post = torch.sin(p)
        assert abs(float((post**2).mean()) - 0.5) < 0.1  # arcsine on [-1, 1] has E[x^2] = 1/2
    assert max(stds) / min(stds) < 1.15  # no drift with depth
    # contrast: the same sine stack with PyTorch's default Linear init saturates the phases (std >> 1)
    torch.manual_seed(0)
    plain = [torch.nn.Linear(2 if i == 0 else 256, 256) for i in range(8)]
    h, plain_stds = torch.rand(2048, 2) * 2 - 1, []
    with torch.no_grad():
        for layer in plain:
            z = 30.0 * layer(h)
            plain_stds.append(float(z.std()))
            h = torch.sin(z)
    assert min(plain_stds[1:]) > 5.0


def test_posenc_options_and_errors():
    torch.manual_seed(0)
    x = torch.rand(7, 2) * 2 - 1
    nerf_pe = sr.relu_mlp_coords(posenc="nerf", num_freqs=3)
    enc = nerf_pe.encoding(x)
    assert enc.shape == (7, 2 * 7)
    assert torch.allclose(enc[:, 2:4], torch.sin(math.pi * x)) and torch.allclose(enc[:, 12:14], torch.cos(4 * math.pi * x))
    gauss = sr.relu_mlp_coords(posenc="gauss", fourier_features=16, fourier_scale=5.0)
    g = gauss.encoding(x)
    assert g.shape == (7, 32) and torch.allclose(g[:, :16] ** 2 + g[:, 16:] ** 2, torch.ones(7, 16))
    assert "encoding.B" in gauss.state_dict()  # the random frequencies travel with a checkpoint
    for net in (nerf_pe, gauss, sr.relu_mlp_coords(), sr.siren(num_classes=3)):
        assert net(x).shape[0] == 7
    with pytest.raises(ValueError, match="unknown posenc 'fourier'; choose from: none, nerf, gauss"):
        sr.relu_mlp_coords(posenc="fourier")


def test_image_and_signal_fit_datasets():
    d = create_dataset("image_fit", image_size=16)
    assert d.task == "regress" and d.num_classes == 1 and d.in_chans == 2 and d.image_size == 0
    assert d.train.inputs.shape == (256, 2) and d.train.targets.shape == (256, 1)
    assert torch.equal(d.test.inputs, d.train.inputs) and torch.equal(d.test.targets, d.train.targets)
    between = d.tests["between"]
    assert between.inputs.shape == (768, 2)
    assert float(d.train.inputs.abs().max()) < 1 and 0 <= float(d.train.targets.min()) < float(d.train.targets.max()) <= 1
    # no training coordinate is held out
    assert not (torch.cdist(between.inputs, d.train.inputs).min(1).values < 1e-6).any()
    s1, s2 = create_dataset("signal_fit", seed=1), create_dataset("signal_fit", seed=2)
    assert s1.train.inputs.shape == (512, 1) and s1.tests["between"].targets.shape == (512, 1)
    assert not torch.equal(s1.train.targets, s2.train.targets)
    assert torch.equal(s1.train.targets, create_dataset("signal_fit", seed=1).train.targets)


def test_siren_fits_signal_better_than_relu():
    d = create_dataset("signal_fit", seed=0, num_points=256)
    x, y = d.train.inputs, d.train.targets

    def fit(net: torch.nn.Module) -> float:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4 if isinstance(net, sr.Siren) else 1e-3)
        for _ in range(300):
            opt.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return -10 * math.log10(float(((net(x) - y) ** 2).mean()))

    torch.manual_seed(0)
    siren_psnr = fit(sr.siren(in_chans=1, width=64, depth=3))
    relu_psnr = fit(sr.relu_mlp_coords(in_chans=1, width=64, depth=3))
    assert siren_psnr > relu_psnr + 5, (siren_psnr, relu_psnr)


def test_doctests():
    result = doctest.testmod(sr, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_config_runs_through_the_runner(tmp_path):
    overrides = ["train.epochs=1", "data.options.image_size=8", "data.batch_size=32", "model.backbone_args.width=16",
                 "log.progress=false", "log.wandb=disabled", f"runs_dir={tmp_path}"]
    assert main(["run", "siren_photo", *overrides]) == 0
    results = sorted(tmp_path.glob("siren_photo/*/seed0/result.json"))
    assert len(results) == 4  # siren, relu x {none, nerf, gauss}
    for path in results:
        result = json.loads(path.read_text())
        assert result["task"] == "regress" and math.isfinite(result["metrics"]["psnr"])
