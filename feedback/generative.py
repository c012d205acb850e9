r"""``generative``: CNN-F, recurrent generative feedback with tied transposed weights (Huang et al. 2020).

Reference: Y. Huang, J. Gornet, S. Dai, Z. Yu, T. Nguyen, D. Y. Tsao, A. Anandkumar, "Neural Networks with
Recurrent Generative Feedback", NeurIPS 2020, arXiv 2007.09200; official code yjhuangcd/CNNF (MIT; read, not
copied: reference/methods.md section 4). The feed-forward network is read as approximate inference in a
deconvolutional generative model whose generative pass runs the same network backwards with the *same weights
transposed*; CNN-F alternates the two to reach a self-consistent (prediction, latent switches, features) triple.

Algorithm (one step of :class:`~feedback.core.FeedbackNet` after the bottom-up pass ``t``; ``L`` stages, ``ind``
the stage whose input receives the generative update, CNN-F's ``ind``):

1. **Switches.** The kind recomputes the step's forward through stages ``ind .. L-1`` and the head from the
   inputs they actually received (no gradient), recording each ``nn.ReLU``'s pre-activation ``z`` and each
   ``nn.MaxPool2d``'s arg-max (and, from the second pass on, arg-min) positions.
2. **Generative pass** from the logits (not a one-hot, not a softmax), through the transposed head and stages
   down to stage ``ind``'s input, with tied weights: :math:`\hat h^{\ell-1} = W^{\ell\top}(m^\ell \odot \hat
   h^\ell)`, i.e. ``F.conv_transpose2d(g, conv.weight)`` and ``F.linear(g, W.t())`` on the forward modules' own
   parameters (nothing is copied, so reconstruction gradients reach the forward weights: the official ``Linear``
   feedback copies once and they never do). Per module:

   - ``nn.ReLU`` (**AdaReLU**): :math:`m = [z > 0]` in the first generative pass and :math:`m = [z \hat h_{prev}
     > 0]` afterwards, :math:`\hat h_{prev}` the top-down signal that reached this ReLU in the previous pass: a
     unit is kept only where its sign agrees with the prediction;
   - ``nn.MaxPool2d`` (**AdaPool**): un-pool to the arg-max positions; from the second pass on, to the arg-max
     where :math:`\hat h_{prev} > 0` and to the arg-**min** where :math:`\hat h_{prev} < 0` (min-pooling);
     overlapping windows sum;
   - ``Conv2d`` / ``Linear``: tied transposes, no bias (CNN-F applies biases forward only);
   - batch norm: multiply by :math:`\gamma / \sigma`, the forward's scale with its statistics held constant;
   - dropout, drop-path, identity: identity (a training-mode dropout mask cannot be recovered); flatten: reshape;
   - residual blocks (timm and torchvision ``BasicBlock`` / ``Bottleneck``; more with :func:`register_block`):
     :math:`y = \mathrm{act}(F(x) + S(x))` is transposed as :math:`\hat x = F^\top(m \odot \hat y) + S^\top(m
     \odot \hat y)`: the signal passes *through* the skip (identity, or the transposed 1x1 projection) and
     *through* the transposed residual branch, and the two sum (the adjoint of the fan-out at ``x``);
   - any other module is transposed by its exact vector-Jacobian product at the recorded input, with its own
     parameters (``torch.autograd.grad``; e.g. average pooling, LeNet's tanh, sub-sampling and RBF layers, timm's
     pooling heads). If such an opaque module *contains* ReLU or max-pool modules, AdaReLU/AdaPool cannot act
     inside it: a warning names it (``strict=True`` makes it a ``ValueError``).

3. **Scale.** At every stage input the top-down signal is divided by its per-sample RMS and rescaled to the RMS of
   that stage's bottom-up input at step 0: :math:`r_s = \hat h_s \cdot \mathrm{rms}(x_s^{(0)}) /
   \mathrm{rms}(\hat h_s)`. (CNN-F keeps scales commensurate with instance normalisation on both paths; the
   backbones here have none.)
4. **Update** at stage ``ind`` (CNN-F's ``res_param`` :math:`\eta`): :math:`f_{t+1} = f_t + \eta (r_{ind} -
   f_t)`, :math:`f_0` = stage ``ind``'s input at step 0; stage ``ind`` reads :math:`f_{t+1}` at step ``t + 1``
   (it *replaces* the bottom-up input, as CNN-F re-runs only the layers above ``ind``).
5. **Above ind** (``ada_above=True``), every higher stage ``s`` reads CNN-F's residual AdaReLU of its bottom-up
   input :math:`h` and the signal :math:`r_s`: :math:`x = h + \eta (r_s - h)`, :math:`x \odot [x\, r_s > 0]`.
6. **Losses at every cycle** (``aux_losses["recon"]``, summed over cycles by FeedbackNet): the self-consistency
   loss of CNN-F's training script, ``recon_weight`` times the mean over stages ``s >= ind`` of
   :math:`\mathrm{MSE}(r_s, x_s^{(0)})` (CNN-F: MSE of the reconstruction at ``ind`` and at block outputs to the
   first pass's features, weight ``mse_parameter = 0.1``, averaged over cycles: use ``train.aux_weight = 1/(T-1)``
   to average). The per-sample reconstruction error at ``ind`` after each cycle is kept in
   ``state["recon_mse"]``.

Readout: FeedbackNet's ``readout="mean"`` is CNN-F's ``run_average`` (its evaluation default), ``"last"`` its
``run_cycles``; ``steps = cycles + 1``. All state (``f``, the switches' previous top-down signals, step-0 inputs)
is per sample, passed in and returned, never stored on modules. The kind adds **no parameters**.

What is exact and what is not (the contract lets feedback enter only at stage inputs, and the kind sees only stage
outputs):

- exact: tied weights; the generative pass as the transpose of the network's local linear map at the step's
  forward point, with AdaReLU/AdaPool switch rules; the ``ind`` update with step ``eta``; per-cycle losses;
- **deviation:** inside a stage the bottom-up pass is the backbone's own (plain ReLU, max-pooling): CNN-F's
  adaptive forward (the residual mix and sign-agreement mask at *every* ReLU above ``ind``, min-pooling where the
  prediction is negative) acts here only at stage boundaries above ``ind`` (step 5), on post-activation values;
- **deviation:** switches are recomputed by the kind (one extra no-grad forward of stages ``>= ind`` per step);
  this is exact in training mode; in eval mode with ``norm_stats="per_step"`` the recomputation uses the
  backbone's own (step-0) batch-norm statistics, so from the second generative pass on (``steps >= 3``) a
  batch-norm net's switches can differ slightly from those of the forward pass;
- **deviation:** the lowest point reachable is stage 0's input (the stem output); CNN-F's ``ind = 0`` is the
  image. Non-ReLU activations (LeNet-5's scaled tanh) are transposed by their derivative: on the paper-faithful
  ``lenet5`` AdaReLU/AdaPool have nothing to act on and the generative pass is the plain Jacobian transpose;
- not included: CNN-F's adversarial training recipe (reconstructing adversarial inputs to clean features); see
  ``experiments/attacks.py`` for the evaluation, which attacks the whole loop as well as the first pass.

The kind needs the backbone's modules: ``FeedbackNet(backbone, "generative", ...)`` calls
:meth:`GenerativeFeedback.bind` with its backbone; used on its own, pass ``backbone=`` or call ``bind`` yourself.

Shapes: ``feats[s]`` as the stage outputs, ``logits`` (B, K) -> ``topdown[ind]`` (the new stage-``ind`` input)
and, with ``ada_above``, ``topdown[s]`` for ``s > ind``, each of the shape of stage ``s``'s input.

Example (a small ReLU / max-pool net; gradients of the reconstruction loss reach the *forward* head weights):
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.input_size = nn.Identity(), (1, 12, 12)
    ...         self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
    ...                                      nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))])
    ...         self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 3 * 3, 10))
    >>> net = FeedbackNet(Net(), "generative", steps=3, readout="mean", feedback_kwargs={"eta": 0.1})
    >>> out = net(torch.rand(2, 1, 12, 12))
    >>> out.logits.shape, sorted(out.aux_losses), len(out.state["recon_mse"])
    (torch.Size([2, 10]), ['recon'], 2)
    >>> out.aux_losses["recon"].backward(); net.backbone.head[1].weight.grad.abs().sum() > 0
    tensor(True)
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._tied import call_frozen, conv2d_t, linear_t, rms, unpool, vjp
from .core import Feedback, StageShapes, check_staged, register_feedback

__all__ = ["GenerativeFeedback", "register_block"]


# --------------------------------------------------------------------------------------------------- plan nodes
# A plan mirrors a module tree. ``forward(x, run)`` recomputes the module's output and records what the transpose
# needs in ``run`` (a per-call dict: nothing is kept on the nodes); ``transpose(g, run)`` maps a signal at the
# module's output to its input.


class _Run:
    """Everything one generative pass records: per-node forward data, previous and new top-down signals."""

    def __init__(self, previous: list[Tensor | None] | None, num_switches: int) -> None:
        self.rec: dict[int, Any] = {}
        self.previous = previous if previous is not None else [None] * num_switches
        self.hidden: list[Tensor | None] = [None] * num_switches


class _Node:
    key: int = -1

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        raise NotImplementedError

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        raise NotImplementedError


class _Seq(_Node):
    def __init__(self, children: list[_Node]) -> None:
        self.children = children

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        for c in self.children:
            x = c.forward(x, run)
        return x

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        for c in reversed(self.children):
            g = c.transpose(g, run)
        return g


class _Conv(_Node):
    def __init__(self, m: nn.Conv2d) -> None:
        self.m = m

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        run.rec[self.key] = x.shape[-2:]
        return self.m(x)

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        return conv2d_t(g, self.m, run.rec[self.key])


class _Linear(_Node):
    def __init__(self, m: nn.Linear) -> None:
        self.m = m

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        return self.m(x)

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        return linear_t(g, self.m)


class _AdaReLU(_Node):
    def __init__(self, switch: int) -> None:
        self.switch = switch

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        run.rec[self.key] = x
        return F.relu(x)

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        z, prev = run.rec[self.key], run.previous[self.switch]
        run.hidden[self.switch] = g.detach()
        mask = z > 0 if prev is None else (z * prev) > 0
        return g * mask


class _AdaPool(_Node):
    def __init__(self, m: nn.MaxPool2d, switch: int) -> None:
        self.m, self.switch = m, switch

    def _pool(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.m
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        y, arg_max = self._pool(x)
        arg_min = self._pool(-x)[1] if run.previous[self.switch] is not None else None
        run.rec[self.key] = (x.shape, arg_max, arg_min)
        return y

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        shape, arg_max, arg_min = run.rec[self.key]
        prev = run.previous[self.switch]
        run.hidden[self.switch] = g.detach()
        if prev is None:
            return unpool(g, arg_max, shape)
        return unpool(g * (prev > 0), arg_max, shape) + unpool(g * (prev < 0), arg_min, shape)


class _BatchNorm(_Node):
    def __init__(self, m: nn.modules.batchnorm._BatchNorm) -> None:
        self.m = m

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        m = self.m
        batch = m.training or m.running_var is None
        if batch:  # batch statistics, as the forward used; the running statistics are not touched
            dims = [0] + list(range(2, x.dim()))
            var = x.float().var(dim=dims, unbiased=False)
            y = F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)
        else:
            var = m.running_var
            y = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        run.rec[self.key] = torch.rsqrt(var + m.eps)
        return y

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        scale = run.rec[self.key]
        if self.m.weight is not None:
            scale = scale * self.m.weight
        return g * scale.view(1, -1, *([1] * (g.dim() - 2))).to(g.dtype)


class _Identity(_Node):
    def forward(self, x: Tensor, run: _Run) -> Tensor:
        return x

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        return g


class _Flatten(_Node):
    def __init__(self, m: nn.Flatten) -> None:
        self.m = m

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        run.rec[self.key] = x.shape
        return self.m(x)

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        return g.reshape(run.rec[self.key])


class _Opaque(_Node):
    """Any other module: recomputed as it is (buffers untouched), transposed by its vector-Jacobian product."""

    def __init__(self, m: nn.Module) -> None:
        self.m = m

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        run.rec[self.key] = x
        y = call_frozen(self.m, x.clone())
        if not isinstance(y, Tensor):
            raise ValueError(f"generative feedback cannot transpose {type(self.m).__name__}: it returns "
                             f"{type(y).__name__}, not one tensor")
        return y

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        return vjp(self.m, run.rec[self.key], g)


class _Residual(_Node):
    """``out(branch(x) + shortcut(x))``: transposed as ``branch^T(g') + shortcut^T(g')``, ``g' = out^T(g)``."""

    def __init__(self, branch: _Node, shortcut: _Node, out: _Node) -> None:
        self.branch, self.shortcut, self.out = branch, shortcut, out

    def forward(self, x: Tensor, run: _Run) -> Tensor:
        return self.out.forward(self.branch.forward(x, run) + self.shortcut.forward(x, run), run)

    def transpose(self, g: Tensor, run: _Run) -> Tensor:
        g = self.out.transpose(g, run)
        return self.branch.transpose(g, run) + self.shortcut.transpose(g, run)


