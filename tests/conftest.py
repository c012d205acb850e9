"""Test-wide settings.

Tests run with one torch thread: the models under test are tiny, so intra-op threads only add synchronisation,
and on a shared 2-core machine spinning OpenMP threads made small-model tests up to 50x slower. One thread also
makes CPU results independent of the machine's core count.
"""

import os

import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)
