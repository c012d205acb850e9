"""feedback: top-down mechanisms for any Staged network.

Every feedback kind is registered by name; ``FeedbackNet(backbone, kind, steps=T)`` runs the bottom-up /
top-down loop on any model with ``stem``, ``stages`` and ``head`` (see :mod:`feedback.core`).
"""

from . import (  # noqa: F401  (registers the kinds)
    deconv,
    excitation,  # noqa: F401  (registers the 'excitation' kind)
    generative,  # noqa: F401  (registers the kind)
    none,
    wta,  # noqa: F401  (registers the 'wta' kind)
)
from .brims_cnn import BRIMsFeedback  # noqa: F401  (registers the 'brims' kind)
from .cognitive import CognitiveFeedback  # noqa: F401  (registers the kind)
from .core import (
    STAGED_ATTRS,
    Feedback,
    FeedbackNet,
    FeedbackOutput,
    StageShapes,
    check_staged,
    create_feedback,
    feedback_class,
    is_staged,
    list_feedback,
    probe_shapes,
    register_feedback,
    staged_forward,
)
from .cost import feedback_cost
from .latents import LatentsFeedback  # noqa: F401  (registers the 'latents' kind)
from .layer_attention import LayerAttentionFeedback  # noqa: F401  (registers the 'layer_attention' kind)
from .plain import PlainNet
from .rectified import RectifiedFeedback  # noqa: F401  (registers the kind)
from .tdm import TDMFeedback  # noqa: F401  (registers the kind)

__all__ = [
    "STAGED_ATTRS",
    "Feedback",
    "FeedbackNet",
    "FeedbackOutput",
    "PlainNet",
    "StageShapes",
    "check_staged",
    "create_feedback",
    "feedback_class",
    "feedback_cost",
    "is_staged",
    "list_feedback",
    "probe_shapes",
    "register_feedback",
    "staged_forward",
]