# --------------------------------------------------------------------------------------------------- building

# residual block types: type -> (branch attribute names in forward order, shortcut attribute, output activation)
_BLOCKS: dict[type, tuple[tuple[str, ...], str | None, str | None]] = {}
_DEFAULTS_LOADED = False


def register_block(cls: type, *, branch: Sequence[str], shortcut: str | None = "downsample",
                   out: str | None = None) -> None:
    """Teach the generative pass a residual block type whose forward is ``out(branch(x) + shortcut(x))``.

    Args:
        cls: the block class (matched exactly, not its subclasses).
        branch: attribute names of the residual branch's modules, in forward order (``None`` attributes skipped).
        shortcut: attribute of the shortcut module (``None`` attribute or name: identity).
        out: attribute of the activation after the sum (``None``: none).

    A duplicate registration raises ``ValueError``.
    """
    if cls in _BLOCKS:
        raise ValueError(f"a generative transpose rule for {cls.__qualname__} is already registered")
    _BLOCKS[cls] = (tuple(branch), shortcut, out)


def _load_default_blocks() -> None:
    global _DEFAULTS_LOADED
    if _DEFAULTS_LOADED:
        return
    _DEFAULTS_LOADED = True
    try:
        from timm.models.resnet import BasicBlock, Bottleneck

        register_block(BasicBlock, branch=("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "se",
                                           "drop_path"), out="act2")
        register_block(Bottleneck, branch=("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa",
                                           "conv3", "bn3", "se", "drop_path"), out="act3")
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    try:
        from torchvision.models.resnet import BasicBlock as TvBasic
        from torchvision.models.resnet import Bottleneck as TvBottleneck

        register_block(TvBasic, branch=("conv1", "bn1", "relu", "conv2", "bn2"), out="relu")
        register_block(TvBottleneck, branch=("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"),
                       out="relu")
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass


