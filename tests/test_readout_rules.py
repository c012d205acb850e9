"""Excitation backprop, c-MWP and selective tuning: the rules against the equations (independent dense versions)."""

import doctest
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import baselines
from feedback import readout
from feedback.readout._rules import Rules, run_topdown, select_winners


def _dense_mwp(acts, mats, p_top):
    """MWP by the paper's equations with dense matrices, top layer first.

    P(a_j) = sum_i P(a_j | a_i) P(a_i), P(a_j | a_i) = a_j w+_ij / sum_j' a_j' w+_ij' (0 where the sum is 0).
    acts[l]: the (flattened) input of linear map l; mats[l]: its dense weight matrix (out, in). Returns the signal at
    every layer input, top first.
    """
    out = [p_top.double()]
    for a, w in zip(reversed(acts), reversed(mats)):
        a, wp = a.detach().double(), w.detach().double().clamp(min=0)
        joint = wp * a[None, :]  # (out i, in j): a_j w+_ij
        norm = joint.sum(1, keepdim=True)
        cond = torch.where(norm > 0, joint / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
        out.append(cond.t() @ out[-1])  # P(a_j) = sum_i P(a_j | a_i) P(a_i)
    return [o.float() for o in out]


def _dense_matrix(f, shape):
    """The matrix of a linear function f on tensors of ``shape`` (one basis vector at a time)."""
    n = int(torch.tensor(shape).prod())
    cols = [f(torch.eye(n)[k].view(1, *shape)).flatten() for k in range(n)]
    return torch.stack(cols, dim=1)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))


def test_mlp_matches_the_dense_mwp_equations():
    torch.manual_seed(0)
    net = MLP()
    x = torch.rand(1, 6)
    for target in range(3):
        probes, _, _ = run_topdown(net, x, target, rules=Rules("excitation"), layers=["", "l1", "l2"])
        a0 = x[0]
        a1 = torch.relu(net.l1(x))[0]
        a2 = torch.relu(net.l2(torch.relu(net.l1(x))))[0]
        dense = _dense_mwp([a0, a1, a2], [net.l1.weight, net.l2.weight, net.l3.weight], F.one_hot(
            torch.tensor(target), 3).float())
        # dense[1] is the signal at l3's input (= relu(l2) output), dense[2] at l2's input, dense[3] at the input
        torch.testing.assert_close(probes[2].signal[0] * (a2 > 0), dense[1], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(probes[1].signal[0] * (a1 > 0), dense[2], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(probes[0].signal[0], dense[3], atol=1e-6, rtol=1e-5)


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.c1(x)))
        return self.fc(torch.relu(self.c2(h)).flatten(1))


def test_convnet_matches_the_dense_mwp_equations():
    """Convolutions and average pooling as dense matrices, then the MWP loops."""
    torch.manual_seed(1)
    net = SmallConv()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        a1 = torch.relu(net.c1(x))
        a2 = net.pool(a1)
        a3 = torch.relu(net.c2(a2)).flatten(1)
        m1 = _dense_matrix(lambda t: F.conv2d(t, net.c1.weight, None, padding=1), (1, 8, 8))
        mp = _dense_matrix(lambda t: F.avg_pool2d(t, 2), (3, 8, 8))
        m2 = _dense_matrix(lambda t: F.conv2d(t, net.c2.weight, None, stride=2, padding=1), (3, 4, 4))
    dense = _dense_mwp([x.flatten(), a1.flatten(), a2.flatten(), a3[0]], [m1, mp, m2, net.fc.weight],
                       F.one_hot(torch.tensor(2), 3).float())
    for layer, want in (("pool", dense[2]), ("", dense[4])):
        got = readout.excitation_backprop(net, x, 2, layer=layer)
        probes, _, _ = run_topdown(net, x, 2, rules=Rules("excitation"), layers=[layer])
        torch.testing.assert_close(probes[0].signal.flatten(), want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got.flatten(), want.view(-1, *got.shape[-2:]).sum(0).flatten(), atol=1e-6,
                                   rtol=1e-5)


class Residual(nn.Module):
    """Bias-free: conv -> relu -> [conv -> relu -> conv -> relu, += shortcut] -> max-pool -> avg-pool -> linear.

    Every input of a rule is non-negative, the condition under which excitation backprop conserves the signal (a
    signed residual operand whose own z+ is 0 would drop its negative share).
    """

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.c0 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.a = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.block = nn.Identity()
        self.mp = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        shortcut = h
        y = torch.relu(self.b(torch.relu(self.a(h)))).clone()  # ReLU saves its output: add to a copy
        if self.inplace:
            y += shortcut
        else:
            y = y + shortcut
        y = self.block(y)
        return self.fc(self.gap(self.mp(y)).flatten(1))


