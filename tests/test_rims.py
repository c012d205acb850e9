"""RIMs, BRIMs and Meta-RIMs (feedback.routing, feedback.rims, experiments.routing_models): invariants and parity."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn as nn

import baselines
import experiments.routing_models  # noqa: F401  (registers rims, brims, meta_rims)
from feedback.rims import BRIMs, MetaRIMs, RIMs
from feedback.routing import GroupGRUCell, GroupLSTMCell, RIMCell, top_k_mask


def _seed(s: int = 0) -> torch.Generator:
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def _copy_cells(group: nn.Module, cells: list[nn.Module]) -> None:
    with torch.no_grad():
        for k, c in enumerate(cells):
            group.weight_ih[k].copy_(c.weight_ih.t())
            group.weight_hh[k].copy_(c.weight_hh.t())
            group.bias_ih[k].copy_(c.bias_ih)
            group.bias_hh[k].copy_(c.bias_hh)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_grouped_cells_equal_independent_torch_cells(kind):
    _seed()
    K, D, H, B = 3, 5, 4, 6
    cells = [(nn.LSTMCell if kind == "lstm" else nn.GRUCell)(D, H) for _ in range(K)]
    group = GroupLSTMCell(D, H, K, forget_bias=0.0) if kind == "lstm" else GroupGRUCell(D, H, K)
    _copy_cells(group, cells)
    x, h, c = torch.randn(B, K, D), torch.randn(B, K, H), torch.randn(B, K, H)
    out = group(x, (h, c)) if kind == "lstm" else group(x, h)
    for k, cell in enumerate(cells):
        ref = cell(x[:, k], (h[:, k], c[:, k])) if kind == "lstm" else cell(x[:, k], h[:, k])
        if kind == "lstm":
            torch.testing.assert_close(out[0][:, k], ref[0])
            torch.testing.assert_close(out[1][:, k], ref[1])
        else:
            torch.testing.assert_close(out[:, k], ref)


def test_all_active_uniform_attention_no_communication_is_a_grouped_lstm():
    """top_k = K, query weights zero (uniform attention over [null, x]): read = V x / 2 and every module is an LSTM."""
    _seed()
    K, D, H, B, T = 3, 6, 4, 5, 7
    layer = RIMCell([D], hidden_size=H, num_modules=K, top_k=K, communication="none", forget_bias=0.0)
    with torch.no_grad():
        layer.input_attn.query.weight.zero_()
    cells = [nn.LSTMCell(layer.input_attn.read_size, H) for _ in range(K)]
    _copy_cells(layer.cell, cells)
    xs = torch.randn(T, B, D)
    state = layer.init_state(B)
    ref = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(K)]
    for t in range(T):
        state, mask, null = layer([xs[t]], state)
        assert mask.all() and torch.allclose(null, torch.full_like(null, 0.5))
        read = layer.input_attn.values[0](xs[t]) / 2
        ref = [cell(read, s) for cell, s in zip(cells, ref)]
        torch.testing.assert_close(state["h"], torch.stack([r[0] for r in ref], 1))
        torch.testing.assert_close(state["c"], torch.stack([r[1] for r in ref], 1))


@pytest.mark.parametrize("communication", ["pairwise", "workspace", "none"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_exactly_k_active_and_inactive_states_are_kept_exactly_with_no_gradient(communication, cell):
    _seed()
    K, k, H, B = 5, 2, 4, 8
    layer = RIMCell([6], hidden_size=H, num_modules=K, top_k=k, communication=communication, cell=cell)
    state = {name: torch.randn_like(t) for name, t in layer.init_state(B).items()}
    new, mask, null = layer([torch.randn(B, 6)], state)
    assert (mask.sum(1) == k).all()
    # the active modules are the ones least attentive to the null row
    assert (null.masked_fill(~mask, -1).amax(1) <= null.masked_fill(mask, 2).amin(1)).all()
    for name in ("h", "c") if cell == "lstm" else ("h",):
        assert torch.equal(new[name][~mask], state[name][~mask])
        assert not torch.equal(new[name][mask], state[name][mask])
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(new["h"][~mask].sum(), params, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in grads)  # inactive states depend on no parameter this step
    new["h"][mask].sum().backward()
    assert layer.cell.weight_hh.grad.abs().sum() > 0


def test_top_k_mask_ranks_softmaxed_null_attention():
    null = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.4]])
    assert top_k_mask(null, 1).tolist() == [[False, True, False], [True, False, False]]
    assert top_k_mask(null, 3).all()


def test_null_row_differs_from_an_encoded_zero_input():
    """A raw zero row is indistinguishable from null (dido1998 #6); the models' encoders make zero a real token."""
    _seed()
    layer = RIMCell([8], hidden_size=4, num_modules=3, top_k=2)
    _, _, null = layer([torch.zeros(2, 8)], layer.init_state(2))
    assert torch.allclose(null, torch.full_like(null, 0.5))  # the trap: zero input == null
    for embed, x in ((True, torch.zeros(2, 5, dtype=torch.long)), (False, torch.zeros(2, 5, dtype=torch.long)),
                     (False, torch.zeros(2, 5, 1))):
        net = RIMs(num_classes=3, in_chans=1 if x.is_floating_point() else 2, hidden_size=12, num_modules=3,
                   top_k=2, embed=embed)
        assert net.encode(x).abs().sum() > 0
        run = net.run(x)
        assert not torch.allclose(run.null[0], torch.full_like(run.null[0], 0.5))


def test_no_state_leaks_between_batches_and_samples_are_independent():
    _seed()
    net = BRIMs(num_classes=4, in_chans=3, hidden_size=[12, 8], num_modules=[3, 2], top_k=[2, 1])
    x1, x2 = torch.randint(0, 3, (4, 9)), torch.randint(0, 3, (4, 9))
    ref = net(x2)
    net(x1)
    torch.testing.assert_close(net(x2), ref)
    torch.testing.assert_close(net(x2[1:2]), ref[1:2])  # top-k is per sample: no cross-talk in the batch


def test_brims_top_down_path_carries_gradient_from_layer_above_at_previous_step():
    _seed()
    kw = dict(num_classes=4, in_chans=3, hidden_size=[12, 8], num_modules=[3, 2], top_k=[3, 2])
    for topdown in (True, False):
        net = BRIMs(topdown=topdown, **kw)
        state = net.init_state(2)
        state[1]["h"] = torch.randn(2, 2, 4, requires_grad=True)  # layer 1 at t - 1
        new, _, _ = net.step(net.encode(torch.randint(0, 3, (2, 1)))[:, 0], state)
        (g,) = torch.autograd.grad(new[0]["h"].sum(), state[1]["h"], allow_unused=True)
        if topdown:
            assert g is not None and g.abs().sum() > 0
        else:
            assert g is None
    # through the full unroll: the loss at the end reaches layer 1's parameters via layer 0 too
    net = BRIMs(**kw)
    net(torch.randint(0, 3, (2, 6))).sum().backward()
    assert net.layers[0].input_attn.keys[1].weight.grad.abs().sum() > 0


def test_brims_without_top_down_row_is_hierarchical_rims():
    kw = dict(num_classes=4, in_chans=3, hidden_size=[12, 8], num_modules=[3, 2], top_k=[2, 1])
    torch.manual_seed(3)
    a = BRIMs(topdown=False, **kw)
    torch.manual_seed(3)
    b = RIMs(**kw)
    x = torch.randint(0, 3, (3, 8))
    torch.testing.assert_close(a(x), b(x))


def test_meta_rims_learning_rate_multipliers_reach_the_optimiser():
    from experiments.train import lr_scales

    net = baselines.create_model("meta_rims", num_classes=3, in_chans=2, hidden_size=12, num_modules=3, top_k=2,
                                 fast_lr_scale=2.0, slow_lr_scale=0.25)
    scales = lr_scales(net)
    names = {id(p): n for n, p in net.named_parameters()}
    by_name = {names[i]: s for i, s in scales.items()}
    assert by_name["layers.0.cell.weight_ih"] == 2.0
    assert by_name["layers.0.input_attn.query.weight"] == 0.25
    assert by_name["layers.0.comm.qkv.weight"] == 0.25
    assert "head.weight" not in by_name and "embed.weight" not in by_name
    swapped = MetaRIMs(num_classes=3, in_chans=2, hidden_size=12, num_modules=3, top_k=2, fast="attention")
    assert swapped.lr_scales()["layers.0.input_attn"] == 1.0 and swapped.lr_scales()["layers.0.cell"] == 0.1
    with pytest.raises(ValueError, match="fast must be one of"):
        MetaRIMs(num_classes=3, in_chans=2, fast="both")


@pytest.mark.parametrize("name", ["rims", "brims", "meta_rims"])
@pytest.mark.parametrize("output", ["last", "all"])
def test_one_training_step_on_cpu_reaches_every_parameter(name, output):
    _seed()
    info = baselines.model_info(name)
    assert info["family"] == "routing" and not info["staged"]
    net = baselines.create_model(name, num_classes=5, in_chans=5, output=output, **info["small"])
    x = torch.randint(0, 5, (8, 12))
    y = torch.randint(0, 5, (8, 12) if output == "all" else (8,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    out = net(x)
    loss = nn.functional.cross_entropy(out.flatten(0, -2), y.flatten())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    before = [p.detach().clone() for p in net.parameters()]
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert torch.isfinite(nn.functional.cross_entropy(net(x).flatten(0, -2), y.flatten()))


def test_workspace_communication_trains_and_keeps_slots_in_the_state():
    _seed()
    net = RIMs(num_classes=3, in_chans=2, hidden_size=16, num_modules=4, top_k=2, communication="workspace",
               workspace_slots=2, workspace_topk=1)
    run = net.run(torch.randint(0, 2, (3, 6)))
    assert run.state[0]["slots"].shape == (3, 2, 4)
    run.logits.sum().backward()
    assert net.layers[0].comm.init_slots.grad.abs().sum() > 0


def test_bad_options_raise_with_the_choices():
    with pytest.raises(ValueError, match="top_k must be <="):
        RIMs(num_classes=2, in_chans=2, hidden_size=12, num_modules=3, top_k=4)
    with pytest.raises(ValueError, match="multiple of num_modules"):
        RIMs(num_classes=2, in_chans=2, hidden_size=10, num_modules=3, top_k=2)
    with pytest.raises(ValueError, match="choose from: pairwise, workspace, none"):
        RIMs(num_classes=2, in_chans=2, hidden_size=12, num_modules=3, top_k=2, communication="bus")


@pytest.mark.slow
def test_rims_learns_a_small_copying_task():
    from experiments.data import create_dataset

    _seed()
    data = create_dataset("copying", num_train=512, num_test=128, length=3, num_symbols=4, delay=5, test_delay=0)
    net = RIMs(num_classes=data.num_classes, in_chans=data.in_chans, hidden_size=48, num_modules=4, top_k=3,
               output="all")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = data.train.inputs, data.train.targets
    for _ in range(6):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(net(x[i : i + 64]).flatten(0, 1), y[i : i + 64].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    pred = net(data.test.inputs).argmax(-1)
    keep = data.test.targets != -100
    assert (pred[keep] == data.test.targets[keep]).float().mean() > 0.5  # chance: 0.25


@pytest.mark.parametrize("module", ["feedback.routing", "feedback.rims", "experiments.routing_models"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_single_row_fast_path_equals_the_softmax_over_null_and_input():
    from feedback.routing import InputAttention

    _seed()
    att = InputAttention([6], hidden_size=4, num_modules=3, key_size=8, value_size=5, heads=2)
    h, x = torch.randn(2, 3, 4), torch.randn(2, 1, 6)
    k, v = att.project(0, x)
    read, null = att(h, k, v)
    q = att.query(h).unflatten(-1, (2, 8))
    s = torch.nn.functional.pad(torch.einsum("bkhd,brhd->bhkr", q, k) / 8**0.5, (1, 0))
    p = torch.softmax(s, -1)
    torch.testing.assert_close(null, p[..., 0])
    torch.testing.assert_close(read, torch.einsum("bhkr,brhd->bkhd", p[..., 1:], v).flatten(2))
