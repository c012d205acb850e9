"""Text CAPTCHA reading (issue 12): the `captcha` dataset, the multi-head CNN reader, the RCN reader and its parser."""

from __future__ import annotations

import itertools
import json
import sys

import pytest
import torch

pytest.importorskip("captcha")

import baselines  # noqa: E402
from baselines.rcn_reader import parse_windows, window_offsets  # noqa: E402
from experiments.cli import main  # noqa: E402
from experiments.data import create_dataset  # noqa: E402


def _small(**kw):
    return create_dataset("captcha", **({"num_train": 6, "num_test": 4} | kw))


def test_dataset_is_deterministic_with_the_right_shapes_and_labels():
    a, b = _small(seed=3), _small(seed=3)
    assert a.task == "tokens" and a.num_classes == 10 and a.in_chans == 1 and a.image_size == 0
    assert a.class_names == list("0123456789")
    assert a.train.inputs.shape == (6, 1, 30, 80) and a.train.inputs.dtype == torch.float32
    assert a.test.inputs.shape == (4, 1, 30, 80) and a.train.targets.shape == (6, 4)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.targets, b.test.targets)
    x = a.train.inputs
    assert x.min() == 0.0 and x.max() == 1.0
    assert a.train.targets.min() >= 0 and a.train.targets.max() < 10
    # no string is shared between the splits, and another seed gives other images
    assert not (set(map(tuple, a.train.targets.tolist())) & set(map(tuple, a.test.targets.tolist())))
    assert not torch.equal(_small(seed=4).train.inputs, x)
    # the test split does not depend on the training options
    c = _small(seed=3, num_train=2, glyphs_per_class=1)
    assert torch.equal(c.test.inputs, a.test.inputs)
    other = _small(alphabet="hex", height=24, width=64, length=5)
    assert other.num_classes == 16 and other.train.inputs.shape == (6, 1, 24, 64) and other.test.targets.shape == (4, 5)


def test_glyph_training_split_is_isolated_characters():
    g = _small(glyphs_per_class=2).train
    assert g.inputs.shape == (20, 1, 30, 30)
    assert g.targets[:, 0].tolist() == list(range(10)) * 2
    assert (g.targets[:, 1:] == -100).all()
    # a clean glyph: ink in the middle columns, none at the far left and right edges
    ink = g.inputs[:, 0].sum(1)  # (N, columns)
    assert (ink[:, 10:20].sum(1) > 0).all() and (ink[:, :2].sum(1) < ink[:, 10:20].sum(1) / 10).all()


def test_bad_options_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="unknown alphabet 'greek' .choices: digits, hex, letters, alnum"):
        _small(alphabet="greek")
    with pytest.raises(ValueError, match="num_test must be an integer >= 1"):
        _small(num_test=0)
    with pytest.raises(ValueError, match="distinct strings"):
        create_dataset("captcha", num_train=10, num_test=1, length=1)
    monkeypatch.setitem(sys.modules, "captcha.image", None)  # as if the package were not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[captcha\]"'):
        _small()


def test_parse_windows_known_answer():
    scores = torch.tensor([[5.0, 1.0, 0.0, 4.0, 0.0, 3.0],
                           [0.5, 9.0, 9.0, 0.0, 0.0, 1.0]])
    pos = torch.arange(6) * 4
    assert parse_windows(scores, pos, length=3, min_gap=8).tolist() == [[0, 3, 5], [0, 2, 5]]
    # without a spacing constraint the parse takes the three best windows, in order
    assert parse_windows(scores[:1], pos, length=3, min_gap=0).tolist() == [[0, 3, 5]]
    assert parse_windows(scores[1:], pos, length=2, min_gap=4).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="no parse of 4 windows"):
        parse_windows(scores, pos, length=4, min_gap=8)


def test_parse_windows_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([0, 1, 3, 4, 4, 6, 9, 10, 12])
    for _ in range(20):
        scores = torch.randn(1, len(pos), generator=g)
        for length, gap in ((2, 3), (3, 2), (4, 3), (3, 0)):
            best = max((c for c in itertools.combinations(range(len(pos)), length)
                        if all(pos[c[i + 1]] - pos[c[i]] >= gap for i in range(length - 1))),
                       key=lambda c: scores[0, list(c)].sum().item())
            assert parse_windows(scores, pos, length=length, min_gap=gap)[0].tolist() == list(best)


def test_window_offsets_cover_the_image():
    assert window_offsets(80, 16, 2).tolist() == list(range(0, 65, 2))
    assert window_offsets(21, 16, 2).tolist() == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="wider than the image"):
        window_offsets(10, 16, 2)


def test_captcha_cnn_output_and_gradients():
    model = baselines.create_model("captcha_cnn", num_classes=7, in_chans=1, length=5, width=4, depth=2, hidden=8)
    out = model(torch.rand(3, 1, 30, 80))
    assert out.shape == (3, 5, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_rcn_reader_reads_a_string_of_its_own_glyphs():
    """Fitted on clean glyphs, the reader reads a noise-free string made of those glyphs side by side."""
    g = _small(glyphs_per_class=1).train
    reader = baselines.create_model("rcn_reader", num_classes=10, in_chans=1, length=4, window=16)
    reader.fit(g.inputs, g.targets)
    assert not any(p.requires_grad for p in reader.parameters())
    digits = [7, 2, 9, 4]
    x = torch.cat([g.inputs[d, :, :, 5:25] for d in digits], -1).unsqueeze(0)  # (1, 1, 30, 80)
    out = reader(x)
    assert out.shape == (1, 4, 10) and out.argmax(-1)[0].tolist() == digits
    with pytest.raises(ValueError, match="glyphs_per_class > 0"):
        reader.fit(torch.rand(2, 1, 30, 80), torch.zeros(2, 4, dtype=torch.long))


def _result(runs):
    (path,) = list(runs.rglob("result.json"))
    return json.loads(path.read_text())["metrics"]


def test_cli_runs_both_configs(tmp_path, capsys):
    common = [f"runs_dir={tmp_path}", "log.wandb=disabled", "log.progress=false", "train.threads=1",
              "data.options.num_test=4", "train.seed=0"]
    assert main(["run", "captcha_read", *common, "data.options.num_train=20", "train.epochs=1",
                 "model.backbone_args.width=4", "model.backbone_args.depth=2", "model.backbone_args.hidden=8"]) == 0
    cnn = _result(tmp_path / "captcha_read")
    assert {"acc", "seq_acc"} <= set(cnn) and 0.0 <= cnn["acc"] <= 1.0
    assert main(["run", "captcha_read_rcn", *common, "data.options.glyphs_per_class=1"]) == 0
    rcn = _result(tmp_path / "captcha_read_rcn")
    assert 0.0 <= rcn["seq_acc"] <= rcn["acc"] <= 1.0
    capsys.readouterr()
    assert main(["run", "captcha_read", *common, "data.options.alphabet=greek"]) == 2
    assert "choices: digits, hex, letters, alnum" in capsys.readouterr().err
