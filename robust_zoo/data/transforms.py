"""Every image transform of the package: the training augmentations, the evaluation resize and
crop, and the paper's transfer transforms. Images come out as float tensors in [0, 1]."""
from __future__ import annotations

from typing import Callable

import torch

from .common import DataError

__all__ = ["Lighting", "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "AUGMENTATIONS",
           "eval_resize", "train_transforms", "eval_transforms", "make_transforms"]

# robustness' data_augmentation.IMAGENET_PCA (AlexNet's PCA of ImageNet RGB pixels)
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))

AUGMENTATIONS = ("robustness-imagenet", "robustness-cifar", "flip-crop", "none")


class Lighting:
    """AlexNet-style PCA lighting noise (robustness' ``data_augmentation.Lighting``).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, alphastd)`` per image,
    drawn from torch's global RNG like the torchvision transforms around it. The result is
    clamped to [0, 1] (robustness does not clamp; its attack clamps every iterate, so only the
    ε=0 path and the attack's start point differ, by at most a few 1/255).
    """

    def __init__(self, alphastd: float = 0.05, eigval=IMAGENET_PCA_EIGVAL,
                 eigvec=IMAGENET_PCA_EIGVEC):
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.empty(3).normal_(0, self.alphastd)
        rgb = (self.eigvec * (alpha * self.eigval).view(1, 3)).sum(1)
        return (img + rgb.to(img.dtype).view(3, 1, 1)).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return f"Lighting(alphastd={self.alphastd})"


def eval_resize(input_size: int) -> int:
    """The eval resize for a crop: 256 for 224 (ImageNet), scaled in proportion otherwise."""
    return int(round(input_size * 256 / 224))


def train_transforms(augmentation: str, input_size: int) -> Callable:
    """PIL image → [0, 1] tensor with the training augmentation ``augmentation``."""
    from torchvision import transforms as T

    if augmentation == "robustness-imagenet":   # robustness' TRAIN_TRANSFORMS_IMAGENET
        return T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(),
                          T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
                          T.ToTensor(), Lighting(0.05)])
    if augmentation == "robustness-cifar":      # robustness' TRAIN_TRANSFORMS_DEFAULT(size)
        return T.Compose([T.RandomCrop(input_size, padding=4), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.25, 0.25, 0.25), T.RandomRotation(2), T.ToTensor()])
    if augmentation == "flip-crop":
        return T.Compose([T.RandomCrop(input_size, padding=input_size // 8),
                          T.RandomHorizontalFlip(), T.ToTensor()])
    if augmentation == "none":
        return T.Compose([T.Resize(input_size), T.CenterCrop(input_size), T.ToTensor()])
    raise DataError(f"Unknown augmentation {augmentation!r}; choose one of "
                    f"{', '.join(AUGMENTATIONS)}")


def eval_transforms(input_size: int, resize: int | None = None) -> Callable:
    """Resize (256 for a 224 crop, in proportion otherwise), center crop, to a [0, 1] tensor."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize or eval_resize(input_size)), T.CenterCrop(input_size),
                      T.ToTensor()])


def make_transforms(image_size: int = 224, resize_size: int | None = None,
                    granularity: int | None = None):
    """(train, test) transforms of the paper: RandomResizedCrop+flip / Resize+CenterCrop.

    Images stay in [0, 1] (the models normalize inside). ``granularity=g`` first shrinks the
    shorter side to ``g`` pixels, so the rest of the pipeline scales it back up (the paper's
    §4.3 experiment, g=32).
    """
    from torchvision import transforms as T

    if image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    resize_size = resize_size or eval_resize(image_size)
    pre = [T.Resize(granularity)] if granularity else []
    train = T.Compose(pre + [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                             T.ToTensor()])
    test = T.Compose(pre + [T.Resize(resize_size), T.CenterCrop(image_size), T.ToTensor()])
    return train, test
