"""Tests of baselines/wavenet.py and the waveforms dataset: mu-law, causality, receptive field, cached generation."""

import doctest
import json
import math

import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines import wavenet as wn
from experiments.cli import main
from experiments.data import create_dataset
from experiments.data.signals import marginal_entropy, mu_law_classes


def test_mu_law_round_trip():
    q = torch.arange(256)
    assert torch.equal(wn.mu_law_encode(wn.mu_law_decode(q)), q)  # every class centre maps back to its class
    x = torch.linspace(-1, 1, 20001)
    xq = wn.mu_law_decode(wn.mu_law_encode(x))
    err = (xq - x).abs()
    # quantisation error <= half a step (1 / mu) of the companded scale times the expander's largest slope on it
    mu = 255
    bound = (1 / mu) * math.log1p(mu) * (1 + mu * torch.maximum(x.abs(), xq.abs())) / mu
    assert bool((err <= bound + 1e-6).all())
    assert float(err[x.abs() < 0.01].max()) < 5e-4  # fine steps near 0 (the point of companding) ...
    assert float(err.max()) < 0.022  # ... coarse ones near +-1: (1 / mu) ln(1 + mu) (1 + mu) / mu = 0.0218
    # the dataset's numpy encoder is the same formula
    assert torch.equal(torch.from_numpy(mu_law_classes(x.double().numpy())), wn.mu_law_encode(x.double()))


def test_shapes_param_counts_and_receptive_field():
    net = wn.wavenet()
    assert net.receptive_field == 5117 and len(net.dilations) == 50
    # ibab/tensorflow-wavenet's layout counts 1,516,000 with the unused last residual conv (32 * 32 + 32)
    assert sum(p.numel() for p in net.parameters()) == 1_516_000 - (32 * 32 + 32)
    big = wn.wavenet(residual_channels=64, dilation_channels=64, skip_channels=256, blocks=3)
    assert sum(p.numel() for p in big.parameters()) == 1_283_776 - (64 * 64 + 64)  # architectures.md's 3 x 10
    tiny = baselines.create_model("wavenet_tiny", num_classes=256, in_chans=256)
    assert tiny.receptive_field == 128
    assert tiny(torch.randint(0, 256, (3, 40))).shape == (3, 40, 256)
    assert baselines.model_info("wavenet")["staged"] is False
    with pytest.raises(ValueError, match="int64"):
        tiny(torch.zeros(3, 40))


def test_embedding_lookup_equals_one_hot_convolution():
    torch.manual_seed(0)
    net = wn.wavenet_tiny().double()
    x = torch.randint(0, 256, (2, 30))
    assert torch.allclose(net._embed(x), net.embed(net._one_hot(x)), atol=1e-12)


def test_causal_and_receptive_field_exact():
    torch.manual_seed(0)
    net = wn.wavenet(dilations=(1, 2, 4), blocks=2, residual_channels=8, dilation_channels=8, skip_channels=16)
    net = net.double()
    r = net.receptive_field
    assert r == 2 + 2 * 7
    T, t = 40, 25
    x = torch.randint(0, 256, (1, T))
    base = net(x).detach()
    for s in range(T):  # change input s: outputs t < s must not move, output t must move iff t - r < s <= t
        y = x.clone()
        y[0, s] = (y[0, s] + 17) % 256
        diff = (net(y).detach() - base).abs().amax(-1)[0]
        assert float(diff[:s].sum()) == 0.0
        assert (float(diff[t]) > 0) == (t - r < s <= t), (s, float(diff[t]))


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = wn.wavenet_tiny()
    x = torch.randint(0, 256, (2, 64))
    F.cross_entropy(net(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("prime_len", [1, 5, 70])
def test_cached_generation_equals_naive_greedy(prime_len):
    torch.manual_seed(1)
    net = wn.wavenet(dilations=(1, 2, 4, 8, 16), blocks=2, residual_channels=16, dilation_channels=16,
                     skip_channels=32).double().eval()
    prime = torch.randint(0, 256, (3, prime_len))
    fast, fast_logits = net.generate(prime, steps=40, greedy=True, return_logits=True)
    slow, slow_logits = net.generate_naive(prime, steps=40, greedy=True, return_logits=True)
    assert torch.equal(fast, slow)
    assert torch.allclose(fast_logits, slow_logits, atol=1e-9, rtol=0)
    # and the logits each step used are the full forward's on the generated sequence
    full = net(fast[:, :-1])[:, prime_len - 1 :]
    assert torch.allclose(full, fast_logits, atol=1e-9, rtol=0)


def test_cached_generation_equals_naive_sampled():
    torch.manual_seed(2)
    net = wn.wavenet_tiny().double().eval()
    prime = torch.randint(0, 256, (2, 9))
    fast = net.generate(prime, steps=150, generator=torch.Generator().manual_seed(5))  # beyond the receptive field
    slow = net.generate_naive(prime, steps=150, generator=torch.Generator().manual_seed(5))
    assert torch.equal(fast, slow)
    assert fast.shape == (2, 159) and int(fast.min()) >= 0 and int(fast.max()) < 256


def test_waveforms_dataset():
    a = create_dataset("waveforms", seed=3, num_train=6, num_test=4, length=100)
    b = create_dataset("waveforms", seed=3, num_train=6, num_test=4, length=100)
    c = create_dataset("waveforms", seed=4, num_train=6, num_test=4, length=100)
    assert a.task == "tokens" and a.num_classes == 256 and a.in_chans == 256 and a.image_size == 0
    assert a.train.inputs.shape == a.train.targets.shape == (6, 100) and a.test.inputs.shape == (4, 100)
    assert a.train.inputs.dtype == torch.int64
    assert torch.equal(a.train.inputs[:, 1:], a.train.targets[:, :-1])  # targets: the next sample
    assert torch.equal(a.train.targets, b.train.targets) and not torch.equal(a.train.targets, c.train.targets)
    assert 0.0 < marginal_entropy(a.train.targets) < math.log(256)
    with pytest.raises(ValueError, match="positive"):
        create_dataset("waveforms", length=0)


def test_doctests():
    result = doctest.testmod(wn, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_config_runs_through_the_runner(tmp_path):
    overrides = ["train.epochs=1", "data.options.num_train=8", "data.options.num_test=4", "data.options.length=32",
                 "data.batch_size=4", "log.progress=false", "log.wandb=disabled", f"runs_dir={tmp_path}"]
    assert main(["run", "wavenet_tones", *overrides]) == 0
    (result,) = tmp_path.glob("wavenet_tones/*/seed0/result.json")
    metrics = json.loads(result.read_text())["metrics"]
    assert 0.0 < metrics["nll"] < 6.0 and 0.0 <= metrics["acc"] <= 1.0
