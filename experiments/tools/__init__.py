"""Research tools from the notes (issue 11): compression, pruning, zero-cost proxies, gradient diagnostics.

The methods are plain functions over ``nn.Module`` objects and minibatches (no configs, no files):

- :mod:`experiments.tools.lowrank`: truncated-SVD and Fisher-weighted-SVD factorization of linear and conv layers;
- :mod:`experiments.tools.proxies`: zero-cost NAS proxies (grad-norm, SNIP, GraSP, SynFlow, Fisher, Jacobian
  covariance, NASWOT, parameters, FLOPs);
- :mod:`experiments.tools.obd`: optimal brain damage (Hessian-diagonal saliency) and magnitude pruning;
- :mod:`experiments.tools.diagnostics`: per-layer gradient norms and dead-ReLU fractions for a training loop.

:mod:`experiments.tools.run` holds the experiments: ``python -m experiments.tools.run <tool> [--out DIR] [--quick]``
writes ``results.md``, ``results.csv`` and ``result.json`` to ``runs/tools/<tool>/<quick|full>-seed<k>/``.

Every model here may return a tensor of logits or a :class:`feedback.FeedbackOutput`; :func:`logits_of` reads both.

Example:
    >>> import torch
    >>> logits_of(torch.zeros(2, 3)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["logits_of"]


def logits_of(out: Any) -> Tensor:
    """The logits of a model output: ``out.logits`` for a ``FeedbackOutput``, else ``out`` itself."""
    return out.logits if hasattr(out, "logits") else out
