"""robust_zoo.attacks.pgd vs torchattacks PGD / PGDL2 (and the robustness library's attacker
when importable) on one model, and PGD-k cost in passes.

    python benchmarks/bench_attacks.py [--arch resnet18] [--batch 16] [--size 112] [--steps 10]
                                       [--threads 1]

Both attacks run with the same ε, steps, step size, no random start, model in eval mode.
Without downloadable weights the model is randomly initialised, so the labels are the model's
own clean predictions: clean accuracy is 100% by construction and "robust accuracy" is the
share of predictions an attack fails to flip, which is what separates two attacks. The default
ε (L2 0.1, Linf 0.2/255 at 112 px) put that share near 40% for this seed.

Every measurement is repeated --reps times in interleaved rounds (each round runs every case
once), and the median is reported, so load that drifts during the run hits all cases alike.
Needs torchattacks (pip install --no-deps torchattacks==3.5.1).

Optional third contender: MadryLab ``robustness`` 1.2.1 (``AttackerModel(...)(x, y,
make_adv=True, ...)`` with use_best ↔ keep_best), run when it imports, e.g. installed as in
scripts/check_robustness_layout.py and run with PYTHONPATH=/tmp/robcheck. Its call includes the
AttackerModel's own forward on the adversarial batch (it returns logits with the image).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from robust_zoo.models.archs import build
from robust_zoo.attacks import default_step_size, pgd
from robust_zoo.models import RobustModel


def import_robustness():
    """(AttackerModel, DummyModel, ImageNet) from the robustness library; raises if unavailable.

    robustness 1.2.1 imports torchvision.models.utils (gone since torchvision 0.13) and calls
    .cuda() unconditionally; the same shims as scripts/check_robustness_layout.py, which is not
    importable itself (it imports robustness at module level).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from robustness_compat import prepare_robustness_import

    prepare_robustness_import()
    from robustness.attacker import AttackerModel
    from robustness.datasets import ImageNet
    from robustness.model_utils import DummyModel
    return AttackerModel, DummyModel, ImageNet


