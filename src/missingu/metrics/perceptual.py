"""LPIPS (Zhang et al. 2018), AlexNet variant v0.1, one distance per image.

``d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) - f_l(y)) ||^2`` over AlexNet's five ReLU outputs
``f_l`` (each unit-normalised over channels), with the learned per-channel weights ``w_l`` that ship
in the ``lpips`` wheel. The AlexNet trunk (ImageNet weights, torchvision's
``alexnet-owt-7be5be79.pth``) must be staged in ``<torch_home>/hub/checkpoints``
(:mod:`missingu.weights`); it is never downloaded here.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import InputFileError
from ..weights import DEFAULT_TORCH_HOME, require_weights
from .fidelity import check_pair

# AlexNet's first conv (11x11, stride 4, pad 2) and the two 3x3/2 max-pools before conv3 need a side of
# at least 31 pixels: floor((H - 7) / 4) + 1 >= 7 at conv1 leaves 3 pixels after the second pool.
LPIPS_MIN_SIDE = 31


def load_lpips(torch_home: str | Path = DEFAULT_TORCH_HOME, device: str | torch.device = "cpu") -> nn.Module:
    """``lpips.LPIPS(net="alex", version="0.1")`` with its AlexNet trunk read from the staged file.

    A missing file raises :class:`~missingu.weights.WeightsUnavailable` (``not computed: stage
    alexnet-owt-7be5be79.pth in <dir>``) before anything else happens. The trunk is built random
    (``pnet_rand=True``, so neither lpips nor torchvision looks for a download) and then loaded from
    ``<torch_home>/hub/checkpoints/alexnet-owt-7be5be79.pth``: the same tensors lpips' own
    ``pnet_rand=False`` path gets from torchvision (``features.{i}`` of AlexNet into ``net.slice*.{i}``;
    tested), without touching ``TORCH_HOME`` or ``torch.hub``'s global folder. Returned in eval mode
    with ``requires_grad`` off.
    """
    path = require_weights("lpips_alex", torch_home)
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision the deprecated ``pretrained=False``
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    model.net.load_state_dict(_alexnet_trunk(path, model.net.state_dict()))
    return model.to(device).eval().requires_grad_(False)


def _alexnet_trunk(path: Path, trunk: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``trunk`` (``slice<k>.<i>.weight``...) taken from torchvision's AlexNet checkpoint
    at ``path`` (``features.<i>.weight``...); a file that is not that checkpoint raises InputFileError."""
    what = "torchvision's AlexNet checkpoint (a state dict with features.* tensors)"
    try:  # the 2017 file predates torch's zip format, so io.load_torch's zip check does not apply
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        raise InputFileError(f"{path} is not {what}: {str(err).strip().splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise InputFileError(f"{path} is not {what}: it holds a {type(state).__name__}")
    out = {}
    for key, param in trunk.items():
        source = "features." + key.split(".", 1)[1]
        value = state.get(source)
        if not isinstance(value, Tensor) or value.shape != param.shape:
            found = tuple(value.shape) if isinstance(value, Tensor) else "nothing"
            raise InputFileError(f"{path} is not {what}: {source} should be {tuple(param.shape)}, found {found}")
        out[key] = value
    return out


def lpips_input(x: Tensor) -> Tensor:
    """Images in [0, 1] (N, C, H, W) as LPIPS takes them: ``2 x - 1`` in [-1, 1], grayscale repeated
    to 3 channels, and images with a side under :data:`LPIPS_MIN_SIDE` (31) upsampled bilinearly
    (``align_corners=False``) by ``s = 31 / min(H, W)`` to ``(ceil(s H), ceil(s W))``, e.g. 16x16
    digits to 31x31."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    h, w = x.shape[-2:]
    short = min(h, w)
    if short < LPIPS_MIN_SIDE:
        size = (-(-h * LPIPS_MIN_SIDE // short), -(-w * LPIPS_MIN_SIDE // short))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return 2 * x - 1


def lpips_distance(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """LPIPS distance per image pair, shape (N,), for ``x``, ``y`` in [0, 1] (N, C, H, W), C = 1 or 3.

    Inputs go through :func:`lpips_input` (to [-1, 1], gray to RGB, upsampled to a 31-pixel short
    side if smaller: values on upsampled images are not comparable with LPIPS at other sizes) and are
    moved to ``model``'s device; the result is on that device. ``model`` is any ``lpips.LPIPS``
    (:func:`load_lpips`, or one with a random trunk in tests).
    """
    check_pair(x, y)
    device = next(model.parameters()).device
    with torch.no_grad():
        d = model(lpips_input(x).to(device), lpips_input(y).to(device))
    return d.flatten()
