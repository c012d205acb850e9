"""Graph networks (baselines/gnn.py, gcn.py, chebnet.py, spectral_gnn.py) and the graph datasets."""

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines.chebnet import chebyshev_basis
from baselines.gnn import gcn_norm, laplacian, scaled_laplacian
from baselines.spectral_gnn import EigenBasis, SpectralLayer
from experiments.data import create_dataset

MODELS = ["gcn", "chebnet", "mpnn", "spectral_gnn"]


def random_graphs(b: int, n: int, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu((torch.rand(b, n, n, generator=g) < p).float(), diagonal=1)
    return upper + upper.transpose(1, 2)


def build(name: str, level: str, *, n: int = 8, d: int = 3, k: int = 4) -> torch.nn.Module:
    extra = {"k": n} if name == "spectral_gnn" else {}
    torch.manual_seed(0)
    return baselines.create_model(name, num_classes=k, in_chans=d, hidden=16, level=level, **extra).eval()


@pytest.mark.parametrize("module", ["gnn", "gcn", "chebnet", "spectral_gnn"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(f"baselines.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", MODELS)
def test_node_outputs_equivariant_graph_outputs_invariant(name):
    n = 8
    x, adj = torch.randn(3, n, 3, generator=torch.Generator().manual_seed(1)), random_graphs(3, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    px, padj = x[:, perm], adj[:, perm][:, :, perm]  # P X, P A P^T
    node = build(name, "node")
    torch.testing.assert_close(node(x=px, adj=padj), node(x=x, adj=adj)[:, perm], atol=1e-4, rtol=1e-4)
    graph = build(name, "graph")
    out = graph(x=x, adj=adj)
    assert out.shape == (3, 4)
    torch.testing.assert_close(graph(x=px, adj=padj), out, atol=1e-4, rtol=1e-4)
    assert baselines.model_info(name)["staged"] is False


def test_gcn_norm_by_hand():
    # path 0 - 1 - 2: A + I has degrees 2, 3, 2
    adj = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    s = 6 ** -0.5
    expected = torch.tensor([[1 / 2, s, 0.0], [s, 1 / 3, s], [0.0, s, 1 / 2]])
    torch.testing.assert_close(gcn_norm(adj)[0], expected)
    layer = baselines.gcn.GCNLayer(2, 2)
    h = torch.randn(1, 3, 2)
    torch.testing.assert_close(layer(h, gcn_norm(adj)), expected @ h @ layer.linear.weight.T + layer.bias)


def test_laplacians_by_hand():
    adj = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(laplacian(adj)[0], torch.tensor([[1.0, -1, 0], [-1, 2, -1], [0, -1, 1]]))
    s = 2 ** -0.5
    sym = torch.tensor([[1.0, -s, 0], [-s, 1, -s], [0, -s, 1]])
    torch.testing.assert_close(laplacian(adj, "sym")[0], sym)
    torch.testing.assert_close(scaled_laplacian(adj)[0], sym - torch.eye(3))
    lam = torch.linalg.eigvalsh(sym)[-1]
    torch.testing.assert_close(scaled_laplacian(adj, lambda_max=None)[0], 2 * sym / lam - torch.eye(3))


def test_chebyshev_recursion_matches_explicit_polynomials():
    adj = random_graphs(2, 7, seed=3)
    lt = scaled_laplacian(adj).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    eye = torch.eye(7, dtype=torch.float64)
    explicit = [eye, lt, 2 * lt @ lt - eye, 4 * lt @ lt @ lt - 3 * lt, 8 * lt.matrix_power(4) - 8 * lt @ lt + eye]
    for got, t in zip(chebyshev_basis(lt, x, 5), explicit):
        torch.testing.assert_close(got, t @ x)
    # and as cos(k arccos(lambda)) in the eigenbasis (the spectrum of L~ is in [-1, 1])
    lam, u = torch.linalg.eigh(lt)
    assert lam.abs().max() <= 1 + 1e-9
    t3 = u @ torch.diag_embed(torch.cos(3 * torch.arccos(lam.clamp(-1, 1)))) @ u.transpose(1, 2)
    torch.testing.assert_close(chebyshev_basis(lt, x, 4)[3], t3 @ x)


def test_spectral_layer_uses_the_laplacian_eigenbasis():
    adj = random_graphs(2, 6, seed=4)
    u = EigenBasis(k=6)(adj)
    lap = laplacian(adj)
    torch.testing.assert_close(u.transpose(1, 2) @ u, torch.eye(6).expand(2, 6, 6), atol=1e-5, rtol=0)
    lam = torch.linalg.eigvalsh(lap)
    torch.testing.assert_close(u.transpose(1, 2) @ lap @ u, torch.diag_embed(lam), atol=1e-4, rtol=0)
    # a filter equal to the eigenvalues (one in, one out feature) is multiplication by L itself
    layer = SpectralLayer(1, 1, k=6, bias=False)
    x = torch.randn(2, 6, 1)
    with torch.no_grad():
        for b in range(2):
            layer.theta.copy_(lam[b].view(6, 1, 1))
            torch.testing.assert_close(layer(x[b : b + 1], u[b : b + 1]), lap[b : b + 1] @ x[b : b + 1],
                                       atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="k=6"):
        EigenBasis(k=6)(random_graphs(1, 4))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="choose from"):
        baselines.create_model("gcn", level="edge")
    with pytest.raises(ValueError, match="choose from"):
        baselines.create_model("chebnet", readout="max")
    with pytest.raises(ValueError, match="order"):
        baselines.create_model("chebnet", order=0)
    with pytest.raises(ValueError, match="adj"):
        baselines.create_model("gcn")(x=torch.zeros(1, 3, 4), adj=torch.zeros(1, 3, 4))


def test_sbm_nodes_dataset():
    s = create_dataset("sbm_nodes", num_train=20, num_test=10, num_nodes=30, blocks=3)
    x, adj, y = s.train.inputs["x"], s.train.inputs["adj"], s.train.targets
    assert x.shape == (20, 30, 3) and adj.shape == (20, 30, 30) and y.shape == (20, 30) and s.task == "tokens"
    assert torch.equal(adj, adj.transpose(1, 2)) and adj.diagonal(dim1=1, dim2=2).eq(0).all()
    same = y[:, :, None] == y[:, None, :]
    assert adj[same].mean() > 3 * adj[~same].mean()  # p_in = 0.25 vs p_out = 0.03
    assert (torch.bincount(y.flatten()) == 200).all()
    assert torch.equal(create_dataset("sbm_nodes", num_train=20, num_test=10, num_nodes=30).train.inputs["adj"], adj)


@pytest.mark.parametrize("motifs", ["cycles", "shapes"])
def test_graph_motifs_dataset(motifs):
    s = create_dataset("graph_motifs", num_train=40, num_test=10, base_nodes=8, motifs=motifs)
    adj, y = s.train.inputs["adj"], s.train.targets
    assert adj.shape == (40, 14, 14) and s.num_classes == 4 and s.in_chans == 7
    assert torch.equal(adj, adj.transpose(1, 2)) and set(y.tolist()) == {0, 1, 2, 3}
    edges = adj.sum((1, 2)) / 2
    if motifs == "cycles":  # same node and edge counts and the same degree multiset in every class
        assert (edges == 8 - 1 + 6 + 1).all()
        hist = torch.stack([torch.bincount(a.sum(-1).long(), minlength=8) for a in adj])
        assert torch.equal(s.train.inputs["x"].sum(1), hist[:, :7].float())
    # a tree plus a motif attached by one edge is connected
    connected = torch.linalg.matrix_power(adj + torch.eye(14), 14).gt(0).all((1, 2))
    assert connected.all()


@pytest.mark.parametrize("name", MODELS)
def test_one_cpu_training_step(name):
    s = create_dataset("sbm_nodes", num_train=8, num_test=4, num_nodes=20)
    net = build(name, "node", n=20, d=s.in_chans, k=s.num_classes).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batch, y = s.train.inputs, s.train.targets
    loss = F.cross_entropy(net(**batch).flatten(0, 1), y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())
    assert F.cross_entropy(net(**batch).flatten(0, 1), y.flatten()) < loss
