"""How a run executes: numeric precision, memory layout, determinism and ``torch.compile``; one
helper each for every loop of the package."""
from __future__ import annotations

import contextlib
import os

import torch

from ..errors import UsageError
from ..recipe import Precision, choices


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``recipe.Precision`` ("fp32", "bf16"); ``UsageError``
    otherwise. The one check of a precision argument."""
    valid = choices(Precision)
    if precision not in valid:
        raise UsageError(f"precision {precision!r} is not valid: use one of {', '.join(valid)} "
                         "(fp16 is not supported: use bf16)")
    return precision


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``precision`` checked, or the device default when None: bf16 autocast on CUDA, fp32
    elsewhere (bf16 on CPU is slower than fp32 for convolutions)."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    return check_precision(precision)


def autocast(device: torch.device, precision: str | None):
    """The autocast context of ``precision`` on ``device``: bf16 autocast, or fp32 with any
    enclosing autocast switched off."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def channels_last_default(device: torch.device, requested: bool | None = None) -> bool:
    """channels_last when asked, else on CUDA only (where cuDNN's NHWC kernels are faster)."""
    return device.type == "cuda" if requested is None else bool(requested)


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device):
    """``--deterministic``: deterministic kernels (restored afterwards, for callers that train
    in-process); otherwise let cuDNN pick the fastest kernels. ``warn_only``: a few CUDA
    backward kernels (adaptive average pooling, which every ResNet's global pool uses) have no
    deterministic version; PyTorch then warns instead of refusing to train."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic,
             torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[3])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:3]


def compile_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(model)`` (Inductor, default mode), once a one-line probe has shown that
    Inductor can build kernels on ``device`` (a C++ compiler on CPU, Triton on CUDA): a missing
    tool chain stops the run before it starts, with what to do, instead of at its first step.

    The compiled module shares ``model``'s parameters and buffers (save ``model``, not it).
    Each distinct (train/eval mode, grad mode, parameters frozen or not) use compiles its own
    graph once: the attack (eval mode, frozen parameters: an input-only backward), the training
    forward/backward, no-grad evaluation."""
    device = torch.device(device)
    if device.type not in _PROBED:      # once per device type and process (a sweep's runs)
        try:
            probe = torch.compile(lambda t: t * 2 + 1)
            probe(torch.ones(4, device=device))
        except Exception as e:        # Inductor wraps tool-chain failures in its own classes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(
                f"--compile: torch.compile cannot build kernels on {device} ({first[:300]}); "
                + ("install a C++ compiler (gcc or clang on PATH, or set CXX)"
                   if device.type == "cpu" else "install Triton for this CUDA version")
                + ", or run without --compile") from e
        _PROBED.add(device.type)
    return torch.compile(model)


_PROBED: set[str] = set()
