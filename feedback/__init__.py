"""feedback: top-down mechanisms for any Staged network.

Every feedback kind is registered by name; ``FeedbackNet(backbone, kind, steps=T)`` runs the bottom-up /
top-down loop on any model with ``stem``, ``stages`` and ``head`` (see :mod:`feedback.core`).
"""

from . import deconv, none  # noqa: F401  (registers the kinds)
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

__all__ = [
    "STAGED_ATTRS",
    "Feedback",
    "FeedbackNet",
    "FeedbackOutput",
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
