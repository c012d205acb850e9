"""Rosenblatt's perceptron: one layer of threshold units trained by the perceptron learning rule, staged.

Reference: F. Rosenblatt, "The perceptron: a probabilistic model for information storage and organization in the
brain", Psychological Review 65(6), 1958. Convergence: A. B. J. Novikoff, "On convergence proofs on perceptrons",
Symposium on the Mathematical Theory of Automata, 1962. XOR: M. Minsky, S. Papert, "Perceptrons", 1969. Written
by hand: no deep-learning library has it (scikit-learn's ``Perceptron`` is outside torch).

Binary (``num_classes=2``): one unit, ``d + 1`` parameters, output ``y = 1 if w . x + b > 0 else 0``. The perceptron
rule (:meth:`Perceptron.fit`) visits the samples one at a time and updates only on a mistake:

.. math::

    w \\leftarrow w + \\eta\\, (t - y)\\, x, \\qquad b \\leftarrow b + \\eta\\, (t - y), \\qquad t, y \\in \\{0, 1\\}

If the data are linearly separable with margin ``gamma`` (some unit vector ``u`` over ``(w, b)`` has
``(2t - 1) u . (x, 1) >= gamma`` for every sample) and ``R = max ||(x, 1)||``, the rule makes at most
``(R / gamma)^2`` mistakes from zero weights (Novikoff), so it converges; on XOR no ``(w, b)`` exists and it never
does.

Multi-class (``num_classes = K > 2``): one unit per class, ``K (d + 1)`` parameters, prediction
``argmax_k (w_k . x + b_k)``; on a mistake (target ``t``, prediction ``p != t``) ``w_t += eta x``, ``w_p -= eta x``
(and the biases): the multi-class perceptron, which converges on linearly separable classes by the same argument
(Kesler's construction).

Staged view (one stage, so feedback can attach): ``stem`` = ``nn.Flatten()`` (an image ``(B, C, H, W)`` or a vector
``(B, d)`` to ``(B, d)``), ``stages[0]`` = the ``nn.Linear`` that computes the units' net inputs ``a = W x + b``
(``(B, 1)`` binary, ``(B, K)`` multi-class), ``head`` = :class:`ThresholdLogits`, which turns them into class
logits: ``[0, a]`` for the binary unit (so that ``argmax`` is the threshold unit's output, and cross-entropy on these
logits is logistic regression), ``a`` itself for ``K > 2``. The module is also trainable by gradient descent.
Weights start at zero (the rule's usual start; the binary perceptron's decisions do not depend on ``eta`` then).

A flat vector of ``d`` features is ``in_chans=d, img_size=1`` (``input_size = (d, 1, 1)``).

Example:
    >>> import torch
    >>> p = perceptron(in_chans=2, img_size=1)           # 2-D points: 3 parameters
    >>> X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> p.fit(X, torch.tensor([0, 0, 0, 1]), epochs=20)  # AND: mistakes per epoch, until one without
    [1, 3, 3, 2, 1, 0]
    >>> p.predict(X).tolist()
    [0, 0, 0, 1]
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = ["Perceptron", "ThresholdLogits", "perceptron"]


class ThresholdLogits(nn.Module):
    """Net inputs to class logits: ``(B, 1) -> (B, 2)`` as ``[0, a]`` (binary), ``(B, K)`` unchanged otherwise.

    Example:
        >>> ThresholdLogits(2)(torch.tensor([[-1.0], [2.0]])).argmax(1).tolist()
        [0, 1]
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, a: Tensor) -> Tensor:
        if self.num_classes == 2:
            return torch.cat([torch.zeros_like(a), a], dim=1)
        return a

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class Perceptron(nn.Module):
    """Rosenblatt's single-layer perceptron with the perceptron learning rule (see the module docstring).

    Args:
        in_chans, img_size: the input, ``(in_chans, H, W)`` flattened to ``d = in_chans * H * W`` features.
        num_classes: 2 (one threshold unit) or more (one unit per class).

    Shapes: ``(B, C, H, W)`` or ``(B, d)`` -> ``(B, num_classes)``.
    """

    def __init__(self, *, num_classes: int = 2, in_chans: int = 1, img_size: int | Sequence[int] = 28) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"a perceptron needs num_classes >= 2 (2 = one threshold unit), got {num_classes!r}")
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.input_size: tuple[int, int, int] = (int(in_chans), int(h), int(w))
        self.in_chans = int(in_chans)
        self.in_features = self.in_chans * int(h) * int(w)
        self.num_classes = int(num_classes)
        units = 1 if num_classes == 2 else self.num_classes
        self.stem = nn.Flatten()
        self.stages = nn.ModuleList([nn.Linear(self.in_features, units)])
        self.head = ThresholdLogits(self.num_classes)
        self.channels: list[int] = [units]
        self.strides: list[int] = [0]
        self.reset_parameters()

    @property
    def unit(self) -> nn.Linear:
        """The threshold units' weights and biases (``stages[0]``)."""
        return self.stages[0]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Zero weights and biases (the perceptron rule's usual starting point)."""
        self.unit.weight.zero_()
        self.unit.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[0](stem(x)))``: class logits."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class indices ``(B,)``: the threshold unit's output (binary) or the unit with the largest net input."""
        return self(x).argmax(dim=1)

    @torch.no_grad()
    def fit(
        self, X: Tensor, y: Tensor, epochs: int = 10, *, lr: float = 1.0, shuffle: bool = False, seed: int = 0
    ) -> list[int]:
        """Train with the perceptron rule: one sample at a time, weights change only on a mistake.

        Args:
            X: ``(N, d)`` features or ``(N, C, H, W)`` images (flattened by the stem).
            y: ``(N,)`` integer class labels in ``[0, num_classes)``.
            epochs: maximum number of passes over the data; training stops after the first pass without a mistake.
            lr: the learning rate ``eta``.
            shuffle: visit the samples in a new random order each epoch (seeded by ``seed``) instead of in order.
            seed: seed of the shuffling.

        Returns:
            The number of mistakes in each pass; the last is 0 if and only if the rule converged.
        """
        x = self.stem(torch.as_tensor(X, dtype=self.unit.weight.dtype, device=self.unit.weight.device))
        y = torch.as_tensor(y, device=x.device)
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"X must hold {self.in_features} features per sample (input_size {self.input_size}), got {tuple(X.shape)}"
            )
        if y.shape != (x.shape[0],) or y.dtype.is_floating_point:
            raise ValueError(f"y must be {x.shape[0]} integer class labels, got shape {tuple(y.shape)} {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {y.min().item()}..{y.max().item()}")
        if int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        w, b = self.unit.weight, self.unit.bias
        generator = torch.Generator().manual_seed(seed)
        history: list[int] = []
        for _ in range(int(epochs)):
            order = torch.randperm(len(y), generator=generator) if shuffle else torch.arange(len(y))
            mistakes = 0
            for i in order.tolist():
                xi, ti = x[i], int(y[i])
                a = w @ xi + b
                if self.num_classes == 2:
                    pi = int(a.item() > 0)
                    if pi != ti:
                        sign = lr if ti == 1 else -lr
                        w[0].add_(xi, alpha=sign)
                        b[0] += sign
                        mistakes += 1
                else:
                    pi = int(a.argmax())
                    if pi != ti:
                        w[ti].add_(xi, alpha=lr)
                        b[ti] += lr
                        w[pi].add_(xi, alpha=-lr)
                        b[pi] -= lr
                        mistakes += 1
            history.append(mistakes)
            if mistakes == 0:
                break
        return history


@register_model(family="Perceptron", source="hand-written", paper="Rosenblatt 1958")
def perceptron(*, num_classes: int = 2, in_chans: int = 1, img_size: int | Sequence[int] = 28) -> Perceptron:
    """Rosenblatt's perceptron on ``d = in_chans * H * W`` inputs: ``d + 1`` parameters (binary), ``K (d + 1)`` else.

    Args:
        num_classes: 2 (one threshold unit, the default) or more (one unit per class).
        in_chans: input channels (for a flat vector of ``d`` features: ``in_chans=d, img_size=1``).
        img_size: input height and width (an int or ``(H, W)``); default 28 (MNIST-sized images).

    Example:
        >>> sum(p.numel() for p in perceptron().parameters())  # d = 784
        785
    """
    return Perceptron(num_classes=num_classes, in_chans=in_chans, img_size=img_size)
