"""What a trained purifier network needs as a defense's part: the digest of its weights (``weights_digest``, in
run.json) and ``frozen_eval``.  The defense itself, ``PurifierDefense``, is in ``defenses.purifiers.training``."""
from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_digest(net: nn.Module) -> str:
    """First 12 hex digits of SHA-256 over the state dict's names, shapes and bytes (goes in run.json)."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def frozen_eval(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with no parameter gradients: a trained preprocessor as the defenses use it."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
