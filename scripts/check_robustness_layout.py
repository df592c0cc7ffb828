"""Check ``robust_zoo.formats.upstream`` against MadryLab's real ``robustness`` library
(maintainer script).

Not run in CI: it needs ``robustness`` and its dependencies, kept out of the project venv::

    .venv/bin/pip install --no-deps --target /tmp/robcheck robustness==1.2.1.post2 cox \
        dill pandas gitpython gitdb smmap psutil tensorboardX protobuf pytz tzdata
    PYTHONPATH=/tmp/robcheck .venv/bin/python scripts/check_robustness_layout.py

For each case it builds the real ``AttackerModel`` with ``make_and_restore_model``, takes one
SGD step with the library's own optimizer/schedule (so the file carries momentum buffers and
moved BN statistics, as a real training checkpoint does), saves ``DataParallel(model).state_dict()``
exactly as ``robustness/train.py`` does, and checks:

1. key names, order and shapes (and values) equal ``convert.to_robustness`` of the same weights;
2. ``torch.load(weights_only=True)`` reads the real file;
3. ``convert.from_robustness`` of the real file returns the real network's tensors;
4. ``make_and_restore_model(resume_path=<our file>)`` loads it strictly and gives the same logits
   as ``RobustModel``.

Exit status 0 only if every check passes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.hub
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_compat import prepare_robustness_import  # noqa: E402

prepare_robustness_import()

import dill  # noqa: E402
import robustness  # noqa: E402
from cox.utils import Parameters  # noqa: E402
from robustness.datasets import ImageNet  # noqa: E402
from robustness.model_utils import make_and_restore_model  # noqa: E402
from robustness.train import make_optimizer_and_schedule  # noqa: E402

from robust_zoo.formats import upstream as convert  # noqa: E402
from robust_zoo.models.archs import get_arch  # noqa: E402
from robust_zoo.models import RobustModel  # noqa: E402

# (our arch name, how the paper code built it): a robustness.imagenet_models name, or a
# torchvision net passed as an nn.Module with add_custom_forward=True (DummyModel).
CASES = [
    ("resnet50", "library"),
    ("mobilenet_v2", "torchvision+DummyModel"),
    ("resnet18", "library"),
    ("wide_resnet50_2", "library"),
]

# the paper's ImageNet recipe (robustness defaults for imagenet)
TRAIN_ARGS = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, step_lr=30, step_lr_gamma=0.1,
                  custom_lr_multiplier=None, lr_interpolation="step", mixed_precision=False)


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, case: str, what: str, ok: bool, detail: str = "") -> None:
        print(f"  [{'PASS' if ok else 'FAIL'}] {what}" + (f": {detail}" if detail else ""))
        if not ok:
            self.failures.append(f"{case}: {what}" + (f" ({detail})" if detail else ""))


def _real_model(arch: str, kind: str, ds, resume_path: str | None = None):
    if kind == "library":
        model, ckpt = make_and_restore_model(arch=arch, dataset=ds, resume_path=resume_path)
    else:
        net = torchvision.models.__dict__[arch](num_classes=1000)
        model, ckpt = make_and_restore_model(arch=net, dataset=ds, add_custom_forward=True,
                                             resume_path=resume_path)
    return model, ckpt


def _bare_net(model, kind: str) -> torch.nn.Module:
    """The classifier inside the AttackerModel, without the DummyModel level."""
    return model.model.model if kind != "library" else model.model


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    # Fresh-init BN buffers are 0/1 everywhere; random ones make eval-mode logits depend on them.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            elif name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 10_000, (), generator=g)))
    return net


def _key_diff(a: list[str], b: list[str], n: int = 5) -> str:
    only_a = [k for k in a if k not in set(b)]
    only_b = [k for k in b if k not in set(a)]
    parts = [f"real only: {only_a[:n]} ({len(only_a)})", f"ours only: {only_b[:n]} ({len(only_b)})"]
    if not only_a and not only_b:
        first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        parts = [f"same names, order differs from index {first}: "
                 f"real {a[first]!r} vs ours {b[first]!r}"]
    return "; ".join(parts)


def run_case(arch: str, kind: str, ds, tmp: str, rep: Report) -> None:
    print(f"\n== {arch} ({kind}; our upstream_wrapped={get_arch(arch).upstream_wrapped})")
    torch.manual_seed(0)
    model, _ = _real_model(arch, kind, ds)

    # One training step with the library's optimizer and schedule, as train.py would have done.
    args = Parameters(dict(TRAIN_ARGS))
    opt, schedule = make_optimizer_and_schedule(args, model, None, None)
    model.train()
    x = torch.rand(2, 3, 64, 64)
    out, _ = model(x)
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    opt.step()
    schedule.step()

    dp = torch.nn.DataParallel(model)
    print(f"  DataParallel on CPU: device_ids={dp.device_ids} (a real wrapper, not emulated)")
    real_sd = dp.state_dict()
    real_path = os.path.join(tmp, f"{arch}_real.ckpt")
    sd_info = {"model": real_sd, "optimizer": opt.state_dict(),
               "schedule": schedule and schedule.state_dict(), "epoch": 1, "amp": None}
    torch.save(sd_info, real_path, pickle_module=dill)

    # The same weights as a plain torchvision network; strict loading checks the library's
    # own classifier keys are torchvision's.
    tv = torchvision.models.__dict__[arch](num_classes=1000)
    try:
        tv.load_state_dict(_bare_net(model, kind).state_dict(), strict=True)
        rep.check(arch, "robustness classifier keys == torchvision keys", True)
    except RuntimeError as e:
        rep.check(arch, "robustness classifier keys == torchvision keys", False, str(e)[:500])
        return

    # 1. layout
    ours = convert.to_robustness(tv.state_dict(), arch)["model"]
    rk, ok_ = list(real_sd), list(ours)
    rep.check(arch, f"1a key names+order ({len(rk)} keys)", rk == ok_,
              "" if rk == ok_ else _key_diff(rk, ok_))
    if rk == ok_:
        bad = [k for k in rk
               if real_sd[k].shape != ours[k].shape or real_sd[k].dtype != ours[k].dtype]
        rep.check(arch, "1b shapes+dtypes", not bad,
                  "" if not bad else "; ".join(f"{k}: real {tuple(real_sd[k].shape)} "
                                               f"{real_sd[k].dtype}"
                                               f" vs ours {tuple(ours[k].shape)} {ours[k].dtype}"
                                               for k in bad[:5]))
        neq = [k for k in rk if not torch.equal(real_sd[k], ours[k])]
        rep.check(arch, "1c values", not neq, "" if not neq else f"differ: {neq[:5]}")
    print(f"     first keys: {rk[:3]} ... {rk[-1]}")

    # 2. weights-only load of the file the library writes
    try:
        loaded = torch.load(real_path, weights_only=True, map_location="cpu")
        rep.check(arch, "2 torch.load(weights_only=True) of the real dill-saved file", True,
                  f"top-level {sorted(loaded)}")
    except Exception as e:  # noqa: BLE001
        rep.check(arch, "2 torch.load(weights_only=True) of the real dill-saved file", False,
                  f"{type(e).__name__}: {str(e)[:300]}")
        loaded = torch.load(real_path, weights_only=False, map_location="cpu", pickle_module=dill)

    # 3. our reader on the real file
    try:
        conv = convert.from_robustness(loaded, arch, source=real_path)
        want = tv.state_dict()
        same = list(conv.state_dict) == list(want) and all(
            torch.equal(conv.state_dict[k], want[k]) for k in want)
        rep.check(arch, "3 from_robustness(real file) == real weights", same,
                  f"wrapped={conv.wrapped}, epoch={conv.epoch}, "
                  f"attacker_copy={conv.had_attacker_copy}")
    except convert.CheckpointFormatError as e:
        rep.check(arch, "3 from_robustness(real file) == real weights", False, str(e)[:500])

    # 4. the library loads our file strictly; same logits as RobustModel
    _randomize(tv, seed=1)
    ours_path = os.path.join(tmp, f"{arch}_ours.ckpt")
    torch.save(convert.to_robustness(tv.state_dict(), arch), ours_path)
    try:
        lib_model, ck = _real_model(arch, kind, ds, resume_path=ours_path)
        rep.check(arch, "4a make_and_restore_model(resume_path=ours) strict load", True,
                  f"epoch={ck['epoch']}")
    except Exception as e:  # noqa: BLE001
        rep.check(arch, "4a make_and_restore_model(resume_path=ours) strict load", False,
                  f"{type(e).__name__}: {str(e)[:500]}")
        return
    rm = RobustModel(tv, arch).eval()
    lib_model.eval()
    xb = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        lib_out, _ = lib_model(xb)
        our_out = rm(xb)
    diff = (lib_out - our_out).abs().max().item()
    rep.check(arch, "4b logits equal (eval mode, [0,1] batch of 4x3x224x224)",
              torch.allclose(lib_out, our_out, rtol=1e-5, atol=1e-5),
              f"max|diff|={diff:.3g}, bitwise={torch.equal(lib_out, our_out)}, "
              f"|logits|max={our_out.abs().max().item():.3g}")

    # informational: the library's --resume_optimizer path needs an optimizer state we don't write
    try:
        make_optimizer_and_schedule(Parameters(dict(TRAIN_ARGS)), lib_model, ck, None)
        print("  [info] make_optimizer_and_schedule(checkpoint=ours) works")
    except Exception as e:  # noqa: BLE001
        print(f"  [info] make_optimizer_and_schedule(checkpoint=ours) fails "
              f"({type(e).__name__}: {str(e).splitlines()[0][:120]}): our files suit eval/"
              "fine-tuning, not robustness' --resume_optimizer")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="*", help=f"subset of {[a for a, _ in CASES]}")
    a = p.parse_args()
    unknown = set(a.archs) - {n for n, _ in CASES}
    if unknown:
        p.error(f"unknown arch(s) {sorted(unknown)}; choose from {[n for n, _ in CASES]}")
    print(f"robustness {robustness.__version__}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, dill {dill.__version__}")
    ds = ImageNet("/tmp")
    rep = Report()
    with tempfile.TemporaryDirectory() as tmp:
        for arch, kind in CASES:
            if not a.archs or arch in a.archs:
                run_case(arch, kind, ds, tmp, rep)
    print("\n" + ("ALL CHECKS PASSED" if not rep.failures else
                  "FAILURES:\n  " + "\n  ".join(rep.failures)))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
