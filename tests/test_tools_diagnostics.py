"""Gradient diagnostics (experiments.tools.diagnostics) and the tools runner (experiments.tools.run)."""

import doctest
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.tools import diagnostics
from experiments.tools.diagnostics import ReLUMonitor, grad_norms
from experiments.tools.run import deep_mlp, main, rnn_gradients, write_results


def test_grad_norms_match_the_parameter_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    net(torch.randn(5, 4)).pow(2).sum().backward()
    g = grad_norms(net)
    expected = torch.cat([net[0].weight.grad.flatten(), net[0].bias.grad]).norm()
    assert g["grad_norm/0"] == pytest.approx(float(expected)) and set(g) == {"grad_norm/0", "grad_norm/2"}


def test_relu_monitor_counts_dead_units_across_batches_and_resets():
    net = nn.Sequential(nn.ReLU())
    mon = ReLUMonitor(net)
    net(torch.tensor([[1.0, -1.0, -1.0, -1.0]]))
    net(torch.tensor([[-1.0, 1.0, -1.0, -1.0]]))
    s = mon.summary()
    assert s["dead_relu/0"] == 0.5 and s["zero_relu/0"] == 0.75
    mon.reset()
    assert mon.summary() == {}
    mon.remove()
    net(torch.ones(1, 4))
    assert mon.summary() == {}


def test_sigmoid_depth_vanishes_and_residual_does_not():
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    ratio = {}
    for kind in ("sigmoid", "residual"):
        torch.manual_seed(0)
        net = deep_mlp(kind, 12)
        F.cross_entropy(net(x), y).backward()
        g = grad_norms(net, prefix="")
        ratio[kind] = g["1"] / g[str(len(net) - 1)]
    assert ratio["sigmoid"] < 1e-6 < 1e-2 < ratio["residual"]


def test_rnn_gradients_explode_with_gain_above_one():
    x, y = torch.rand(8, 40, 1), torch.randint(0, 10, (8,))
    small = rnn_gradients(gain=0.5, nonlinearity="tanh", steps=40, x=x, y=y)
    big = rnn_gradients(gain=2.0, nonlinearity="tanh", steps=40, x=x, y=y)
    assert small["ratio 1/T"] < 1e-6 and big["ratio 1/T"] > 1e2


def test_write_results_and_cli_errors(tmp_path, capsys):
    rows = [{"a": 1, "b": 0.5}, {"a": 20000, "b": 1e-4}]
    text = write_results(tmp_path, tool="t", tables={"main": (rows, ["a", "b"]), "extra": (rows, ["b"])},
                         meta={"notes": ["n"]}, quick=True, seed=0, seconds=1.0)
    assert "| 20,000 | 0.0001 |" in text and (tmp_path / "results.csv").read_text().startswith("a,b")
    assert (tmp_path / "extra.csv").exists()
    payload = json.loads((tmp_path / "result.json").read_text())
    assert payload["tables"]["main"]["rows"][1]["a"] == 20000
    with pytest.raises(SystemExit) as e:
        main(["nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and not (tmp_path / "x").exists()
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_docstring_examples_run():
    result = doctest.testmod(diagnostics, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_package_docstring_examples_run():
    import experiments.tools

    result = doctest.testmod(experiments.tools, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["lowrank", "proxies", "obd", "diagnostics"])
def test_every_tool_runs_quick_end_to_end(tool, tmp_path):
    assert main([tool, "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "result.json").read_text())
    assert payload["tool"] == tool and all(t["rows"] for t in payload["tables"].values())
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.csv").exists()
