"""Reference parameter counts: what the paper or the library says each registered architecture has.

One table for the whole framework: the test suite checks every entry against a build of our model at the reference
configuration (``tests/test_references.py``), the runner records the entry of a run's backbone in its
``result.json`` (``"reference"``), and the paper's Table 7 prints ours against the reference from those run
directories. The figures come from ``reference/architectures.md``, which counted them in the libraries
(torchvision 0.2x, timm 1.x) or rebuilt them from the papers' layer specifications; ``paper`` quotes what the paper
itself states where it states a total (often rounded).

An entry is *exact* (``rel_tol = 0``: the library's or the specification's count, to the parameter) or *approximate*
(the paper's rounded total, ``rel_tol`` the rounding it allows). ``kwargs`` is the configuration the reference
counts (default: the entry point's defaults, which are the reference configuration for every model listed here).

Example::

    >>> import baselines
    >>> ref = baselines.reference("resnet18")
    >>> ref.params, ref.source
    (11689512, 'torchvision resnet18 / timm resnet18')
    >>> baselines.check_reference("resnet18")["match"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Reference", "REFERENCES", "reference", "check_reference"]


@dataclass(frozen=True)
class Reference:
    """A reference parameter count: ``params`` (exact, or the paper's rounded total when ``rel_tol > 0``),
    ``source`` (library or specification), ``paper`` (what the paper states, if anything), ``kwargs`` (the build)."""

    params: int
    source: str
    paper: str = ""
    rel_tol: float = 0.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, count: int) -> bool:
        return abs(count - self.params) <= self.rel_tol * self.params


_TV = "torchvision {}"
_BOTH = "torchvision {0} / timm {0}"

REFERENCES: dict[str, Reference] = {
    "perceptron": Reference(785, "d + 1 weights, d = 28 x 28 (Rosenblatt 1958)"),
    "mlp": Reference(269_322, "torchvision.ops.MLP(784, [256, 256, 10])"),
    "lenet5": Reference(60_000, "LeCun et al. 1998, section II.B", paper="60,000 trainable parameters"),
    "alexnet": Reference(61_100_840, _TV.format("alexnet"), paper="60 million (the 2012 two-column net)"),
    "alexnet_paper": Reference(60_965_224, "Krizhevsky et al. 2012 layer spec (2 groups, LRN), architectures.md",
                               paper="60 million"),
    "zfnet": Reference(62_357_608, "Zeiler & Fergus 2014 Fig. 3 layer spec, architectures.md"),
    "tv_vgg11": Reference(132_863_336, _TV.format("vgg11"), paper="133M (net A)"),
    "tv_vgg11_bn": Reference(132_868_840, _TV.format("vgg11_bn")),
    "tv_vgg13": Reference(133_047_848, _TV.format("vgg13"), paper="133M (net B)"),
    "tv_vgg13_bn": Reference(133_053_736, _TV.format("vgg13_bn")),
    "tv_vgg16": Reference(138_357_544, _TV.format("vgg16"), paper="138M (net D)"),
    "tv_vgg16_bn": Reference(138_365_992, _TV.format("vgg16_bn")),
    "tv_vgg19": Reference(143_667_240, _TV.format("vgg19"), paper="144M (net E)"),
    "tv_vgg19_bn": Reference(143_678_248, _TV.format("vgg19_bn")),
    "googlenet": Reference(6_624_904, "torchvision googlenet(aux_logits=False)"),
    "googlenet_paper": Reference(6_998_552, "Szegedy et al. 2015 Table 1 spec (5x5 branches, no BN), architectures.md",
                                 paper="6,797.7K weights (K = 1024) in Table 1"),
    "squeezenet1_0": Reference(1_248_424, _TV.format("squeezenet1_0"), paper="about 1.2M (4.8 MB)"),
    "squeezenet1_1": Reference(1_235_496, _TV.format("squeezenet1_1")),
    "resnet18": Reference(11_689_512, _BOTH.format("resnet18")),
    "resnet34": Reference(21_797_672, _BOTH.format("resnet34")),
    "resnet50": Reference(25_557_032, _BOTH.format("resnet50")),
    "resnet101": Reference(44_549_160, _BOTH.format("resnet101")),
    "resnet152": Reference(60_192_808, _BOTH.format("resnet152")),
    "resnet20_cifar": Reference(270_000, "He et al. 2016 Table 6", paper="0.27M", rel_tol=0.005),
    "resnet32_cifar": Reference(460_000, "He et al. 2016 Table 6", paper="0.46M", rel_tol=0.01),
    "resnet44_cifar": Reference(660_000, "He et al. 2016 Table 6", paper="0.66M", rel_tol=0.005),
    "resnet56_cifar": Reference(850_000, "He et al. 2016 Table 6", paper="0.85M", rel_tol=0.005),
    "resnet110_cifar": Reference(1_700_000, "He et al. 2016 Table 6", paper="1.7M", rel_tol=0.03),
    "densenet121": Reference(7_978_856, _BOTH.format("densenet121")),
    "densenet161": Reference(28_681_000, _BOTH.format("densenet161")),
    "densenet169": Reference(14_149_480, _BOTH.format("densenet169")),
    "densenet201": Reference(20_013_928, _BOTH.format("densenet201")),
    "densenet_bc100_cifar": Reference(800_000, "Huang et al. 2017 Table 2 (L=100, k=12)", paper="0.8M",
                                      rel_tol=0.04),
    "nasnetalarge": Reference(88_753_150, "timm nasnetalarge", paper="88.9M (6@4032)"),
    "nasnetamobile": Reference(5_300_000, "Zoph et al. 2018 Table 2 (4@1056)", paper="5.3M", rel_tol=0.01),
    "pnasnet5large": Reference(86_057_668, "timm pnasnet5large", paper="86.1M"),
    "segnet": Reference(29_486_988, "Badrinarayanan et al. 2017 (VGG-16-BN encoder, 12 CamVid classes), "
                        "architectures.md", paper="29.5M"),
    "unet": Reference(31_030_658, "Ronneberger et al. 2015 Fig. 1 (valid convolutions, 2 classes), architectures.md"),
    "unet_bn": Reference(31_043_586, "same-padding U-Net with batch norm (3 -> 2 channels), architectures.md"),
    "pixelnet": Reference(173_938_517, "Bansal et al. 2017: VGG-16 + fc6/fc7 hypercolumn + MLP 4096-4096-21, "
                          "architectures.md"),
    "yolo_v1": Reference(271_703_550, "Redmon et al. 2016 Fig. 3 (24 conv + FC 4096 + FC 1470, 448 px), "
                         "architectures.md"),
    "faster_rcnn_vgg16": Reference(137_073_622, "Ren et al. 2015 VGG-16 conv5_3 + RoIPool + fc6/fc7, 21 classes, "
                                   "architectures.md"),
    "dcgan_generator": Reference(3_576_704, "pytorch/examples dcgan G (nz 100, ngf 64, 64x64)"),
    "nerf": Reference(1_191_688, "Mildenhall et al. 2020 (coarse + fine MLPs, D=8, W=256), nerf-pytorch",
                      paper="5 MB of weights"),
    "perceiver_imagenet": Reference(44_894_304, "Jaegle et al. 2021 ImageNet config, architectures.md",
                                    paper="44.9M"),
    "transformer_base": Reference(65_000_000, "Vaswani et al. 2017 Table 3 (base)", paper="65M", rel_tol=0.03),
    "wavenet": Reference(1_516_000, "ibab/tensorflow-wavenet defaults (counts an unused last residual 1x1, "
                         "1,056 parameters)", rel_tol=0.001),
}


def reference(name: str) -> Reference | None:
    """The reference count of registered model ``name``, or ``None`` when no paper or library gives one."""
    return REFERENCES.get(name)


def check_reference(name: str) -> dict[str, Any] | None:
    """Count ``name`` at its reference configuration (meta device: no memory, no init) against :data:`REFERENCES`.

    Returns ``None`` without a reference, else ``{"params", "reference", "rel_tol", "source", "paper", "match"}``.
    """
    import torch

    from baselines._registry import create_model, model_info

    ref = REFERENCES.get(name)
    if ref is None:
        return None
    if ref.kwargs:
        with torch.device("meta"):
            count = sum(p.numel() for p in create_model(name, **dict(ref.kwargs)).parameters())
    else:
        count = int(model_info(name)["num_params"])
    return {"params": count, "reference": ref.params, "rel_tol": ref.rel_tol, "source": ref.source,
            "paper": ref.paper, "match": ref.matches(count)}
