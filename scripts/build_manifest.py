"""Regenerate robust_zoo/weights_manifest.json for the upstream checkpoints.

The facts below come from the sources listed in docs/upstream-format.md (the paper's README
table as mirrored on the Hub, the Hub's LFS pointers for sha256 values, RobustBench's model
json files). Where a fact is not known the manifest says so (``sha256``/``size``: null, recipe
fields listed in ``unknown``/``unconfirmed``); nothing is filled in by guess. ``robust-zoo pin``
completes sha256/size/revision from the Hub's tree API on a machine with network.

    python scripts/build_manifest.py            # rewrite the shipped manifest
    python scripts/build_manifest.py --check    # exit 1 if the shipped file differs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robust_zoo.models.archs import get_arch  # noqa: E402
from robust_zoo.naming import model_name, upstream_filename  # noqa: E402
from robust_zoo.recipe import Recipe  # noqa: E402

REPO = "madrylab/robust-imagenet-models"
REVISION = "main"  # the Hub commit is not recorded in any source read; sha256 pins the bytes
LICENSE = "mit"
CITATION = """@inproceedings{salman2020adversarially,
  title={Do Adversarially Robust ImageNet Models Transfer Better?},
  author={Hadi Salman and Andrew Ilyas and Logan Engstrom and Ashish Kapoor and Aleksander Madry},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2020}
}"""
README_SRC = "paper README table (microsoft/robust-models-transfer README = HF model card)"

L2_EPS = [0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 3, 5]
L2_TOP1 = {
    "resnet18": [69.79, 69.90, 69.24, 69.15, 68.77, 67.43, 65.49, 62.32, 53.12, 45.59],
    "resnet50": [75.80, 75.68, 75.76, 75.59, 74.78, 74.14, 73.16, 70.43, 62.83, 56.13],
    "wide_resnet50_2": [76.97, 77.25, 77.26, 77.17, 76.74, 76.21, 75.11, 73.41, 66.90, 60.94],
    "wide_resnet50_4": [77.91, 78.02, 77.87, 77.77, 77.64, 77.10, 76.52, 75.51, 69.67, 65.20],
}
L2_OTHER = {  # arch: (top1 at eps 0, top1 at eps 3)
    "densenet161": (77.37, 66.98), "mnasnet1_0": (60.97, 41.83), "mobilenet_v2": (65.26, 50.40),
    "resnext50_32x4d": (77.38, 66.25), "shufflenet_v2_x1_0": (64.25, 43.32),
    "vgg16_bn": (73.66, 57.19),
}
LINF_EPS = [0.5, 1, 2, 4, 8]  # /255
LINF_TOP1 = {
    "resnet18": [66.13, 63.46, 59.63, 52.49, 42.11],
    "resnet50": [73.73, 72.05, 69.10, 63.86, 54.53],
    "wide_resnet50_2": [75.82, 74.65, 72.35, 68.41, 60.82],
}
# Standard-trained Linf baselines present on the Hub (ε=0). wide_resnet50_2_linf_eps0.ckpt is
# not confirmed to exist there and is left out until it is.
LINF_BASELINES = {"resnet18": 70.01, "resnet50": 75.60}
LINF_BASELINE_SRC = "paper submission LaTeX, linf-imagenet-resnets-accuracies.tex"

SHA256 = {
    "resnet18_l2_eps0.ckpt": "d762c58693a2ecaf93160060bb2c32493598540a08852fb3068e95e88f032623",
    "resnet18_l2_eps0.01.ckpt": "629a82377947785e5481eeaf4e22e3ca59a2eedeb4e385730ee2392b2678407d",
    "resnet18_l2_eps0.05.ckpt": "00912b1aa6d60cf7536b52762ed702e0b9cae822187200f42fe4f6a678771bed",
    "resnet18_l2_eps0.1.ckpt": "2477188559680d096a4eccf5bc7610317cab4b46a97094072d38a29a11bfa8fc",
    "resnet18_l2_eps0.25.ckpt": "2bed566c554755a0f6f82ddbe83c707d259801308f966e787bcd287f969c7911",
    "resnet18_l2_eps0.5.ckpt": "69a10462280f266ab855547fde0649ac909f06174ed8df83b8bf2ea0f6fc8150",
    "resnet18_l2_eps1.ckpt": "92e6c37af550167c7c49c77ad31aad027de4e1f47fbef57546a48ef43626ebcf",
    "resnet18_l2_eps3.ckpt": "b4315784a1a10257b05906aee94d6884678f7b77412d10100d7c05daa959eab0",
    "resnet18_l2_eps5.ckpt": "d3ef126afdf9144a22020988dc46f552a0c39347e954c34359a3cb6bf83df186",
    "resnet18_linf_eps0.5.ckpt": "48d5e933d4ec99b390a0b7c628a4303343f9517a46245cbd7d2f2c034cbd93ee",
    "resnet18_linf_eps1.0.ckpt": "b49800111d38197deefb0c236055fbdd9d91a0607e55d6cc0bce15504adc9582",
    "resnet18_linf_eps2.0.ckpt": "bf2611291cc5f792c7f8f17ff6f841f9a0ede32dbe575cbd5bc57233139ae8bd",
    "resnet18_linf_eps4.0.ckpt": "6f8ccef1ae4958c381617081e9e0fb5f50e7cccd4965192d1caa452fd6c5cd1e",
    "resnet50_l2_eps0.ckpt": "72d4a99582db5d7fa86c3fd2a089f0bfd6a10f69d635bca51f6ad72ac6b458f0",
    "resnet50_l2_eps0.01.ckpt": "53d7a7c09d2733b113e255ac9fc578091f44adb8d00eee274c0e71dd1f4dc41e",
    "resnet50_l2_eps0.03.ckpt": "e375df3bf07bf1360c04b0aff5cc19bb215e850b1af713327c87cf0353a5598f",
    "resnet50_l2_eps0.05.ckpt": "e09d8763fcf825542f07389a1904adf15930451b8661a0de209c3bc39828c2ea",
    "resnet50_l2_eps0.1.ckpt": "3298f8cf689e514d096df883ab491a11ee32c3b8d456d674add29d7b50721a43",
    "resnet50_l2_eps0.5.ckpt": "a5fc6fcc54946b73af7bd74289b0003cc9d2744fa0ff55c1a3d9fb2bce8fbd30",
    "resnet50_l2_eps1.ckpt": "09f5273a568830ae23caf9162a06f4831a920293e0da1801aa182289052dcf90",
    "resnet50_l2_eps3.ckpt": "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d",
    "resnet50_l2_eps5.ckpt": "c50db4bbd9a61bc0e0a33290e1f07a79080e16489aa5ada869efc88306f497be",
    "resnet50_linf_eps0.ckpt": "b924222a75d02bbde9ac0cde0cc1f41afcbf2b6755c9b0b73ed7a0449e7bb6b9",
    "resnet50_linf_eps0.5.ckpt": "9612d8096ef5378b4a32746072f72fedcb02c7ff4b747bc7163274f7ec2f0fd8",
    "resnet50_linf_eps2.0.ckpt": "59f28de783a049cb4d91ba1c0a09c314db2cc4bb1e859566e023f842b02772ac",
    "resnet50_linf_eps4.0.ckpt": "9e62216975c111b8081481533b6142dec34be69abe5d90b54d7f860015c263db",
    "resnet50_linf_eps8.0.ckpt": "b907957f8e3ce209816813d8811c682e965a1b0f48455def828d35a4cc2953dc",
    "wide_resnet50_2_l2_eps0.01.ckpt":
        "598f5be2e552bba5c21e3581a68339f5166859d9a959a2c90ce1027ec4abd76c",
    "wide_resnet50_2_l2_eps0.05.ckpt":
        "c8f12d8ead34232f80d09ca681deba7c42ede5762a7aadd16b7894227b80f1d8",
    "densenet_l2_eps0.ckpt": "eeb85d694d0d7375a76b384c8eaf2281c78400dd79e430e086b57a2caef24475",
    "densenet_l2_eps3.ckpt": "ecd7c9f6f41784f790b41345b38486b834a2a54648a32a06c940264821609e0a",
    "mnasnet_l2_eps0.ckpt": "b21ce66737b997803925d59380cc55534a1e4f1930811c851202ef6f259ff735",
    "mnasnet_l2_eps3.ckpt": "67659af5b508e754645ca6f939427d5c5f3545bfb16b0ece5b2421974b9dc4c7",
    "mobilenet_l2_eps0.ckpt": "c0bee2ca75726d83126444b01ab54ae356f9aebb913c4756836ee669de38abcd",
    "resnext50_32x4d_l2_eps0.ckpt":
        "ad5676d3150b32bde27492d1bc2bc3f75c735b257b479034435eb0acee578604",
    "shufflenet_l2_eps3.ckpt": "dada3e413bd58955375c4916aaa80756e562c6fe5a89525280cb041c8d037c49",
    "vgg16_bn_l2_eps0.ckpt": "88d661f295ff8e72df66668e98c46bdb26b2385e47c798415f1027b407586449",
    "vgg16_bn_l2_eps3.ckpt": "651a1edc842f484112671668dabdc883e85df8ba0e150d5b9866a20f9eb0f33a",
}
SIZES = {"resnet50_linf_eps4.0.ckpt": 204_818_947}

# RobustBench ImageNet Linf ε=4/255 leaderboard entries (5000 val images, AutoAttack standard).
ROBUSTBENCH = {
    "resnet18_linf_eps4": ("Salman2020Do_R18", 52.92, 25.32),
    "resnet50_linf_eps4": ("Salman2020Do_R50", 64.02, 34.96),
    "wide_resnet50_2_linf_eps4": ("Salman2020Do_50_2", 68.46, 38.14),
}

PREPROCESSING = {
    "resize": 256, "crop": 224, "interpolation": "bilinear", "input_range": [0, 1],
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "normalize_in_model": True,
}


ISSUE76 = "MadryLab/robustness#76 (maintainer's worked example of one run)"
LIBRARY = "robustness library default (defaults.TRAINING_ARGS / TRAINING_DEFAULTS['imagenet'])"


def recipe_for(arch: str, norm: str, eps: float) -> dict:
    """The recipe as far as the sources document it (upstream-checkpoints §3); ``source`` says
    where each value comes from, and fields no source gives are in ``unknown``."""
    resnet_family = arch in ("resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4")
    r = Recipe(arch=arch, norm=norm, eps=eps, attack_steps=3 if eps > 0 else 0,
               attack_step_size=None)
    source = {
        "epochs": ISSUE76, "batch_size": ISSUE76, "attack_steps": ISSUE76,
        "lr": LIBRARY, "momentum": LIBRARY, "weight_decay": LIBRARY + ", ImageNet: 1e-4",
        "optimizer": LIBRARY, "lr_schedule": LIBRARY + " (StepLR)", "lr_gamma": LIBRARY,
        "augmentation": "robustness data_augmentation.TRAIN_TRANSFORMS_IMAGENET",
        "random_start": LIBRARY + " (PGD_ARGS: off)", "keep_best": LIBRARY + " (use_best=1)",
        "bn_eval_during_attack": "robustness attacker.AttackerModel.forward",
        "lr_step": "no source: a drop every 30 of 90 epochs is recalled, not documented",
        "seed": "no source: robust_zoo's default",
        "attack_step_size": "no source: the library has no default step size; 2·ε/3 is recalled "
                            "from the paper's appendix (not read); a trainer uses 2.5·ε/steps, "
                            "the robustness README's evaluation convention",
        "precision": "no source: fp32 or apex AMP (flag mixed_precision), not recorded",
    }
    r.unconfirmed = ["random_start", "keep_best", "lr_step", "weight_decay", "epochs",
                     "batch_size", "augmentation"]
    r.unknown = ["attack_step_size", "precision"]
    r.precision = None
    if eps == 0:
        r.unconfirmed.append("attack_steps")  # that ε=0 ImageNet models used this same pipeline
        source["attack_steps"] = "ε = 0: standard training (no attack)"
    if not resnet_family:
        # The six extra architectures were trained with an unpublished copy of the code.
        unknown = ["epochs", "batch_size", "lr", "lr_schedule", "lr_step", "lr_gamma",
                   "weight_decay", "attack_step_size", "random_start", "keep_best", "augmentation",
                   "precision"]
        for k in unknown:
            setattr(r, k, None)
            source[k] = ("no source: this architecture was trained with an unpublished copy of "
                         "the code")
        r.unknown = unknown
        r.unconfirmed = [k for k in r.unconfirmed if k not in unknown]
    r.source = source
    return r.to_dict()


def entry(arch: str, norm: str, eps: float, top1: float, top1_src: str) -> dict:
    a = get_arch(arch)
    fname = upstream_filename(a.upstream_name, norm, eps)
    name = model_name(arch, norm, eps)
    metrics = [{"name": "clean_top1", "value": top1, "dataset": "imagenet-1k", "split": "val",
                "n_examples": 50000, "source": top1_src}]
    if name in ROBUSTBENCH:
        rb_id, clean, aa = ROBUSTBENCH[name]
        src = f"RobustBench ImageNet Linf leaderboard, {rb_id}"
        metrics += [
            {"name": "clean_top1", "value": clean, "dataset": "imagenet-1k", "split": "val",
             "n_examples": 5000, "source": src},
            {"name": "autoattack_top1", "value": aa, "norm": "linf", "eps": 4 / 255,
             "attack": {"name": "autoattack", "version": "standard"}, "dataset": "imagenet-1k",
             "split": "val", "n_examples": 5000, "source": src},
        ]
    kind = "standard-trained" if eps == 0 else f"{'L2' if norm == 'l2' else 'Linf'}-robust"
    return {
        "name": name, "arch": arch, "norm": norm, "eps": eps, "num_classes": 1000,
        "description": f"{kind} {arch} on ImageNet-1k (Salman et al. 2020)",
        "num_params": a.num_params,
        "files": [{"format": "robustness-ckpt", "repo_id": REPO, "filename": fname,
                   "revision": REVISION, "sha256": SHA256.get(fname), "size": SIZES.get(fname)}],
        "metrics": metrics, "preprocessing": PREPROCESSING, "license": LICENSE,
        "citation": CITATION, "recipe": recipe_for(arch, norm, eps),
        "upstream": {"repo_id": REPO, "filename": fname,
                     "url": f"https://huggingface.co/{REPO}/resolve/main/{fname}"},
    }


def build() -> dict:
    models = []
    for arch, accs in L2_TOP1.items():
        models += [entry(arch, "l2", float(e), acc, README_SRC) for e, acc in zip(L2_EPS, accs)]
    for arch, (a0, a3) in L2_OTHER.items():
        models += [entry(arch, "l2", 0.0, a0, README_SRC), entry(arch, "l2", 3.0, a3, README_SRC)]
    for arch, accs in LINF_TOP1.items():
        if arch in LINF_BASELINES:
            models.append(entry(arch, "linf", 0.0, LINF_BASELINES[arch], LINF_BASELINE_SRC))
        models += [entry(arch, "linf", e / 255, acc, README_SRC) for e, acc in zip(LINF_EPS, accs)]
    return {"schema_version": 1, "models": models}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the shipped manifest differs")
    args = ap.parse_args()
    text = json.dumps(build(), indent=2) + "\n"
    target = ROOT / "robust_zoo" / "weights_manifest.json"
    if args.check:
        ok = target.exists() and target.read_text() == text
        print("manifest up to date" if ok else f"{target} differs from scripts/build_manifest.py")
        return 0 if ok else 1
    target.write_text(text)
    print(f"wrote {len(build()['models'])} entries to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