def _is_stochastic_identity(m: nn.Module) -> bool:
    """Dropout-like modules (identity in eval mode): dropout, timm's DropPath / DropBlock2d."""
    return isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ in ("DropPath", "DropBlock2d")


class _Builder:
    def __init__(self) -> None:
        self.keys = 0
        self.switches = 0
        self.hidden_switches: list[str] = []

    def node(self, node: _Node) -> _Node:
        node.key = self.keys
        self.keys += 1
        return node

    def build(self, m: nn.Module | None, path: str) -> _Node:
        if m is None:
            return self.node(_Identity())
        if type(m) in _BLOCKS:
            branch, shortcut, out = _BLOCKS[type(m)]
            children = [self.build(getattr(m, a), f"{path}.{a}") for a in branch if getattr(m, a, None) is not None]
            sc = getattr(m, shortcut, None) if shortcut else None
            act = getattr(m, out, None) if out else None
            return self.node(_Residual(_Seq(children), self.build(sc, f"{path}.{shortcut}"),
                                       self.build(act, f"{path}.{out}")))
        if isinstance(m, nn.Sequential):
            return self.node(_Seq([self.build(c, f"{path}.{n}") for n, c in m.named_children()]))
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            return self.node(_Conv(m))
        if isinstance(m, nn.Linear):
            return self.node(_Linear(m))
        if isinstance(m, nn.ReLU):
            self.switches += 1
            return self.node(_AdaReLU(self.switches - 1))
        if isinstance(m, nn.MaxPool2d) and not m.return_indices:
            self.switches += 1
            return self.node(_AdaPool(m, self.switches - 1))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return self.node(_BatchNorm(m))
        if isinstance(m, nn.Identity) or _is_stochastic_identity(m):
            return self.node(_Identity())
        if isinstance(m, nn.Flatten):
            return self.node(_Flatten(m))
        hidden = sorted({type(c).__name__ for c in m.modules() if c is not m and isinstance(c, (nn.ReLU, nn.MaxPool2d))})
        if hidden:
            self.hidden_switches.append(f"{path} ({type(m).__name__}, holds {', '.join(hidden)})")
        return self.node(_Opaque(m))