def test_conservation_across_layers_with_residual_and_pooling():
    torch.manual_seed(2)
    net = Residual().double()  # float64: the residual split x_k / y amplifies rounding where y is near 0
    with torch.no_grad():
        net.fc.weight.abs_()  # every class has excitatory evidence (else its signal is 0 from the start)
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    layers = ["", "c0", "block", "mp", "gap"]  # cuts of the network (not "a": inside the residual branch)
    probes, _, _ = run_topdown(net, x, [0, 1, 2], rules=Rules("excitation"), layers=layers)
    for layer, probe in zip(layers, probes):
        torch.testing.assert_close(probe.signal.flatten(1).sum(1), torch.ones(3, dtype=torch.float64), atol=1e-9,
                                   rtol=0, msg=f"signal not conserved at {layer!r}")


def test_inplace_and_plain_residual_sums_split_the_same_way():
    torch.manual_seed(3)
    a, b = Residual(inplace=True), Residual(inplace=False)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 2, 8, 8)
    torch.testing.assert_close(readout.excitation_backprop(a, x, 1, layer=""),
                               readout.excitation_backprop(b, x, 1, layer=""))


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fa, self.fb = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(1, 2, 1, bias=False)
        self.out = nn.Identity()
        self.fc = nn.Linear(2 * 3 * 3, 2, bias=False)
        with torch.no_grad():
            self.fa.weight.abs_()
            self.fb.weight.abs_()

    def forward(self, x):
        a = self.fa(x)
        a += self.fb(x)
        return self.fc(self.out(a).flatten(1))


def test_residual_sum_splits_in_proportion():
    torch.manual_seed(4)
    net = TwoBranch()
    x = torch.rand(2, 1, 3, 3)
    probes, _, _ = run_topdown(net, x, 0, rules=Rules("excitation"), layers=["fa", "fb", "out"])
    pa, pb, py = probes
    y = pa.value + pb.value
    torch.testing.assert_close(pa.signal, pa.value / y * py.signal)
    torch.testing.assert_close(pb.signal, pb.value / y * py.signal)
    torch.testing.assert_close(pa.signal + pb.signal, py.signal)


def test_max_pooling_routes_to_the_argmax():
    torch.manual_seed(5)
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
    x = torch.rand(2, 2, 4, 4)
    probes, _, _ = run_topdown(net, x, 1, rules=Rules("excitation"), layers=["", "0"])
    p_in, p_pool = probes[0].signal, probes[1].signal
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    want = torch.zeros_like(x).flatten(2).scatter(2, idx.flatten(2), p_pool.flatten(2)).view_as(x)
    torch.testing.assert_close(p_in, want)
    assert ((p_in != 0).flatten(2).sum(2) <= 4).all()  # at most one child per window


def test_average_pooling_splits_in_proportion_to_the_input():
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(1, 1))
    nn.init.ones_(net[2].weight)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    probes, _, _ = run_topdown(net, x, 0, rules=Rules("excitation"), layers=[""])
    torch.testing.assert_close(probes[0].signal, x / 10)


def test_batchnorm_is_identity():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)
        net[1].running_mean.uniform_(-0.1, 0.1)
    x = torch.rand(2, 1, 4, 4)
    probes, _, _ = run_topdown(net, x, 0, rules=Rules("excitation"), layers=["0", "1"])
    torch.testing.assert_close(probes[0].signal, probes[1].signal)


