"""Tests of baselines/nerf.py and the spheres_scene dataset: parameter counts, encoding, rendering, sampling."""

import doctest
import json
import math

import pytest
import torch

import baselines
from baselines import nerf as nf
from experiments.cli import main
from experiments.data import create_dataset
from experiments.data.scenes3d import camera_rays


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_param_counts_match_reference():
    net = nf.nerf()
    # reference/architectures.md: one MLP (D=8, W=256, L=10/4, skip at layer 5) 595,844; coarse + fine 1,191,688
    assert n_params(net.coarse) == n_params(net.fine) == 595_844
    assert n_params(net) == 1_191_688
    assert net.coarse.trunk[5].in_features == 256 + 63 and net.coarse.trunk[0].in_features == 63
    assert net.coarse.view.in_features == 256 + 27
    assert baselines.model_info("nerf")["staged"] is False
    with pytest.raises(ValueError, match="num_classes must be 3"):
        baselines.create_model("nerf_tiny", num_classes=10)


def test_positional_encoding_frequencies():
    pe = nf.PositionalEncoding(10)
    assert pe.out_features(3) == 63 and nf.PositionalEncoding(4).out_features(3) == 27
    p = torch.tensor([[0.3, -0.2, 0.7]])
    out = pe(p)
    assert torch.equal(out[:, :3], p)
    for k in range(10):
        assert torch.allclose(out[:, 3 + 6 * k : 6 + 6 * k], torch.sin(2.0**k * p))
        assert torch.allclose(out[:, 6 + 6 * k : 9 + 6 * k], torch.cos(2.0**k * p))
    paper = nf.PositionalEncoding(3, scale=math.pi, include_input=False)  # eq. 4 as printed
    assert torch.allclose(paper(p)[:, :3], torch.sin(math.pi * p)) and paper.out_features(3) == 18


def test_volume_rendering_constant_density_is_analytic():
    sigma0, near, far = 0.7, 2.0, 6.0
    t = torch.sort(torch.rand(5, 50, dtype=torch.float64) * (far - near) + near, dim=-1).values
    sigma = torch.full_like(t, sigma0)
    w = nf.render_weights(sigma, t)
    # T_i = exp(-sigma0 (t_i - t_1)) exactly, and sum_{j<i} w_j = 1 - T_i
    trans = torch.exp(-sigma0 * (t - t[:, :1]))
    acc = torch.cumsum(w, -1) - w
    assert torch.allclose(acc, 1 - trans, atol=1e-12)
    assert torch.allclose(w.sum(-1), torch.ones(5, dtype=torch.float64))  # the last interval is infinite
    # a finite last interval: the ray's opacity is 1 - exp(-sigma0 (t_N + delta - t_1))
    w_fin = nf.render_weights(sigma, t, last_delta=0.1)
    assert torch.allclose(w_fin.sum(-1), 1 - torch.exp(-sigma0 * (t[:, -1] + 0.1 - t[:, 0])), atol=1e-12)
    # a slab [3, 4) of density 2 in empty space transmits exp(-2) of the light
    t = torch.linspace(2.0, 6.0, 401, dtype=torch.float64)
    slab = torch.where((t >= 3.0) & (t < 4.0 - 1e-9), 2.0, 0.0)
    assert math.isclose(float(nf.render_weights(slab, t)[t < 4.5].sum()), 1 - math.exp(-2.0), rel_tol=1e-9)