class _Bound:
    """The backbone's plan (held outside the module tree: its parameters are the backbone's, not the kind's)."""

    def __init__(self, backbone: nn.Module, stages: list[_Node | None], head: _Node, num_switches: int) -> None:
        self.backbone, self.stages, self.head, self.num_switches = backbone, stages, head, num_switches


# --------------------------------------------------------------------------------------------------- the kind


@register_feedback("generative")
class GenerativeFeedback(Feedback):
    """CNN-F generative feedback (Huang et al. 2020) on any Staged backbone, with tied transposed weights.

    Args:
        shapes: the backbone's stage shapes.
        ind: the stage whose input receives the update ``f <- f + eta (r - f)`` (CNN-F's ``ind``; 0 = the stem
            output, the lowest point FeedbackNet exposes).
        eta: the step size (CNN-F's ``res_param``, 0.1).
        ada_above: apply the residual AdaReLU ``x = h + eta (r - h); x * [x r > 0]`` at the inputs of the stages
            above ``ind``.
        recon_weight: weight of the per-cycle reconstruction loss (CNN-F's ``mse_parameter``, 0.1).
        strict: raise ``ValueError`` (instead of warning) when an opaque module hides ReLU or max-pool modules.
        backbone: the Staged backbone whose weights the generative pass uses; bound automatically when the kind
            is attached to a :class:`~feedback.core.FeedbackNet`.
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        ind: int = 0,
        eta: float = 0.1,
        ada_above: bool = True,
        recon_weight: float = 0.1,
        strict: bool = False,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(shapes=shapes)
        n = shapes.num_stages
        if not (isinstance(ind, int) and 0 <= ind < n):
            raise ValueError(f"generative feedback: ind must be a stage index in 0..{n - 1}, got {ind!r}")
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"generative feedback: eta must be in (0, 1], got {eta!r}")
        self.ind, self.eta, self.ada_above = ind, float(eta), bool(ada_above)
        self.recon_weight, self.strict = float(recon_weight), bool(strict)
        self._bound: _Bound | None = None
        if backbone is not None:
            self.bind(backbone)

    def bind(self, backbone: nn.Module) -> None:
        """Build the generative pass from ``backbone``'s modules (its stages from ``ind`` up, and its head)."""
        check_staged(backbone)
        if len(backbone.stages) != self.shapes.num_stages:
            raise ValueError(f"backbone has {len(backbone.stages)} stages, the shapes {self.shapes.num_stages}")
        _load_default_blocks()
        b = _Builder()
        stages = [b.build(s, f"stages.{i}") if i >= self.ind else None for i, s in enumerate(backbone.stages)]
        head = b.build(backbone.head, "head")
        if b.hidden_switches:
            msg = (
                "generative feedback transposes these modules by their plain Jacobian, so AdaReLU/AdaPool cannot act "
                f"inside them: {'; '.join(b.hidden_switches)} (register a residual block's structure with "
                "feedback.generative.register_block; strict=True makes this an error)"
            )
            if self.strict:
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=2)
        self._bound = _Bound(backbone, stages, head, b.switches)

    def _plan(self) -> _Bound:
        if self._bound is None:
            raise RuntimeError(
                "generative feedback is not bound to a backbone: build it with FeedbackNet(backbone, 'generative', "
                "...) or pass backbone= to GenerativeFeedback"
            )
        return self._bound

    def init_state(self, x: Tensor) -> dict[str, Any]:
        return {"x": x, "t": 0, "hidden": None, "recon_mse": []}

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        if i == self.ind:
            return topdown
        x = h + self.eta * (topdown - h)
        return x * ((x * topdown) > 0)

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: dict[str, Any]
    ) -> tuple[list[Tensor | None], dict[str, Any], dict[str, Tensor]]:
        plan, ind, n = self._plan(), self.ind, len(feats)
        if state["t"] == 0:  # the step-0 inputs of stages ind .. L-1: the reconstruction targets, and f_0
            f0 = call_frozen(plan.backbone.stem, state["x"]) if ind == 0 else feats[ind - 1]
            refs = [f0] + [feats[s - 1] for s in range(ind + 1, n)]
            f, inputs = f0, refs
        else:
            refs, f, td = state["refs"], state["f"], state["topdown"]
            inputs = [f] + [self.combine(s, feats[s - 1], td[s]) for s in range(ind + 1, n)]
        run = _Run(state["hidden"], plan.num_switches)
        with torch.no_grad():  # 1. the switches of this step's forward pass
            for s in range(ind, n):
                plan.stages[s].forward(inputs[s - ind], run)
            plan.head.forward(feats[-1], run)
        g = plan.head.transpose(logits, run)  # 2. the generative pass, from the logits
        recon: list[Tensor | None] = [None] * n
        for s in range(n - 1, ind - 1, -1):
            g = plan.stages[s].transpose(g, run)
            g = g / rms(g)
            recon[s] = g * rms(refs[s - ind])  # 3. at the scale of the step-0 input
        f_new = f + self.eta * (recon[ind] - f)  # 4.
        topdown: list[Tensor | None] = [None] * n
        topdown[ind] = f_new
        if self.ada_above:  # 5.
            for s in range(ind + 1, n):
                topdown[s] = recon[s]
        errors = [(recon[s] - refs[s - ind]).float().pow(2).flatten(1).mean(1) for s in range(ind, n)]  # 6.
        aux = {"recon": self.recon_weight * torch.stack([e.mean() for e in errors]).mean()}
        new_state = {
            "x": state["x"], "t": state["t"] + 1, "f": f_new, "refs": refs, "topdown": topdown,
            "hidden": run.hidden, "recon_mse": state["recon_mse"] + [errors[0].detach()],
        }
        return topdown, new_state, aux