def test_model_mode_requires_grad_and_buffers_are_restored():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).train()
    net[0].requires_grad_(False)
    net[4].eval()
    flags = [m.training for m in net.modules()]
    req = [p.requires_grad for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    x = torch.rand(2, 1, 8, 8)
    for name, fn in readout.METHODS.items():
        kw = {"size": 4, "stride": 4} if name == "occlusion" else {} if name == "centre" else {"layer": "2"}
        fn(net, x, 1, **kw)
        assert [m.training for m in net.modules()] == flags, name
        assert [p.requires_grad for p in net.parameters()] == req, name
        assert all(torch.equal(a, b) for a, b in zip(net.buffers(), buffers)), name
        for m in net.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks, name
    assert torch._C._len_torch_function_stack() == 0


def test_resnet18_small_all_methods():
    """timm's BasicBlock adds in place (x += shortcut): EB must still conserve the signal down the residual stack.

    At initialisation timm zeroes every block's last BN scale, so each branch outputs 0 and the proportional rule
    sends the whole signal down the shortcut; the ordinary backward of the sum would send it down both (sum 2).
    """
    torch.manual_seed(8)
    net = baselines.create_model("resnet18_small", num_classes=10, in_chans=1, channels=(8, 8, 8, 8))
    x = torch.rand(2, 1, 16, 16)
    for layer in (0, 2, "stem"):
        m = readout.excitation_backprop(net, x, [0, 9], layer=layer)
        torch.testing.assert_close(m.flatten(1).sum(1), torch.ones(2), atol=1e-4, rtol=0)
    assert readout.default_layer(net, x) == 2
    for name, fn in readout.METHODS.items():
        kw = {"size": 8, "stride": 8} if name == "occlusion" else {}
        m = fn(net, x, [1, 2], resize=True, **kw)
        assert m.shape == (2, 1, 16, 16) and torch.isfinite(m).all(), name


def test_library_models_timm_and_torchvision():
    import timm
    import torchvision

    torch.manual_seed(9)
    x = torch.rand(1, 3, 32, 32)
    for net, layer in ((torchvision.models.resnet18(num_classes=4), "layer3"),
                       (timm.create_model("resnet18", num_classes=4), "layer3")):
        assert readout.default_layer(net, x) == layer
        m = readout.excitation_backprop(net, x, 2)
        torch.testing.assert_close(m.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
        assert (readout.contrastive_excitation_backprop(net, x, 2) >= 0).all()
        w = readout.selective_tuning(net, x, 2, theta=0.0)
        assert w.sum() == 1


def test_contrastive_properties():
    torch.manual_seed(10)
    net = Residual()
    x = torch.rand(2, 2, 8, 8)
    c = readout.contrastive_excitation_backprop(net, x, 0, layer="block")
    assert (c >= 0).all() and c.sum() > 0
    # unclamped, the contrast P - N carries no net signal: both P and N carry one unit (bias-free network)
    raw = readout.contrastive_excitation_backprop(net, x, 0, layer="block", clamp=False)
    torch.testing.assert_close(raw.flatten(1).sum(1), torch.zeros(2), atol=1e-5, rtol=0)
    assert (raw < 0).any()
    # no negative weight in the classifier: the dual unit is empty and c-MWP is MWP
    with torch.no_grad():
        net.fc.weight.abs_()
    torch.testing.assert_close(readout.contrastive_excitation_backprop(net, x, 1, layer="block"),
                               readout.excitation_backprop(net, x, 1, layer="block"))
    # the target's weights all non-positive: no excitatory evidence at all, the map is zero
    with torch.no_grad():
        net.fc.weight[2] = -net.fc.weight[2]
    assert torch.equal(readout.contrastive_excitation_backprop(net, x, 2, layer="block"),
                       torch.zeros(2, 1, 8, 8))


def test_contrastive_with_a_convolutional_classifier_before_pooling():
    """SqueezeNet-style head: 1x1 class convolution, ReLU, global pooling; the prior reaches the conv through them."""
    torch.manual_seed(15)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(2, 1, 6, 6)
    assert readout.find_classifier(net)[0] == "2"
    c = readout.contrastive_excitation_backprop(net, x, 1, layer="1")
    assert c.shape == (2, 1, 6, 6) and (c >= 0).all()


def test_contrastive_needs_a_linear_classifier():
    net = baselines.create_model("lenet5", num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="classifier"):
        readout.contrastive_excitation_backprop(net, torch.rand(1, 1, 32, 32), 0)


def test_wta_is_binary_and_strict_wta_has_one_winner():
    torch.manual_seed(11)
    net = Residual()
    x = torch.rand(4, 2, 8, 8)
    with torch.no_grad():
        net.fc.weight.abs_()
    for layer in ("", "c0", "block", "mp"):  # cuts of the network: the single path crosses each once
        m = readout.selective_tuning(net, x, [0, 1, 2, 0], layer=layer, theta=0.0)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert m.flatten(1).sum(1).tolist() == [1.0] * 4, layer
        s = readout.selective_tuning(net, x, [0, 1, 2, 0], layer=layer, theta=0.0, collapse="sum")
        assert torch.equal(s, m)  # a single path: one channel of one unit
    wide = readout.selective_tuning(net, x, 0, layer="block", theta=0.9)
    assert set(wide.unique().tolist()) <= {0.0, 1.0} and (wide.flatten(1).sum(1) > 1).all()
    for mode in ("mass", "stnet"):
        m = readout.selective_tuning(net, x, 0, layer="a", mode=mode)
        assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_wta_through_average_and_adaptive_pooling():
    torch.manual_seed(14)
    net = SmallConv()  # conv -> relu -> avg-pool 2 -> strided conv -> relu -> linear
    x = torch.rand(3, 1, 8, 8)
    m = readout.selective_tuning(net, x, 1, layer="", theta=0.0)
    assert m.flatten(1).sum(1).tolist() == [1.0, 1.0, 1.0]
    wide = readout.selective_tuning(net, x, 1, layer="pool", theta=0.5)
    assert set(wide.unique().tolist()) <= {0.0, 1.0} and (wide.flatten(1).sum(1) >= 1).all()
    # adaptive pooling with overlapping, unequal windows (5 -> 3: rows 0-1, 1-3, 3-4)
    ada = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(18, 2))
    nn.init.ones_(ada[0].weight)
    x = torch.rand(2, 1, 5, 5)
    probes, _, _ = run_topdown(ada, x, 0, rules=Rules("wta", theta=0.0), layers=["1", "2"])
    low, high = probes[0].signal > 0, probes[1].signal > 0
    assert low.flatten(1).sum(1).tolist() == [1, 1] and high.flatten(1).sum(1).tolist() == [1, 1]
    for b in range(2):
        c, i, j = high[b].nonzero()[0].tolist()
        rows, cols = [(0, 2), (1, 4), (3, 5)][i], [(0, 2), (1, 4), (3, 5)][j]
        cl, yl, xl = low[b].nonzero()[0].tolist()
        assert cl == c and rows[0] <= yl < rows[1] and cols[0] <= xl < cols[1]
        window = ada[1](ada[0](x))[b, c, rows[0]:rows[1], cols[0]:cols[1]]
        assert window.max() == ada[1](ada[0](x))[b, c, yl, xl]  # the strict WTA picks the window's strongest


def test_wta_winners_lie_in_the_beam_of_the_layer_above():
    """Every gated unit of a layer lies in the receptive field of a gated unit of the layer above."""
    torch.manual_seed(12)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    x = torch.rand(1, 1, 10, 10)
    low = readout.selective_tuning(net, x, 0, layer="1", theta=0.3)[0, 0]
    high = readout.selective_tuning(net, x, 0, layer="3", theta=0.3)[0, 0]
    reach = F.max_pool2d(high[None, None], 3, stride=1, padding=1)[0, 0]  # 3x3 receptive fields of gated units
    assert low.sum() > 0 and (low <= reach).all()


def test_select_winners_rules():
    c = torch.tensor([[3.0, 1.0, 2.9, -5.0, 0.0], [-1.0, -2.0, 0.0, 0.0, 0.0]])
    assert select_winners(c, theta=0.0).int().tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert select_winners(c, theta=0.5).int().tolist() == [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert select_winners(c, mode="mass", mass=0.4).int().tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert select_winners(c, mode="mass", mass=0.5).int().tolist() == [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert select_winners(c, mode="mass", mass=1.0).int().tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    # STNet: ascending [-5, 0, 1, 2.9, 3], prefix sums [-5, -5, -4, -1.1, 1.9]: crosses at 3, nothing above it
    assert select_winners(c, mode="stnet").int().tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    d = torch.tensor([[1.0, 2.0, 3.0]])
    assert select_winners(d, mode="stnet").int().tolist() == [[0, 1, 1]]
    with pytest.raises(ValueError, match="theta"):
        select_winners(c, theta=1.5)
    with pytest.raises(ValueError, match="choose from"):
        select_winners(c, mode="max")


def test_gradient_family_against_autograd():
    torch.manual_seed(13)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 4))
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    (g,) = torch.autograd.grad(net(x)[:, 3].sum(), x)
    torch.testing.assert_close(readout.gradient(net, x, 3), g.abs().amax(1, keepdim=True))
    torch.testing.assert_close(readout.gradient_x_input(net, x, 3), (g * x).sum(1, keepdim=True).detach())

    # guided backprop and deconvnet by hand: the two ReLUs' backward rules on the chain
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[2](torch.relu(z1))
        top = net[5].weight[3].view(1, 2, 5, 5).expand(2, -1, -1, -1)

        def back(rule):
            p = rule(top, z2)
            p = torch.nn.grad.conv2d_input(z1.shape, net[2].weight, p, padding=1)
            p = rule(p, z1)
            return torch.nn.grad.conv2d_input(x.shape, net[0].weight, p, padding=1)

        guided = back(lambda p, z: p * (z > 0) * (p > 0))
        deconv = back(lambda p, z: p.clamp(min=0))
    torch.testing.assert_close(readout.guided_backprop(net, x, 3), guided.abs().amax(1, keepdim=True))
    torch.testing.assert_close(readout.deconvnet(net, x, 3), deconv.abs().amax(1, keepdim=True))


def test_occlusion_and_centre():
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1, 2 * 6 + 4] = 1.0  # class 1 reads pixel (row 2, col 4)
    x = torch.ones(1, 1, 6, 6)
    m = readout.occlusion(net, x, 1, size=2, stride=1)
    assert m.shape == (1, 1, 6, 6) and m[0, 0].argmax().item() == 2 * 6 + 4
    assert m[0, 0, 5, 0] == 0
    c = readout.centre(net, torch.zeros(2, 1, 7, 9))
    assert c.shape == (2, 1, 7, 9) and c[0, 0].argmax().item() == 3 * 9 + 4
    with pytest.raises(ValueError, match="layer"):
        readout.occlusion(net, x, 1, layer="1")


