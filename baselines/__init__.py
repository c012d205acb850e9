"""Reference architectures, one family per module, each exposing the Staged view (DESIGN.md section 3.1).

Every model has ``stem``, ``stages`` (an ``nn.ModuleList``) and ``head`` whose sequential execution is exactly its
forward, plus ``channels``, ``strides`` (one per stage output), ``input_size`` (C, H, W) and ``num_classes``.
Models are registered by name; importing this package also makes them visible to ``timm.create_model``.

Example:
    >>> import baselines, torch
    >>> baselines.list_models("lenet*")
    ['lenet5', 'lenet5_relu']
    >>> model = baselines.create_model("lenet5", num_classes=10, in_chans=1)
    >>> h = model.stem(torch.zeros(2, 1, 32, 32))
    >>> shapes = []
    >>> for stage in model.stages:
    ...     h = stage(h)
    ...     shapes.append(tuple(h.shape[1:]))
    >>> shapes
    [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,)]
"""

from . import alexnet as alexnet
from . import captcha_cnn as captcha_cnn
from . import captioner as captioner
from . import chebnet as chebnet
from . import coordconv as coordconv
from . import dcgan as dcgan
from . import deepsets as deepsets
from . import densenet as densenet
from . import faster_rcnn as faster_rcnn
from . import gcn as gcn
from . import gnn as gnn
from . import googlenet as googlenet
from . import lenet, resnet
from . import mlp as mlp
from . import nasnet as nasnet
from . import nerf as nerf
from . import perceiver as perceiver
from . import perceptron as perceptron
from . import pixelnet as pixelnet
from . import rcn as rcn
from . import rcn_reader as rcn_reader
from . import rcnn as rcnn
from . import recurrent as recurrent
from . import resnet_cifar as resnet_cifar
from . import segnet as segnet
from . import siamese as siamese
from . import siren as siren
from . import spectral_gnn as spectral_gnn
from . import squeezenet as squeezenet
from . import stn as stn
from . import tdbu_segmentation as tdbu_segmentation
from . import transformer as transformer
from . import unet as unet
from . import vgg as vgg
from . import vit as vit
from . import wavenet as wavenet
from . import yolo as yolo
from . import zfnet as zfnet
from ._registry import GENERIC_OPTIONS as GENERIC_OPTIONS
from ._registry import create_model, list_models, model_entrypoint, register_model
from ._registry import model_info as model_info
from .lenet import LeNet5, LeNet5ReLU
from .references import REFERENCES as REFERENCES
from .references import check_reference as check_reference
from .references import reference as reference
from .resnet import StagedResNet

__all__ = ["LeNet5", "LeNet5ReLU", "StagedResNet", "create_model", "lenet", "list_models", "model_entrypoint", "register_model", "resnet"]
