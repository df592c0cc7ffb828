"""Zoo names: ``{arch}_{norm}_eps{ε}``, with '.' written '_' and Linf ε in /255 units.

``resnet50_l2_eps0_25`` is L2 ε=0.25; ``resnet50_linf_eps4`` is Linf ε=4/255. Every name is a
valid Python identifier, so it doubles as a hubconf entry point.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from .errors import UsageError

NORMS = ("l2", "linf")
_NAME_RE = re.compile(r"^(?P<arch>[a-z0-9_]+?)_(?P<norm>l2|linf)_eps(?P<eps>\d+(?:_\d+)?)$")


def parse_number(text: "str | float | int", *, what: str = "value", minimum: float | None = None,
                 allow_zero: bool = True) -> float:
    """``"0.25"``, ``"3"``, ``"1e-4"`` or a fraction ``"4/255"`` → a finite float.

    The one parser behind every ε, step size and learning rate a command line or a manifest
    gives: fractions are exact (``Fraction``), ``nan``/``inf`` and a zero denominator are refused,
    and ``minimum`` bounds the value (``allow_zero=False`` makes the bound strict at 0). Raises
    ``UsageError`` (a ``ValueError``) that names ``what`` and shows valid examples.
    """
    if isinstance(text, bool):
        raise UsageError(f"{what} must be a number, got {text!r}")
    s = str(text).strip()
    try:
        if isinstance(text, (int, float)):
            v = float(text)
        elif "/" in s:
            num, den = s.split("/", 1)
            v = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            v = float(s)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{what}: {text!r} is not a number or fraction (examples: 3, 0.25, "
                         "1e-4, 4/255)") from None
    if not math.isfinite(v):
        raise UsageError(f"{what} must be a finite number, got {text!r}")
    if minimum is not None and (v < minimum or (not allow_zero and v <= minimum)):
        bound = f"> {minimum:g}" if not allow_zero else f">= {minimum:g}"
        raise UsageError(f"{what} must be {bound}, got {text!r}")
    return v


def parse_int(text: "str | int", *, what: str = "value", minimum: int | None = None) -> int:
    """A whole number written as one (``"3"``), at least ``minimum``; ``UsageError`` otherwise."""
    try:
        v = int(str(text).strip())
    except ValueError:
        parse_number(text, what=what)            # "x": not a number at all, said so
        raise UsageError(f"{what} must be a whole number, got {text!r}") from None
    if minimum is not None and v < minimum:
        raise UsageError(f"{what} must be >= {minimum}, got {text!r}")
    return v


def arg_type(parse, **kwargs):
    """An argparse ``type=`` from a parser of this module (``parse_number``, ``parse_eps``,
    ``parse_int``, with ``kwargs`` bound): its ``UsageError`` becomes argparse's usage message
    and exit 2."""
    import argparse

    def convert(text: str):
        try:
            return parse(text, **kwargs)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def int_arg(what: str, minimum: int):
    """The argparse ``type=`` of an integer flag: ``parse_int`` with the flag's name and least
    value."""
    return arg_type(parse_int, what=what, minimum=minimum)


def parse_device(text: str, what: str = "--device") -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``), as given; ``UsageError``
    for a string torch cannot read or CUDA on a machine without it."""
    import torch

    s = str(text).strip()
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        raise UsageError(f"{what}: {text!r} is not a torch device; use cpu, cuda or cuda:N"
                         ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{what} {s}: CUDA is not available here; pass --device cpu")
    return s


def parse_eps(text: "str | float | int", what: str = "eps") -> float:
    """ε in [0, 1] pixel units: a finite number >= 0; fractions allowed (``4/255``)."""
    return parse_number(text, what=what, minimum=0.0)


def check_norm(norm: str) -> str:
    n = str(norm).lower().replace("-", "").replace("∞", "inf")
    n = {"inf": "linf", "l_inf": "linf", "linf": "linf", "l2": "l2", "2": "l2"}.get(n, n)
    if n not in NORMS:
        raise UsageError(f"Unknown norm {norm!r}: use 'l2' or 'linf'")
    return n


def eps_units(norm: str, eps: float) -> float:
    """ε in the units names use: pixels for L2, multiples of 1/255 for Linf."""
    return eps * 255.0 if check_norm(norm) == "linf" else eps


def eps_label(norm: str, eps: float) -> str:
    """'3', '0_25' (L2) or '4', '0_5' (Linf, /255)."""
    v = round(eps_units(norm, eps), 6)
    if v < 0 or not math.isfinite(v):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s.replace(".", "_")


def eps_display(norm: str, eps: float) -> str:
    """Human form: '3' for L2, '4/255' for Linf."""
    s = eps_label(norm, eps).replace("_", ".")
    return f"{s}/255" if check_norm(norm) == "linf" and eps > 0 else s


def model_name(arch: str, norm: str, eps: float) -> str:
    return f"{arch}_{check_norm(norm)}_eps{eps_label(norm, eps)}"


def parse_name(name: str) -> tuple[str, str, float]:
    """``resnet50_linf_eps4`` → ("resnet50", "linf", 4/255)."""
    m = _NAME_RE.match(name)
    if not m:
        raise ValueError(f"{name!r} is not of the form {{arch}}_{{l2|linf}}_eps{{ε}}, "
                         "e.g. resnet50_l2_eps3 or resnet50_linf_eps4")
    v = float(m["eps"].replace("_", "."))
    return m["arch"], m["norm"], (v / 255.0 if m["norm"] == "linf" else v)


def eps_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-9)


def upstream_filename(upstream_arch: str, norm: str, eps: float) -> str:
    """The file name in madrylab/robust-imagenet-models: L2 as in the paper's table
    (``resnet50_l2_eps0.25.ckpt``), Linf numerator with one decimal (``resnet50_linf_eps4.0.ckpt``),
    standard-trained baselines ``*_eps0.ckpt``."""
    if eps == 0:
        return f"{upstream_arch}_{norm}_eps0.ckpt"
    if norm == "linf":
        return f"{upstream_arch}_linf_eps{eps * 255:.1f}.ckpt"
    return f"{upstream_arch}_l2_eps{eps_label(norm, eps).replace('_', '.')}.ckpt"