def test_gradcam_default_layer_and_vector_layers():
    net = baselines.create_model("lenet5_relu", num_classes=10, in_chans=1)
    x = torch.rand(2, 1, 32, 32)
    assert readout.default_layer(net, x, "gradcam") == 3 and readout.default_layer(net, x) == 2
    assert readout.grad_cam(net, x, 0).shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="not a spatial map"):
        readout.excitation_backprop(net, x, 0, layer=5)


def test_layer_errors():
    net = Residual()
    x = torch.rand(1, 2, 8, 8)
    with pytest.raises(ValueError, match="did you mean 'block'"):
        readout.excitation_backprop(net, x, 0, layer="blok")
    with pytest.raises(ValueError, match="Staged"):
        readout.excitation_backprop(net, x, 0, layer=1)
    with pytest.raises(ValueError, match="no default map layer"):
        readout.excitation_backprop(net, x, 0)
    with pytest.raises(ValueError, match="entries for a batch"):
        readout.excitation_backprop(net, x, [0, 1], layer="block")
    with pytest.raises(ValueError, match="unknown readout method 'excitaton'"):
        readout.get_method("excitaton")
    staged = baselines.create_model("resnet18_small", num_classes=3, in_chans=1, channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="4 stages"):
        readout.excitation_backprop(staged, torch.rand(1, 1, 8, 8), 0, layer=7)