def run_rounds(cases: dict[str, Callable[[], object]], reps: int
               ) -> tuple[dict[str, float], dict[str, object]]:
    times: dict[str, list[float]] = {k: [] for k in cases}
    outs: dict[str, object] = {}
    for _ in range(reps):
        for name, fn in cases.items():
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--l2-eps", type=float, default=0.1)
    p.add_argument("--linf-eps", type=float, default=0.2 / 255)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own); 1 keeps "
                   "timings stable on a shared machine")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import torchattacks

    torch.manual_seed(0)
    model = RobustModel(build(args.arch, num_classes=1000), args.arch).eval()
    # smooth random images: i.i.d. pixel noise sends a random network to a single class
    x = F.interpolate(torch.rand(args.batch, 3, 10, 10), size=args.size, mode="bilinear")
    with torch.no_grad():
        y = model(x).argmax(1)

    def acc(xa):
        with torch.no_grad():
            return 100.0 * (model(xa).argmax(1) == y).float().mean().item()

    print(f"# {args.arch}, batch {args.batch}, {args.size} px, {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"load avg at start {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")

    def fwd():
        with torch.no_grad():
            return model(x)

    def fwd_input_grad():
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(xr), y), xr)[0]

    def fwd_full_bwd():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    cases: dict[str, Callable[[], object]] = {
        "forward F (no grad)": fwd, "forward + input-only grad": fwd_input_grad,
        "forward + full backward": fwd_full_bwd}
    try:
        AttackerModel, DummyModel, ImageNet = import_robustness()
        import robustness
        # DummyModel: AttackerModel passes with_latent/fake_relu/no_relu, which a torchvision
        # net does not take (make_and_restore_model(add_custom_forward=True) wraps it the same).
        lib = AttackerModel(DummyModel(model.model), ImageNet("/tmp")).eval()
        lib_note = f"robustness {robustness.__version__}"
    except Exception as e:  # noqa: BLE001 - any import failure just drops the contender
        lib, lib_note = None, f"robustness not importable ({type(e).__name__}: {e})"
    print(lib_note)
    settings = {}
    for norm, eps in [("l2", args.l2_eps), ("linf", args.linf_eps)]:
        alpha = default_step_size(eps, args.steps)
        ref_cls = torchattacks.PGDL2 if norm == "l2" else torchattacks.PGD
        ref = ref_cls(model, eps=eps, alpha=alpha, steps=args.steps, random_start=False)
        settings[norm] = (eps, ref_cls.__name__)
        cases[f"{norm}|torchattacks {ref_cls.__name__}"] = lambda ref=ref: ref(x, y)
        for kb in (False, True):
            cases[f"{norm}|robust_zoo pgd keep_best={kb}"] = (
                lambda norm=norm, eps=eps, alpha=alpha, kb=kb: pgd(
                    model, x, y, norm=norm, eps=eps, steps=args.steps, step_size=alpha,
                    keep_best=kb))
            if lib is not None:
                cases[f"{norm}|robustness use_best={kb}"] = (
                    lambda norm=norm, eps=eps, alpha=alpha, kb=kb: lib(
                        x, y, make_adv=True, constraint="2" if norm == "l2" else "inf",
                        eps=eps, step_size=alpha, iterations=args.steps, random_start=False,
                        use_best=kb, do_tqdm=False, with_image=True)[1])
    ks = sorted({3, args.steps})
    for k in ks:
        if k == args.steps:
            continue   # the PGD-steps rows above serve
        for kb in (False, True):
            cases[f"cost|PGD-{k} keep_best={kb}"] = lambda k=k, kb=kb: pgd(
                model, x, y, norm="l2", eps=args.l2_eps, steps=k, keep_best=kb)

    fwd()   # warm-up (allocator, oneDNN primitives)
    t, outs = run_rounds(cases, args.reps)
    model.zero_grad(set_to_none=True)
    t_f, t_fb = t["forward F (no grad)"], t["forward + full backward"]

    print("| pass | seconds | in F |\n| --- | --- | --- |")
    for name in ("forward F (no grad)", "forward + input-only grad", "forward + full backward"):
        print(f"| {name} | {t[name]:.3f} | {t[name] / t_f:.2f} |")

    print("\n| norm | ε | attack | seconds | vs torchattacks | vs robust_zoo same kb | "
          "robust acc % |\n| --- | --- | --- | --- | --- | --- | --- |")
    for norm, (eps, ref_name) in settings.items():
        shown = f"{eps * 255:g}/255" if norm == "linf" else f"{eps:g}"
        t_ref = t[f"{norm}|torchattacks {ref_name}"]
        names = [f"torchattacks {ref_name}", "robust_zoo pgd keep_best=False",
                 "robust_zoo pgd keep_best=True"]
        if lib is not None:
            names += ["robustness use_best=False", "robustness use_best=True"]
        for name in names:
            key = f"{norm}|{name}"
            kb = name.rsplit("=", 1)[1] if "=" in name else None
            vs_ours = (f"{t[key] / t[f'{norm}|robust_zoo pgd keep_best={kb}']:.2f}×"
                       if kb else "")
            print(f"| {norm} | {shown} | {name} | {t[key]:.2f} | {t[key] / t_ref:.2f}× | "
                  f"{vs_ours} | {acc(outs[key]):.1f} |")


    if lib is not None:
        gaps = []
        for norm in settings:
            for kb in (False, True):
                ours, theirs = (outs[f"{norm}|robust_zoo pgd keep_best={kb}"],
                                outs[f"{norm}|robustness use_best={kb}"])
                gaps.append(f"{norm} kb={kb} {(ours - theirs).abs().max().item():.3g}")
        print("\nmax |x_adv(robust_zoo) - x_adv(robustness)| at the same keep_best/use_best: "
              + ", ".join(gaps))
    print("\n| attack (L2) | seconds | in F | §3.2 model: (2k[+1])F | in (fwd + full bwd) |"
          "\n| --- | --- | --- | --- | --- |")
    for k in ks:
        for kb in (False, True):
            key = (f"l2|robust_zoo pgd keep_best={kb}" if k == args.steps
                   else f"cost|PGD-{k} keep_best={kb}")
            print(f"| PGD-{k} keep_best={kb} | {t[key]:.2f} | {t[key] / t_f:.1f} | "
                  f"{2 * k + kb} | {t[key] / t_fb:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