def test_rendered_colour_of_a_uniform_medium():
    """A coarse-only NeRF whose MLP returns density 0.3 and colour c everywhere renders c: the infinite last interval
    (delta_N = 1e10) makes the ray opaque, so the background gets weight 0."""
    net = nf.nerf_tiny(num_fine=0, background=0.25).double().eval()

    class Uniform(torch.nn.Module):
        def forward(self, pos, dirs):
            return torch.full(pos.shape[:1], 0.3, dtype=pos.dtype), torch.tensor([0.2, 0.5, 0.9],
                                                                                   dtype=pos.dtype).expand(len(pos), 3)

    net.coarse = Uniform()
    rays = torch.tensor([[0.0, 0.0, -4.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    (rgb,) = net(rays)
    assert torch.allclose(rgb, torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64))


def test_inverse_transform_sampling_follows_weights():
    torch.manual_seed(0)
    edges = torch.linspace(0.0, 8.0, 9)
    weights = torch.tensor([0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 4.0, 0.0])
    s = nf.sample_pdf(edges, weights, 8000, deterministic=True, eps=0.0)
    counts = torch.histc(s, bins=8, min=0.0, max=8.0)
    assert torch.equal(counts, torch.tensor([0, 1000, 0, 3000, 0, 0, 4000, 0.0]))
    # within a bin the samples are uniform: quantiles map linearly
    inside = s[(s >= 1) & (s < 2)]
    assert abs(float(inside.mean()) - 1.5) < 1e-3
    r = nf.sample_pdf(edges.expand(4, 9), weights.expand(4, 8), 20000, deterministic=False, eps=0.0)
    frac = torch.histc(r, bins=8, min=0.0, max=8.0) / r.numel()
    assert torch.allclose(frac, weights / weights.sum(), atol=0.01)
    # eps > 0: an all-zero ray samples uniformly
    u = nf.sample_pdf(edges, torch.zeros(8), 800, deterministic=True)
    assert torch.equal(torch.histc(u, bins=8, min=0.0, max=8.0), torch.full((8,), 100.0))


def test_stratified_samples():
    torch.manual_seed(0)
    t = nf.stratified_samples(2.0, 6.0, 16, (100,), jitter=True)
    bins = ((t - 2.0) / 0.25).floor()
    assert torch.equal(bins, torch.arange(16.0).expand(100, 16))  # one sample per bin, sorted
    assert torch.allclose(nf.stratified_samples(2.0, 6.0, 4, (1,), jitter=False), torch.tensor([[2.5, 3.5, 4.5, 5.5]]))


def test_forward_outputs_gradients_and_dict_input():
    torch.manual_seed(0)
    net = nf.nerf_tiny()
    rays = create_dataset("spheres_scene", image_size=4, num_train_views=2, num_test_views=1).train.inputs
    outs = net(rays)
    assert [tuple(o.shape) for o in outs] == [(32, 3), (32, 3)]
    assert all(float(o.detach().min()) >= 0 and float(o.detach().max()) <= 1 for o in outs)
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        a, b = net(rays), net(origins=rays[:, :3], dirs=rays[:, 3:])
        assert all(torch.equal(x, y) for x, y in zip(a, b))  # eval rendering is deterministic
    with pytest.raises(ValueError, match="rays"):
        net(torch.zeros(3, 5))


def test_fine_samples_concentrate_on_the_surface():
    """With a coarse density that is a thin shell at depth 4, the fine samples crowd around depth 4."""
    net = nf.nerf_tiny(num_coarse=16, num_fine=64).eval()
    t = nf.stratified_samples(2.0, 6.0, 16, (1,), jitter=False)
    w = torch.where((t - 4.0).abs() < 0.2, 1.0, 0.0)
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    edges = torch.cat([torch.full_like(t[..., :1], net.near), mids, torch.full_like(t[..., :1], net.far)], -1)
    fine = nf.sample_pdf(edges, w, 64, deterministic=True)
    assert float(((fine - 4.0).abs() < 0.3).float().mean()) > 0.95


def test_spheres_scene_dataset():
    d = create_dataset("spheres_scene", image_size=8, num_train_views=4, num_test_views=2, seed=1)
    assert d.task == "regress" and d.num_classes == 3 and d.in_chans == 6 and d.image_size == 0
    assert d.train.inputs.shape == (4 * 64, 6) and d.test.targets.shape == (2 * 64, 3)
    assert torch.allclose(d.train.inputs[:, 3:].norm(dim=1), torch.ones(256))
    assert torch.allclose(d.train.inputs[:, :3].norm(dim=1), torch.full((256,), 4.0))
    assert 0 <= float(d.train.targets.min()) and float(d.train.targets.max()) <= 1
    bg = (d.train.targets == 0.5).all(1)
    assert bg.any() and (~bg).any()  # background and spheres
    assert torch.equal(d.train.targets, create_dataset("spheres_scene", image_size=8, num_train_views=4,
                                                       num_test_views=2, seed=1).train.targets)
    # the centre pixel ray of a camera points at the origin
    rays = torch.from_numpy(camera_rays(30.0, 20.0, radius=4.0, size=2, fov=40.0))
    centre = rays[:, 3:].mean(0)
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=0), -rays[0, :3] / 4.0, atol=1e-6)


def test_doctests():
    result = doctest.testmod(nf, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_config_runs_through_the_runner(tmp_path):
    overrides = ["train.epochs=1", "data.options.image_size=4", "data.options.num_train_views=2",
                 "data.options.num_test_views=1", "data.batch_size=16", "log.progress=false", "log.wandb=disabled",
                 f"runs_dir={tmp_path}"]
    assert main(["run", "nerf_spheres", *overrides]) == 0
    results = sorted(tmp_path.glob("nerf_spheres/*/seed0/result.json"))
    assert len(results) == 2
    for path in results:
        metrics = json.loads(path.read_text())["metrics"]
        assert math.isfinite(metrics["psnr"]) and {"psnr_step1", "psnr_step2"} <= set(metrics)  # coarse and fine