def test_geometry_and_aligned_resize():
    lenet = baselines.create_model("lenet5_relu", num_classes=10, in_chans=1)
    x = torch.rand(1, 1, 32, 32)
    assert readout.layer_geometry(lenet, x, 2).axes == ((2.0, 6.5), (2.0, 6.5))  # C3: unit i centred on 2i + 6.5
    res = baselines.create_model("resnet18_small", num_classes=10, in_chans=1, channels=(8, 8, 8, 8))
    assert readout.layer_geometry(res, x, 2).axes == ((4.0, 0.0), (4.0, 0.0))
    m = torch.zeros(1, 1, 10, 10)
    m[0, 0, 3, 7] = 1.0
    up = readout.resize_maps(m, (32, 32), geometry=readout.layer_geometry(lenet, x, 2))
    assert divmod(up[0, 0].argmax().item(), 32) == (2 * 3 + 6, 2 * 7 + 6) or \
        divmod(up[0, 0].argmax().item(), 32) == (2 * 3 + 7, 2 * 7 + 7)
    assert readout.resize_maps(m, (20, 20)).shape == (1, 1, 20, 20)


@pytest.mark.parametrize("module", ["feedback.readout", "feedback.readout._rules", "feedback.readout._geometry",
                                    "feedback.readout._trace", "feedback.readout.excitation",
                                    "feedback.readout.contrastive", "feedback.readout.wta",
                                    "feedback.readout.gradients", "feedback.readout.gradcam",
                                    "feedback.readout.occlusion", "feedback.readout.centre",
                                    "feedback.readout._common"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
