"""Image transforms: PIL RGB -> normalised float tensor (3, H, W).

Eval: resize the short side to ``image_size`` (bicubic) and center-crop. Train:
RandomResizedCrop with ``scale`` (open_clip's default (0.9, 1.0)) and no horizontal flip unless
``hflip=True``: emoji and digits have a direction ("left-facing fist", "3" vs "Ɛ").

The transform's ``repr`` names every setting; the feature cache uses it as a key, so two
transforms with the same ``repr`` must give the same tensors (eval) or the same distribution
(train).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import UserError

_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
          "nearest": InterpolationMode.NEAREST}


class ImageTransform:
    """A callable PIL image -> (3, S, S) float tensor with a ``repr`` that identifies it."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False,
                 scale: tuple[float, float] = (0.9, 1.0), hflip: bool = False, interpolation: str = "bicubic"):
        if int(image_size) < 1:
            raise UserError(f"image_size must be a positive integer, got {image_size}")
        if len(mean) != 3 or len(std) != 3:
            raise UserError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        if interpolation not in _MODES:
            raise UserError(f"unknown interpolation {interpolation!r}; valid: {', '.join(_MODES)}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise UserError(f"crop scale {tuple(scale)} must satisfy 0 < low <= high <= 1")
        self.image_size, self.train, self.hflip, self.interpolation = int(image_size), train, hflip, interpolation
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.scale = (float(scale[0]), float(scale[1]))
        mode = _MODES[interpolation]
        if train:
            steps = [T.RandomResizedCrop(self.image_size, scale=self.scale, interpolation=mode)]
            if hflip:
                steps.append(T.RandomHorizontalFlip())
        else:
            steps = [T.Resize(self.image_size, interpolation=mode), T.CenterCrop(self.image_size)]
        self._pipeline = T.Compose(steps + [T.ToTensor(), T.Normalize(self.mean, self.std)])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self._pipeline(image)  # (3, S, S)

    def __repr__(self) -> str:
        mean = ",".join(f"{m:.4g}" for m in self.mean)
        std = ",".join(f"{s:.4g}" for s in self.std)
        aug = f"random_resized_crop(scale={self.scale[0]:g}-{self.scale[1]:g}),hflip={self.hflip}" if self.train \
            else "resize+center_crop"
        return f"ImageTransform(size={self.image_size},{aug},{self.interpolation},mean=({mean}),std=({std}))"


def image_transform(image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False,
                    scale: tuple[float, float] = (0.9, 1.0), hflip: bool = False,
                    interpolation: str = "bicubic") -> ImageTransform:
    """See :class:`ImageTransform`; the contract's entry point."""
    return ImageTransform(image_size, mean, std, train=train, scale=scale, hflip=hflip, interpolation=interpolation)
