"""Image describer (baselines/captioner.py), BLEU and the caption task (experiments/tasks_caption.py), and the
shapes_caption dataset (experiments/data/captions.py)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines.captioner import BOS, EOS, PAD
from experiments.data import create_dataset
from experiments.tasks_caption import CaptionTask, bleu_stats, corpus_bleu, strip_tokens


def tiny(vocab=9, feed="first", **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return baselines.create_model("captioner", num_classes=vocab, in_chans=1, encoder_args={"stn": False, "width": 4},
                                  image_size=16, embed_dim=8, hidden_size=16, image_feed=feed, **kw)


# ----------------------------------------------------------------------------------------------- BLEU


def test_bleu4_hand_computed():
    hyp, ref = "the cat sat on the mat".split(), "the cat sat on the red mat".split()
    # p1 = 6/6, p2 = 4/5, p3 = 3/4, p4 = 2/3; c = 6 < r = 7: BP = exp(1 - 7/6)
    expected = math.exp(1 - 7 / 6) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert corpus_bleu([hyp], [[ref]]) == pytest.approx(expected, abs=1e-12)
    assert bleu_stats(hyp, [ref]) == [6, 7, 6, 6, 4, 5, 3, 4, 2, 3]
    # longer than the reference: no brevity penalty; clipping: "the" counts at most twice
    long = "the the the cat sat on the red mat".split()
    assert bleu_stats(long, [ref])[:4] == [9, 7, 7, 9]
    assert corpus_bleu([["a", "b"]], [[["c", "d"]]]) == 0.0  # no matching unigram


def test_corpus_bleu_sums_before_dividing_and_matches_torchmetrics():
    from torchmetrics.text import BLEUScore

    g = torch.Generator().manual_seed(0)
    hyps, refs = [], []
    for _ in range(40):
        ref = torch.randint(0, 5, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g).tolist()
        hyp = [w if torch.rand(1, generator=g) < 0.7 else 5 for w in ref[: int(torch.randint(3, 10, (1,), generator=g))]]
        hyps.append([str(w) for w in hyp])
        refs.append([[str(w) for w in ref]])
    ours = corpus_bleu(hyps, refs)
    theirs = BLEUScore(n_gram=4)([" ".join(h) for h in hyps], [[" ".join(r) for r in rs] for rs in refs]).item()
    assert 0.05 < ours < 0.95 and ours == pytest.approx(theirs, abs=1e-5)
    mean_of_sentences = sum(corpus_bleu([h], [r]) for h, r in zip(hyps, refs)) / len(hyps)
    assert abs(mean_of_sentences - ours) > 1e-3  # corpus BLEU is not the mean sentence BLEU


def test_caption_task_state_update_merge_compute():
    task = CaptionTask()
    assert task.primary == "bleu4" and task.step_metric == "acc"
    target = torch.tensor([[5, 6, 7, 8, EOS, -100], [5, 6, 9, EOS, -100, -100]])
    hyp = torch.tensor([[5, 6, 7, 8, EOS, 4], [5, 6, 9, 7, EOS, PAD]])  # word 4 after EOS is not read
    out = F.one_hot(hyp, 10).float()
    whole = task.init_state()
    task.update(whole, out, target)
    halves = [task.init_state(), task.init_state()]
    task.update(halves[0], out[:1], target[:1])
    task.update(halves[1], out[1:], target[1:])
    assert task.merge(halves) == whole
    m = task.compute(whole)
    expected = corpus_bleu([[5, 6, 7, 8], [5, 6, 9, 7]], [[[5, 6, 7, 8]], [[5, 6, 9]]])
    assert m["bleu4"] == pytest.approx(expected) and 0 < m["bleu4"] < m["bleu1"] <= 1
    assert strip_tokens([BOS, 3, PAD, 4, EOS, 5]) == [3, 4]
    assert task.loss(out, target).item() > 0 and set(task.correct(out, target)) == {"acc", "seq_acc", "nll"}


# ----------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("feed", ["first", "bias"])
def test_teacher_forcing_and_eval_decoding(feed):
    net = tiny(feed=feed)
    images, tokens_in = torch.rand(3, 1, 16, 16), torch.randint(3, 9, (3, 6))
    logits = net(images=images, tokens_in=tokens_in)
    assert logits.shape == (3, 6, 9)
    # causal: changing a later input word leaves earlier outputs unchanged
    t2 = tokens_in.clone()
    t2[:, 4] = 3 if t2[0, 4] != 3 else 4
    torch.testing.assert_close(net(images=images, tokens_in=t2)[:, :4], logits[:, :4])
    assert not torch.allclose(net(images=images, tokens_in=t2)[:, 4], logits[:, 4])
    # the image matters
    assert not torch.allclose(net(images=images.flip(-1), tokens_in=tokens_in), logits)
    net.eval()
    scores = net(images=images, tokens_in=tokens_in)  # greedy decoding, T = 6 steps
    tokens, _ = net.greedy(images, max_len=6)
    assert scores.shape == (3, 6, 9)
    assert [strip_tokens(r) for r in scores.argmax(-1).tolist()] == [strip_tokens(r) for r in tokens.tolist()]


def test_beam_width_one_equals_greedy():
    for seed in range(3):
        net = tiny(seed=seed).eval()
        images = torch.rand(5, 1, 16, 16)
        g_tok, g_score = net.greedy(images, max_len=7)
        b_tok, b_score = net.beam_search(images, max_len=7, beam_size=1)
        assert torch.equal(g_tok, b_tok)
        torch.testing.assert_close(g_score, b_score)
        torch.testing.assert_close(net.sequence_score(images, g_tok), g_score, atol=1e-5, rtol=0)


def test_beam_search_finds_the_best_sequence():
    """With a beam as wide as all prefixes, beam search is exact: compare with every sequence, scored by teacher
    forcing; a narrower beam never scores below greedy and beats it on some image."""
    v, length = 5, 3
    better = 0
    for seed in range(4):
        net = tiny(vocab=v, seed=seed).eval()
        with torch.no_grad():  # sharper, more varied word distributions
            net.decoder.head.weight.mul_(6.0)
        images = torch.rand(2, 1, 16, 16)
        tok, score = net.beam_search(images, max_len=length, beam_size=v ** (length - 1))
        torch.testing.assert_close(net.sequence_score(images, tok), score, atol=1e-5, rtol=0)
        every = torch.tensor(list(itertools.product(range(v), repeat=length)))
        for i in range(2):
            all_scores = net.sequence_score(images[i : i + 1].expand(len(every), -1, -1, -1), every)
            assert score[i].item() == pytest.approx(all_scores.max().item(), abs=1e-5)
        _, g = net.greedy(images, max_len=length)
        _, b3 = net.beam_search(images, max_len=length, beam_size=3)
        assert (b3 >= g - 1e-6).all() and (score >= b3 - 1e-6).all()
        better += int((b3 > g + 1e-6).sum())
    assert better > 0


def test_eval_forward_with_beam_and_teacher_options():
    net = tiny(beam_size=3).eval()
    images, tokens_in = torch.rand(2, 1, 16, 16), torch.randint(3, 9, (2, 5))
    tok, _ = net.beam_search(images, max_len=5, beam_size=3)
    assert torch.equal(net(images=images, tokens_in=tokens_in).argmax(-1), tok)
    teacher = tiny(eval_decode="teacher").eval()
    torch.testing.assert_close(teacher(images=images, tokens_in=tokens_in),
                               teacher.teacher_forced(images, tokens_in))
    with pytest.raises(ValueError, match="image_feed"):
        tiny(feed="middle")


def test_shapes_caption_data_and_one_train_step():
    data = create_dataset("shapes_caption", num_train=16, num_test=4)
    x, y = data.train.inputs, data.train.targets
    assert data.task == "caption" and x["images"].shape == (16, 3, 32, 32) and x["tokens_in"].shape == y.shape
    assert data.class_names[:3] == ["<pad>", "<bos>", "<eos>"] and data.num_classes == len(data.class_names)
    # tokens_in is BOS + the target shifted right; the words decode to the shapes captions
    n = (y != -100).sum(1)
    assert (x["tokens_in"][:, 0] == BOS).all() and (y[torch.arange(16), n - 1] == EOS).all()
    words_at = (y[:, :-1] != -100) & (y[:, :-1] != EOS)
    assert torch.equal(x["tokens_in"][:, 1:][words_at], y[:, :-1][words_at])
    shapes = create_dataset("shapes", num_train=16, num_test=4, max_objects=2)
    words = [" ".join(data.class_names[i] for i in strip_tokens(r)) for r in y.tolist()]
    assert words == [c.replace(",", " ,") for c in shapes.train.captions]
    torch.manual_seed(0)
    net = baselines.create_model("captioner", num_classes=data.num_classes, in_chans=3,
                                 encoder_args={"stn": False, "width": 8}, hidden_size=32, embed_dim=16)
    task = CaptionTask()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss = task.loss(net(**x), y)
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    opt.step()
    assert task.loss(net(**x), y) < loss
