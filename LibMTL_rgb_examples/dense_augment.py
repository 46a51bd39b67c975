"""Geometric transforms of dense-prediction samples (an image plus per-pixel label maps),
applied consistently to the image and every label map.

Each label map declares a :class:`TargetKind`: how its *values* change when the picture is
zoomed by ``s`` (depth shrinks by ``s``, disparity and pixel offsets grow by ``s``) and which
channel changes sign under a horizontal flip (the x component of normals and offsets).
Label maps are always resampled by nearest neighbour, so class ids, the ``-1`` / ``0`` /
NaN markers of invalid pixels and unit normals stay exact; the image is resampled bilinearly.

:class:`DenseAugmentation` is the NYUv2 augmentation of MTAN / LibMTL (random scale-crop with
scales 1.0, 1.2, 1.5, then a random horizontal flip), generalised to any set of label maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class TargetKind:
    """How a label map transforms.

    Attributes:
        zoom_exponent: values are multiplied by ``s ** zoom_exponent`` when the view is zoomed
            in by ``s`` (depth: -1, disparity and pixel offsets: +1, classes and normals: 0).
        flip_negate_channel: channel whose sign flips under a horizontal flip (None: none).
        is_class_map: integer class ids ``[H, W]`` (kept as int64).
    """

    zoom_exponent: int = 0
    flip_negate_channel: Optional[int] = None
    is_class_map: bool = False


CLASS_MAP = TargetKind(is_class_map=True)
DEPTH = TargetKind(zoom_exponent=-1)
DISPARITY = TargetKind(zoom_exponent=1)
#: Surface normals ``[3, H, W]`` with x first (MTAN's NYUv2 convention).
NORMAL = TargetKind(flip_negate_channel=0)
#: Instance offsets ``[2, H, W]`` as (dy, dx), in pixels.
OFFSET_YX = TargetKind(zoom_exponent=1, flip_negate_channel=1)


def resize_image(image: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of a ``[C, H, W]`` image to ``size = (h, w)``."""
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=True)[0]


def resize_target(target: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a ``[H, W]`` or ``[C, H, W]`` label map (dtype kept)."""
    size = (int(size[0]), int(size[1]))
    if tuple(target.shape[-2:]) == size:
        return target
    planes = target[None, None] if target.dim() == 2 else target[None]
    resized = F.interpolate(planes.double(), size=size, mode="nearest")
    resized = resized[0, 0] if target.dim() == 2 else resized[0]
    return resized.to(target.dtype)


def resize_sample(
    image: Tensor, targets: Mapping[str, Tensor], size: Sequence[int], target_size: Optional[Sequence[int]] = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Resize the image to ``size`` and every label map to ``target_size`` (default ``size``).
    Values are unchanged: resizing the whole picture is not a zoom."""
    target_size = size if target_size is None else target_size
    return resize_image(image, size), {name: resize_target(t, target_size) for name, t in targets.items()}


def _crop(tensor: Tensor, top: float, left: float, scale: float) -> Tensor:
    """The window ``[top, top + 1/scale) x [left, left + 1/scale)`` (fractions of the size)."""
    height, width = tensor.shape[-2:]
    h, w = max(1, int(height / scale)), max(1, int(width / scale))
    i = min(int(round(top * height)), height - h)
    j = min(int(round(left * width)), width - w)
    return tensor[..., i:i + h, j:j + w]


class DenseAugmentation:
    """Random scale-crop (zoom in by ``s`` drawn from ``scales``, random window, resized back)
    followed by a random horizontal flip, applied to the image and all label maps alike.

    Args:
        scales: zoom factors ``s >= 1`` to choose from uniformly (MTAN/LibMTL: 1.0, 1.2, 1.5).
        flip: also flip horizontally with probability 1/2.
        generator: torch random generator (default: the global one, which DataLoader workers
            seed differently).
    """

    def __init__(self, scales: Sequence[float] = (1.0, 1.2, 1.5), flip: bool = True, generator: Optional[torch.Generator] = None) -> None:
        if not scales or min(scales) < 1.0:
            raise ValueError(f"scales must be a non-empty list of zoom factors >= 1, got {list(scales)}")
        self.scales = [float(s) for s in scales]
        self.flip = flip
        self.generator = generator

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def __call__(self, image: Tensor, targets: Mapping[str, Tensor], kinds: Mapping[str, TargetKind]) -> tuple[Tensor, dict[str, Tensor]]:
        """Transform ``image [C, H, W]`` and ``targets`` (name -> label map, any resolution)."""
        missing = [name for name in targets if name not in kinds]
        if missing:
            raise ValueError(f"no TargetKind given for label map(s) {missing}")
        scale = self.scales[int(torch.randint(len(self.scales), (), generator=self.generator))]
        top = self._uniform() * (1.0 - 1.0 / scale)
        left = self._uniform() * (1.0 - 1.0 / scale)
        flip = self.flip and self._uniform() < 0.5

        image = resize_image(_crop(image, top, left, scale), image.shape[-2:])
        out: dict[str, Tensor] = {}
        for name, target in targets.items():
            kind = kinds[name]
            target = resize_target(_crop(target, top, left, scale), target.shape[-2:])
            if kind.zoom_exponent != 0 and scale != 1.0:
                target = target * scale ** kind.zoom_exponent
            out[name] = target
        if flip:
            image = image.flip(-1)
            out = {name: _flip_target(t, kinds[name]) for name, t in out.items()}
        return image, out


def _flip_target(target: Tensor, kind: TargetKind) -> Tensor:
    flipped = target.flip(-1)
    if kind.flip_negate_channel is not None:
        flipped = flipped.clone()
        flipped[kind.flip_negate_channel] = -flipped[kind.flip_negate_channel]
    return flipped
