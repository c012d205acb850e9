"""NASNet-A (Zoph et al. 2018) and PNASNet-5 (Liu et al. 2018) from timm's cells, Staged with a pair-state loop.

References: B. Zoph, V. Vasudevan, J. Shlens, Q. V. Le, "Learning transferable architectures for scalable image
recognition", CVPR 2018 (NASNet-A, Fig. 4 and Table 2); C. Liu et al., "Progressive neural architecture search",
ECCV 2018 (PNASNet-5, Table 3). The cells are timm's (``timm/models/nasnet.py``, ``pnasnet.py``, ports of the
TF-slim models), never re-implemented here.

A NASNet/PNASNet cell reads the outputs of the *two* previous cells, ``h_{n+1} = cell_n(h_n, h_{n-1})``, so the
state that flows between cells is the pair ``(x, x_prev)``. :class:`PairStage` runs a run of cells on that pair,
exactly as timm's ``forward_features`` does. The Staged contract wants one tensor at every stage boundary
(DESIGN.md 3.1), so a stage that ends inside the network hands on the pair *concatenated along channels*,
``torch.cat([x, x_prev], 1)``, and the next stage splits it again (``pair_channels[i] = (C_x, C_prev)``). Both are
at the same resolution there (the boundaries are the ends of the first two stacks of normal cells), concatenation
and slicing are exact, and a feedback kind that adds a signal to the boundary tensor injects into ``x`` (the first
``C_x`` channels), ``x_prev`` (the rest) or both. The last stage ends in the final ReLU and returns one map.

Staged view (NASNet-A Large at 331 px; ``c = penultimate_filters / 24``; strides cumulative):

=====  ================================================  =====================  ========  =======
stage  cells                                             output                 channels  strides
=====  ================================================  =====================  ========  =======
stem   conv0 (3x3/2, no padding, BN)                     (96, 165, 165)
0      cell_stem_0, cell_stem_1, N cells (stack 1)       [x, x_prev] (2 x 6c)   2016      8
1      reduction_cell_0, N cells (stack 2)               [x, x_prev] (2 x 12c)  4032      16
2      reduction_cell_1, N cells (stack 3), ReLU         x (24c)                4032      32
head   global average pool, dropout, linear
=====  ================================================  =====================  ========  =======

PNASNet-5 Large has the same layout (stem conv_0; stages: stem cells + cells 0-3, cells 4-7, cells 8-11 + ReLU;
channels 2160, 4320, 4320).

Models (parameters at 1000 classes): ``nasnetalarge`` (timm's, N = 6, 4032 penultimate filters, stem 96:
88,753,150; the paper's 6 @ 4032 has 88.9M), ``pnasnet5large`` (timm's: 86,057,668; paper 86.1M) and
``nasnetamobile``, NASNet-A Mobile (N = 4, 1056 penultimate filters, stem 32: 5,289,978; paper 5.3M), which timm
lacks (its class hard-codes N = 6, reference/architectures.md section 3): :func:`nasnet_a` builds any
``N @ penultimate_filters`` network from timm's cell classes, with the channel arithmetic of timm's
``NASNetALarge`` generalised to N cells per stack (at N = 6 it is timm's network, module for module).

Deviations, all timm's (the TF-slim ports): the cells after a reduction cell read the same ``x_prev`` as the
reduction cell (the second-to-last cell of the previous stack), as in TF-slim; no auxiliary head, no drop-path
("ScheduledDropPath"). The mobile network uses timm's "same" padding like the large one. PNASNet-5 has no width
option in timm, so its small configuration is the full network (marked slow).

Example:
    >>> import torch
    >>> net = nasnet_a(num_cells=2, penultimate_filters=192, stem_size=16, num_classes=10).eval()
    >>> net.channels, net.strides, net.pair_channels
    ([96, 192, 192], [8, 16, 32], [(48, 48), (96, 96), None])
    >>> net(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, create_classifier
from timm.models import nasnet as tnas
from timm.models import pnasnet as tpnas
from torch import Tensor

from ._registry import register_model
from .resnet import StagedModel, default_input_size

__all__ = ["CALLS", "PairStage", "StagedNASNet", "nasnet_a", "nasnetalarge", "nasnetamobile", "pnasnet5large"]

# How a cell is called on the pair state (x, x_prev), and how the pair moves on:
CALLS = {
    "single": "x_prev, x = x, cell(x)",  # NASNet / PNASNet cell_stem_0 (one input)
    "x_prev": "x_prev, x = x, cell(x, x_prev)",  # NASNet FirstCell, NormalCell
    "prev_x": "x_prev, x = x, cell(x_prev, x)",  # NASNet cell_stem_1; every PNASNet Cell
    "keep_prev": "x = cell(x, x_prev)",  # NASNet reduction cells: the next cell reads the same x_prev
}


class PairStage(nn.Module):
    """A run of two-input cells that carries ``(x, x_prev)`` inside, with one tensor in and one tensor out.

    Args:
        cells: the cells, in forward order.
        calls: one key of :data:`CALLS` per cell.
        split: ``None`` if the input is a single map (then the first call must be ``"single"``), else ``C_x``: the
            input is ``cat([x, x_prev], 1)`` and its first ``split`` channels are ``x``.
        output: ``"pair"`` returns ``cat([x, x_prev], 1)`` (same resolution needed), ``"x"`` returns ``act(x)``.
        act: applied to ``x`` when ``output="x"`` (the network's final ReLU), or ``None``.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H', W')``.
    """

    def __init__(
        self,
        cells: Sequence[nn.Module],
        calls: Sequence[str],
        *,
        split: int | None,
        output: str = "pair",
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(cells) != len(calls) or not cells:
            raise ValueError(f"need one call per cell, got {len(cells)} cells and {len(calls)} calls")
        bad = [c for c in calls if c not in CALLS]
        if bad:
            raise ValueError(f"unknown call(s) {bad}; choose from: {', '.join(CALLS)}")
        if split is None and calls[0] != "single":
            raise ValueError("a stage fed by a single map must start with a 'single' call")
        if output not in ("pair", "x"):
            raise ValueError(f"output must be 'pair' or 'x', got {output!r}")
        self.cells = nn.ModuleList(cells)
        self.calls = tuple(calls)
        self.split = split
        self.output = output
        self.act = act

    def run(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """The pair ``(x, x_prev)`` after the last cell."""
        if self.split is None:
            x, x_prev = h, None
        else:
            x, x_prev = h[:, : self.split], h[:, self.split :]
        for cell, call in zip(self.cells, self.calls):
            if call == "single":
                x_prev, x = x, cell(x)
            elif call == "x_prev":
                x_prev, x = x, cell(x, x_prev)
            elif call == "prev_x":
                x_prev, x = x, cell(x_prev, x)
            else:  # keep_prev
                x = cell(x, x_prev)
        return x, x_prev

    def forward(self, h: Tensor) -> Tensor:
        x, x_prev = self.run(h)
        if self.output == "pair":
            return torch.cat([x, x_prev], 1)
        return self.act(x) if self.act is not None else x

    def extra_repr(self) -> str:
        return f"split={self.split}, output={self.output!r}, calls={self.calls}"


class _RunPair(nn.Module):
    def __init__(self, stage: PairStage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.stage.run(h)


@torch.no_grad()
def _meta_run(module: nn.Module, *args: Tensor) -> Any:
    """``module(*args)`` on the meta device (shapes only: no memory, no compute), whatever device ``module`` is on."""
    state = {k: torch.empty_like(v, device="meta") for k, v in module.state_dict(keep_vars=True).items()}
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        return torch.func.functional_call(module, state, args, strict=False, tie_weights=False)
    finally:
        for m, training in modes:
            m.training = training


def _call_of(cell: nn.Module) -> str:
    if isinstance(cell, (tnas.CellStem0, tpnas.CellStem0)):
        return "single"
    if isinstance(cell, (tnas.CellStem1, tpnas.Cell)):
        return "prev_x"
    if isinstance(cell, (tnas.ReductionCell0, tnas.ReductionCell1)):
        return "keep_prev"
    if isinstance(cell, (tnas.FirstCell, tnas.NormalCell)):
        return "x_prev"
    raise TypeError(f"unknown NASNet/PNASNet cell {type(cell).__name__}")


class StagedNASNet(StagedModel):
    """A NASNet-A or PNASNet-5 seen as ``stem -> 3 PairStages -> head``; see the module docstring.

    Attributes as :class:`~baselines.resnet.StagedModel`, plus ``pair_channels``: per stage ``(C_x, C_prev)`` when
    its output is the concatenated pair, ``None`` when it is one map.

    Example:
        >>> import timm, torch
        >>> net = timm.create_model("nasnetalarge", num_features=192, stem_size=16, num_classes=10).eval()
        >>> staged = StagedNASNet.from_timm(net)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.equal(staged(x), net(x))
        True
    """

    pair_channels: list[tuple[int, int] | None]

    @classmethod
    def from_cells(
        cls,
        stem: nn.Module,
        stacks: Sequence[Sequence[nn.Module]],
        head: nn.Module,
        *,
        act: nn.Module,
        input_size: Sequence[int],
        num_classes: int,
        num_features: int,
    ) -> StagedNASNet:
        """Group ``stacks`` of cells (in forward order) into :class:`PairStage` s; shapes come from a meta-device run.

        Every stack but the last hands on the concatenated pair; the last applies ``act`` to ``x``.
        """
        c, h, w = (int(s) for s in input_size)
        probe = torch.empty(1, c, 256, 256, device="meta")  # 256 px: every stride divides the output sizes
        out = _meta_run(stem, probe)
        stages, channels, strides, pairs = [], [], [], []
        split = None
        for i, cells in enumerate(stacks):
            last = i == len(stacks) - 1
            stage = PairStage(
                list(cells), [_call_of(m) for m in cells], split=split, output="x" if last else "pair",
                act=act if last else None,
            )  # fmt: skip
            x, x_prev = _meta_run(_RunPair(stage), out)
            if last:
                out = x
                pairs.append(None)
            else:
                if x.shape[-2:] != x_prev.shape[-2:]:
                    raise ValueError(
                        f"stage {i} ends with x {tuple(x.shape)} and x_prev {tuple(x_prev.shape)} at "
                        "different resolutions: cannot concatenate them at the boundary"
                    )
                out = torch.cat([x, x_prev], 1)
                pairs.append((int(x.shape[1]), int(x_prev.shape[1])))
                split = int(x.shape[1])
            stages.append(stage)
            channels.append(int(out.shape[1]))
            strides.append(round(probe.shape[-1] / out.shape[-1]))
        net = cls(
            stem, stages, head, channels=channels, strides=strides, input_size=(c, h, w), num_classes=num_classes,
            num_features=num_features,
        )  # fmt: skip
        net.pair_channels = pairs
        return net

    @classmethod
    def from_timm(
        cls, model: tnas.NASNetALarge | tpnas.PNASNet5Large, *, input_size: Sequence[int] | None = None
    ) -> StagedNASNet:
        """Wrap timm's ``NASNetALarge`` or ``PNASNet5Large``, reusing its module objects (shared parameters).

        The stages end where timm's ``feature_info`` taps the stacks (after cell_5 and cell_11 in NASNet, cell_3 and
        cell_7 in PNASNet), so the stage outputs hold those taps (before their ReLU) together with ``x_prev``.
        """
        if not isinstance(model, (tnas.NASNetALarge, tpnas.PNASNet5Large)):
            raise TypeError(f"expected timm's NASNetALarge or PNASNet5Large, got {type(model).__name__}")
        # the cells in forward order (timm registers them in that order); a stack starts at each reduction cell
        large = isinstance(model, tnas.NASNetALarge)
        stem_name, expected = ("conv0", 2 + 18 + 2) if large else ("conv_0", 2 + 12)
        firsts = ("reduction_cell_0", "reduction_cell_1") if large else ("cell_4", "cell_8")
        cells = [(n, m) for n, m in model.named_children() if n.startswith(("cell_", "reduction_cell_"))]
        if len(cells) != expected or any(m is None for _, m in cells):
            raise ValueError("the model was pruned (prune_intermediate_layers); wrap an unpruned one")
        cuts = [0] + [[n for n, _ in cells].index(f) for f in firsts] + [len(cells)]
        stacks = [[m for _, m in cells[a:b]] for a, b in zip(cuts, cuts[1:])]
        return cls.from_cells(
            getattr(model, stem_name),
            stacks,
            nn.Sequential(model.global_pool, model.head_drop, model.last_linear),
            act=model.act,
            input_size=default_input_size(model, input_size, fallback=331),
            num_classes=int(model.num_classes),
            num_features=int(model.num_features),
        )


def nasnet_a(
    *,
    num_cells: int = 4,
    penultimate_filters: int = 1056,
    stem_size: int = 32,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    pad_type: str = "same",
    img_size: int = 224,
) -> StagedNASNet:
    """NASNet-A ``N @ penultimate_filters`` (Zoph et al. 2018) from timm's cells, Staged.

    timm's ``NASNetALarge`` constructor with its cell list generalised from 6 to ``num_cells`` normal cells per
    stack (one FirstCell and ``N - 1`` NormalCells; filter multiplier 2; ``c = penultimate_filters / 24`` filters
    in stack 1, ``2c`` in stack 2, ``4c`` in stack 3; the stem cells at ``c / 4`` and ``c / 2``). At
    ``num_cells=6, penultimate_filters=4032, stem_size=96`` it is timm's ``nasnetalarge``, module for module.

    Args:
        num_cells: N, normal cells per stack (>= 2; mobile 4, large 6).
        penultimate_filters: channels of the last cell output (24c; a multiple of 96).
        stem_size: channels of the 3x3 stem convolution (mobile 32, large 96).
        num_classes: classifier outputs.
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        pad_type: timm padding of the cells ("same": TF-style, as timm's ``nasnetalarge``).
        img_size: the nominal input side (``input_size``); any size of at least 32 px runs.
    """
    if num_cells < 2:
        raise ValueError(
            f"num_cells must be >= 2 (the cell after a reduction reads a normal cell's output), got {num_cells}"
        )
    if penultimate_filters % 96:
        raise ValueError(
            f"penultimate_filters must be a multiple of 96 (24c with c divisible by 4), got {penultimate_filters}"
        )
    c = penultimate_filters // 24
    k = {"pad_type": pad_type}
    stem = ConvNormAct(
        in_chans, stem_size, kernel_size=3, padding=0, stride=2,
        norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1), apply_act=False,
    )  # fmt: skip

    def stack(first_in_prev: int, first_in: int, width: int) -> list[nn.Module]:
        # FirstCell reads (x: first_in channels, x_prev: first_in_prev channels); each cell outputs 6 * width
        cells: list[nn.Module] = [tnas.FirstCell(first_in_prev, width // 2, first_in, width, **k)]
        cells.append(tnas.NormalCell(first_in, width, 6 * width, width, **k))
        cells += [tnas.NormalCell(6 * width, width, 6 * width, width, **k) for _ in range(num_cells - 2)]
        return cells

    stacks = [
        [tnas.CellStem0(stem_size, num_channels=c // 4, **k), tnas.CellStem1(stem_size, num_channels=c // 2, **k)]
        + stack(c, 2 * c, c),
        [tnas.ReductionCell0(6 * c, 2 * c, 6 * c, 2 * c, **k)] + stack(6 * c, 8 * c, 2 * c),
        [tnas.ReductionCell1(12 * c, 4 * c, 12 * c, 4 * c, **k)] + stack(12 * c, 16 * c, 4 * c),
    ]
    global_pool, head_drop, fc = create_classifier(
        penultimate_filters, num_classes, pool_type="avg", drop_rate=drop_rate
    )
    return StagedNASNet.from_cells(
        stem,
        stacks,
        nn.Sequential(global_pool, head_drop, fc),
        act=nn.ReLU(inplace=True),
        input_size=(in_chans, img_size, img_size),
        num_classes=num_classes,
        num_features=penultimate_filters,
    )


@register_model(
    timm_owned=True,
    family="NASNet",
    source="timm nasnetalarge",
    paper="Zoph et al. 2018",
    min_input_size=32,
    small={"num_features": 192, "stem_size": 16},
    small_input_size=32,
)
def nasnetalarge(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedNASNet:
    """NASNet-A Large, 6 @ 4032 (Zoph et al. 2018): timm's ``nasnetalarge``, Staged; 88,753,150 parameters.

    ``kwargs`` go to timm's ``NASNetALarge`` (``num_features`` = penultimate filters, a multiple of 96;
    ``stem_size``; ``drop_rate``). Nominal input 331 px.
    """
    net = tnas.NASNetALarge(num_classes=num_classes, in_chans=in_chans, **({"pad_type": "same"} | kwargs))
    return StagedNASNet.from_timm(net, input_size=(in_chans, 331, 331))


@register_model(
    family="NASNet",
    source="timm NASNet-A cells, 4 cells per stack (timm's class generalised)",
    paper="Zoph et al. 2018",
    min_input_size=32,
    small={"penultimate_filters": 192, "stem_size": 16, "num_cells": 2},
    small_input_size=32,
)
def nasnetamobile(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    num_cells: int = 4,
    penultimate_filters: int = 1056,
    stem_size: int = 32,
    drop_rate: float = 0.0,
) -> StagedNASNet:
    """NASNet-A Mobile, 4 @ 1056 (Zoph et al. 2018, Table 2): :func:`nasnet_a`; 5,289,978 parameters (paper 5.3M).

    Not in timm. Nominal input 224 px. The options are those of :func:`nasnet_a`.
    """
    return nasnet_a(
        num_cells=num_cells, penultimate_filters=penultimate_filters, stem_size=stem_size, num_classes=num_classes,
        in_chans=in_chans, drop_rate=drop_rate, img_size=224,
    )  # fmt: skip


@register_model(
    timm_owned=True,
    family="PNASNet",
    source="timm pnasnet5large",
    paper="Liu et al. 2018",
    min_input_size=32,
    small_input_size=32,
    slow=True,
)
def pnasnet5large(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedNASNet:
    """PNASNet-5 Large (Liu et al. 2018): timm's ``pnasnet5large``, Staged; 86,057,668 parameters.

    timm fixes its widths (no width option). ``kwargs`` go to timm's ``PNASNet5Large`` (``drop_rate``). Nominal
    input 331 px.
    """
    net = tpnas.PNASNet5Large(num_classes=num_classes, in_chans=in_chans, **({"pad_type": "same"} | kwargs))
    return StagedNASNet.from_timm(net, input_size=(in_chans, 331, 331))
