"""Regenerate robust_zoo/weights_manifest.json: the Salman et al. checkpoints, the RobustBench
ImageNet model zoo and Peng et al.'s models.

The facts below come from the sources listed in docs/upstream-format.md (the paper's README
table as mirrored on the Hub, the Hub's LFS pointers for sha256 values), RobustBench's
model_info json files and model_zoo/imagenet.py (RB_* tables) and the poloclub/robust-principles
README (PENG). Where a fact is not known the manifest says so (``sha256``/``size``: null, recipe
fields listed in ``unknown``/``unconfirmed``, licence "unknown"); nothing is filled in by guess.
``robust-zoo pin`` completes sha256/size/revision from the Hub's tree API on a machine with
network; an unpinned URL file's sha256 is recorded on its first download.

    python scripts/build_manifest.py            # rewrite the shipped manifest
    python scripts/build_manifest.py --check    # exit 1 if the shipped file differs
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robust_zoo.models.archs import IMAGENET_MEAN, IMAGENET_STD, get_arch  # noqa: E402
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


# ----------------------------------------------------------------------------- RobustBench

# The RobustBench ImageNet model zoo as the snapshot RobustBench/robustbench@78fcc9e
# (2025-03-31) describes it: accuracies, paper, architecture and notes from
# model_info/imagenet/{Linf,corruptions}/<id>.json; weights and preprocessing from
# robustbench/model_zoo/imagenet.py (identical in the robustbench==1.1.1 wheel) and, for the
# models RobustBench builds through timm, the default_cfg of its registered timm model.
RB_COMMIT = "78fcc9e"
RB_INFO = ("RobustBench model_info/imagenet/{tm}/{id}.json "
           f"(RobustBench/robustbench@{RB_COMMIT})")
RB_INFO_URL = ("https://github.com/RobustBench/robustbench/blob/master/model_info/imagenet/"
               "{tm}/{id}.json")
RB_LICENSE_SRC = (f"RobustBench LICENSE (RobustBench/robustbench@{RB_COMMIT}): the weights of "
                  "its Model Zoo are MIT-licensed except the CIFAR models it lists")
TV_LICENSE_SRC = ("not stated: torchvision's weights (download.pytorch.org) come with no licence "
                  "of their own (torchvision's code is BSD-3-Clause)")
DRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
RELEASE = "https://github.com/RobustBench/robustbench/releases/download/"

# paper key: (title, authors, venue, link), as model_info gives them
PAPERS = {
    "Wong2020Fast": ("Fast is better than free: Revisiting adversarial training",
                     "Eric Wong, Leslie Rice, J. Zico Kolter", "ICLR 2020",
                     "https://arxiv.org/abs/2001.03994"),
    "Engstrom2019Robustness": ("Robustness library", "Logan Engstrom, Andrew Ilyas, Hadi "
                               "Salman, Shibani Santurkar, Dimitris Tsipras", "GitHub, Oct 2019",
                               "https://github.com/MadryLab/robustness"),
    "Standard": ("Standardly trained model", "Torchvision", "N/A",
                 "https://github.com/RobustBench/robustbench/"),
    "Debenedetti2022Light": ("A Light Recipe to Train Robust Vision Transformers",
                             "Edoardo Debenedetti, Vikash Sehwag, Prateek Mittal",
                             "arXiv, Sep 2022", "https://arxiv.org/abs/2209.07399"),
    "Singh2023Revisiting": ("Revisiting Adversarial Training for ImageNet: Architectures, "
                            "Training and Generalization across Threat Models",
                            "Naman D Singh, Francesco Croce, Matthias Hein", "NeurIPS 2023",
                            "https://arxiv.org/abs/2303.01870"),
    "Liu2023Comprehensive": ("A Comprehensive Study on Robustness of Image Classification "
                             "Models: Benchmarking and Rethinking", "Chang Liu, Yinpeng Dong, "
                             "Wenzhao Xiang, Xiao Yang, Hang Su, Jun Zhu, Yuefeng Chen, Yuan He, "
                             "Hui Xue, Shibao Zheng", "arXiv, Feb 2023",
                             "https://arxiv.org/abs/2302.14301"),
    "Peng2023Robust": ("Robust Principles: Architectural Design Principles for Adversarially "
                       "Robust CNNs", "ShengYun Peng, Weilin Xu, Cory Cornelius, Matthew Hull, "
                       "Kevin Li, Rahul Duggal, Mansi Phute, Jason Martin, Duen Horng Chau",
                       "BMVC 2023", "https://arxiv.org/abs/2308.16258"),
    "Chen2024Data": ("Data filtering for efficient adversarial training",
                     "Erh-Chung Chen, Che-Rung Lee", "Pattern Recognition 2024",
                     "https://doi.org/10.1016/j.patcog.2024.110394"),
    "Mo2022When": ("When Adversarial Training Meets Vision Transformers: Recipes from Training "
                   "to Architecture", "Yichuan Mo, Dongxian Wu, Yifei Wang, Yiwen Guo, Yisen "
                   "Wang", "NeurIPS 2022", "https://arxiv.org/abs/2210.07540"),
    "Amini2024MeanSparse": ("MeanSparse: Post-Training Robustness Enhancement Through "
                            "Mean-Centered Feature Sparsification", "Sajjad Amini, Mohammadreza "
                            "Teymoorianfard, Shiqing Ma, Amir Houmansadr", "arXiv, Jun 2024",
                            "https://arxiv.org/abs/2406.05927"),
    "RodriguezMunoz2024Characterizing": ("Characterizing Model Robustness via Natural Input "
                                         "Gradients", "Adrián Rodríguez-Muñoz, Tongzhou Wang, "
                                         "Antonio Torralba", "arXiv, Sep 2024",
                                         "https://arxiv.org/abs/2409.20139"),
    "Xu2024MIMIR": ("MIMIR: Masked Image Modeling for Mutual Information-based Adversarial "
                    "Robustness", "Xiaoyun Xu, Shujian Yu, Zhuoran Liu, Stjepan Picek",
                    "arXiv, Dec 2023", "https://arxiv.org/abs/2312.04960"),
    "AlexNet": ("ImageNet Classification with Deep Convolutional Neural Networks",
                "Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton", "NeurIPS 2012",
                "https://papers.nips.cc/paper/2012/hash/"
                "c399862d3b9d6b76c8436e924a68c45b-Abstract.html"),
    "Erichson2022NoisyMix": ("NoisyMix: Boosting Robustness by Combining Data Augmentations, "
                             "Stability Training, and Noise Injections", "N. Benjamin Erichson, "
                             "Soon Hoe Lim, Francisco Utrera, Winnie Xu, Ziang Cao, Michael W. "
                             "Mahoney", "arXiv, Feb 2022", "https://arxiv.org/abs/2202.01263"),
    "Geirhos2018": ("ImageNet-trained CNNs are biased towards texture; increasing shape bias "
                    "improves accuracy and robustness", "Robert Geirhos, Patricia Rubisch, "
                    "Claudio Michaelis, Matthias Bethge, Felix A. Wichmann, Wieland Brendel",
                    "ICLR 2019", "https://arxiv.org/abs/1811.12231"),
    "Hendrycks2020AugMix": ("AugMix: A Simple Data Processing Method to Improve Robustness and "
                            "Uncertainty", "Dan Hendrycks, Norman Mu, Ekin D. Cubuk, Barret "
                            "Zoph, Justin Gilmer, Balaji Lakshminarayanan", "ICLR 2020",
                            "https://arxiv.org/abs/1912.02781"),
    "Hendrycks2020Many": ("The Many Faces of Robustness: A Critical Analysis of "
                          "Out-of-Distribution Generalization", "Dan Hendrycks, Steven Basart, "
                          "Norman Mu, Saurav Kadavath, Frank Wang, Evan Dorundo, Rahul Desai, "
                          "Tyler Zhu, Samyak Parajuli, Mike Guo, Dawn Song, Jacob Steinhardt, "
                          "Justin Gilmer", "ICCV 2021", "https://arxiv.org/abs/2006.16241"),
    "Tian2022Deeper": ("Deeper Insights into the Robustness of ViTs towards Common Corruptions",
                       "Rui Tian, Zuxuan Wu, Qi Dai, Han Hu, Yu-Gang Jiang", "arXiv, Apr 2022",
                       "https://arxiv.org/abs/2204.12143"),
}


def _pre(name: str, resize, crop, interpolation: str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    return {"name": name, "resize": resize, "crop": crop, "interpolation": interpolation,
            "input_range": [0, 1], "mean": list(mean), "std": list(std),
            "normalize_in_model": True}


# RobustBench's PREPROCESSINGS (robustbench/data.py) and, for models it builds through timm,
# what get_preprocessing derives from the timm default_cfg: Resize(floor(224 / crop_pct)) with
# its interpolation, then CenterCrop(224)
RB_PRE = {
    "Res256Crop224": _pre("Res256Crop224", 256, 224, "bilinear"),
    "BicubicRes256Crop224": _pre("BicubicRes256Crop224", 256, 224, "bicubic"),
    "Crop288": _pre("Crop288", None, 288, "bilinear"),
    "Res224": _pre("Res224", [224, 224], None, "bilinear"),
    "timm-xcit": _pre("timm default_cfg (crop_pct 1.0, bicubic)", 224, 224, "bicubic"),
    "timm-deit": _pre("timm default_cfg (crop_pct 0.9, bicubic)", 248, 224, "bicubic"),
    "timm-alexnet": _pre("timm default_cfg (crop_pct 1.0, bilinear)", 224, 224, "bilinear"),
}
# Models RobustBench runs on [0, 1] inputs with no normalization at all (its builder wraps no
# normalize_model around them): their normalization is the identity
NO_NORMALIZATION = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def drive(gid: str, name: str) -> dict:
    return {"format": "torch-state-dict", "url": DRIVE.format(gid), "filename": f"{name}.pt",
            "sha256": None, "size": None}


def url(address: str) -> dict:
    return {"format": "torch-state-dict", "url": address, "sha256": None, "size": None}


# id: (arch, clean %, AutoAttack %, files, preprocessing); Linf, ε = 4/255, 5000 val images.
RB_LINF = {
    "Wong2020Fast": ("resnet50", 55.62, 26.24, ["1deM2ZNS5tf3S_-eRURJi-IlvUL8WJQ_w"], "Crop288"),
    "Engstrom2019Robustness": ("resnet50", 62.56, 29.22, ["1T2Fvi1eCJTeAOEzrH_4TAIwO8HTOYVyn"],
                               "Res256Crop224"),
    "Debenedetti2022Light_XCiT-S12": ("xcit_s12", 72.34, 41.78, [
        RELEASE + "v1.1/debenedetti2022light-xcit-s-imagenet-linf.pth.tar"], "timm-xcit"),
    "Debenedetti2022Light_XCiT-M12": ("xcit_m12", 74.04, 45.24, [
        RELEASE + "v1.1/debenedetti2022light-xcit-m-imagenet-linf.pth.tar"], "timm-xcit"),
    "Debenedetti2022Light_XCiT-L12": ("xcit_l12", 73.76, 47.60, [
        RELEASE + "v1.1/debenedetti2022light-xcit-l-imagenet-linf.pth.tar"], "timm-xcit"),
    "Singh2023Revisiting_ViT-S-ConvStem": ("vit_small_convstem", 72.56, 48.08, [
        "1-1sUYXnj6bDXacIKI3KKqn4rlkmL-ZI2"], "BicubicRes256Crop224"),
    "Singh2023Revisiting_ViT-B-ConvStem": ("vit_base_convstem", 76.30, 54.66, [
        "1-JBbfi_eH3tKMXObvPPHprrZae0RiQGT"], "BicubicRes256Crop224"),
    "Singh2023Revisiting_ConvNeXt-T-ConvStem": ("convnext_tiny_convstem", 72.72, 49.46, [
        "1-FjtOF6LJ3-bf4VezsmWwncCxYSx-USP"], "BicubicRes256Crop224"),
    "Singh2023Revisiting_ConvNeXt-S-ConvStem": ("convnext_small_convstem", 74.10, 52.42, [
        "1-ZrMYajCCnrtV4oT0wa3qJJoQy1nUSnL"], "BicubicRes256Crop224"),
    "Singh2023Revisiting_ConvNeXt-B-ConvStem": ("convnext_base_convstem", 75.90, 56.14, [
        "1-lE-waaVvfL7lgBrydmZIM9UJimmHnVe"], "BicubicRes256Crop224"),
    "Singh2023Revisiting_ConvNeXt-L-ConvStem": ("convnext_large_convstem", 77.00, 57.70, [
        "10-YOVdM2EQjHemSi9x2H44qKRSOXVQmh"], "BicubicRes256Crop224"),
    "Liu2023Comprehensive_ConvNeXt-B": ("convnext_base", 76.02, 55.82, [
        "10-nSm-qUftvfKXHeOAakBQl8rxm-jCbk"], "BicubicRes256Crop224"),
    "Liu2023Comprehensive_ConvNeXt-L": ("convnext_large", 78.02, 58.48, [
        "1dIPLNfdQtAnqZrKPyuy3_zDI-FVgJ2FH"], "BicubicRes256Crop224"),
    "Liu2023Comprehensive_Swin-B": ("swin_base", 76.16, 56.16, [
        "1-4mtxQCkThJUVdS3wvQ6NnmMZuySqR3c"], "BicubicRes256Crop224"),
    "Liu2023Comprehensive_Swin-L": ("swin_large", 78.92, 59.56, [
        "1-57sQfcrsDsslfDR18nRD7FnpQmsSBk7"], "BicubicRes256Crop224"),
    "Peng2023Robust": ("ra_wrn101_2", 73.44, 48.94, [
        ("poloclub/robust-principles", "ra_wrn101_2_imagenet.pt"),
        "1-GpZ9Du83mBTN61Ytx9z_ZQSyIc1kYop"], "Res256Crop224"),
    "Chen2024Data_WRN_50_2": ("wide_resnet50_2", 68.76, 40.60, [
        "1-PBlZVILAKFQ7mF8srKjdkTKJZAr61Uf"], "Res256Crop224"),
    "Mo2022When_Swin-B": ("swin_base", 74.66, 38.30, ["1-SXi4Z2X6Zo_j8EO4slJcBMXNej8fKUd"],
                          "Res224"),
    "Mo2022When_ViT-B": ("vit_base", 68.38, 34.40, ["1-dUFdvDBflqMsMLjZv3wlPJTm-Jm7net"],
                         "Res224"),
    "Amini2024MeanSparse_ConvNeXt-L": ("convnext_large_meansparse", 77.92, 59.64, [
        "1-LUMPqauSx68bPmZFIuklFoJ6NmBhu7A"], "BicubicRes256Crop224"),
    "Amini2024MeanSparse_Swin-L": ("swin_large_meansparse", 78.80, 62.12, [
        "1-KmvrDXd_kcJS-TcNmtHP5NInQ5I4lgS"], "BicubicRes256Crop224"),
    "RodriguezMunoz2024Characterizing_Swin-B": ("swin_base", 77.76, 51.56, [
        "1-BSUjoFXx3PP-TfeE5fjbofO2lLyUf56"], "BicubicRes256Crop224"),
    "RodriguezMunoz2024Characterizing_Swin-L": ("swin_large", 79.36, 53.82, [
        "1-Dc9WhPU2wv4OMskLo1U57n5O8VbpNXv"], "BicubicRes256Crop224"),
    "Xu2024MIMIR_Swin-B": ("swin_base_mimir", 76.62, 55.90, ["1CkuhAOvqB8Ma1WYsJJ4qDiyVld28pqpx"],
                           "BicubicRes256Crop224"),
    "Xu2024MIMIR_Swin-L": ("swin_large_mimir", 78.62, 59.68, [
        "1-1VIAy1Qn4KX6whAIeKZqWL4wkSEdba4"], "BicubicRes256Crop224"),
}
# model_info's "external": robust accuracy under a stronger, adaptive evaluation
RB_EXTERNAL = {"Amini2024MeanSparse_ConvNeXt-L": 58.22, "Amini2024MeanSparse_Swin-L": 58.92}
# the models RobustBench's own builders give without a normalization layer (no normalize_model
# wrapper: the ConvStem ConvNeXts and ViT-B, Chen2024Data, MIMIR's Swins; the XCiTs it builds
# through timm): [0, 1] images go straight into the network, so their normalization is the identity
RB_UNNORMALIZED = {*(f"Singh2023Revisiting_{m}-ConvStem"
                     for m in ("ConvNeXt-T", "ConvNeXt-S", "ConvNeXt-B", "ConvNeXt-L", "ViT-B")),
                   "Chen2024Data_WRN_50_2", "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L",
                   *(f"Debenedetti2022Light_XCiT-{s}" for s in ("S12", "M12", "L12"))}

# id: (arch, clean %, ImageNet-C accuracy %, ImageNet-3DCC accuracy %, files, preprocessing)
RB_CORRUPTIONS = {
    "AlexNet": ("alexnet", 56.24, 21.12, 28.47, [
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"], "timm-alexnet"),
    "Erichson2022NoisyMix": ("resnet50", 76.98, 52.47, 55.79, [
        "1wFsiB5h4Fgv6HqOkI_1jR1SZOB_eNK9r"], "Res256Crop224"),
    "Erichson2022NoisyMix_new": ("resnet50", 76.9, 53.28, 56.1, [
        "1Na79fzPZ0Azg01h6kGn1Xu5NoWOElSuG"], "Res256Crop224"),
    "Geirhos2018_SIN": ("resnet50", 60.08, 39.92, 40.46, ["1hLgeY_rQIaOT4R-t_KyOqPNkczfaedgs"],
                        "Res256Crop224"),
    "Geirhos2018_SIN_IN": ("resnet50", 74.98, 45.76, 50.03, [
        "139pWopDnNERObZeLsXUysRcLg6N1iZHK"], "Res256Crop224"),
    "Geirhos2018_SIN_IN_IN": ("resnet50", 77.56, 42.0, 49.03, [
        "1xOvyuxpOZ8I5CZOi0EGYG_R6tu3ZaJdO"], "Res256Crop224"),
    "Hendrycks2020AugMix": ("resnet50", 77.34, 49.33, 53.48, [
        "1xRMj1GlO93tLoCMm0e5wEvZwqhIjxhoJ"], "Res256Crop224"),
    "Hendrycks2020Many": ("resnet50", 76.86, 52.9, 56.51, ["1kylueoLtYtxkpVzoOA1B6tqdbRl2xt9X"],
                          "Res256Crop224"),
    "Tian2022Deeper_DeiT-S": ("deit_small", 79.76, 62.91, 62.64, [
        RELEASE + "v1.1.1-test/tian2022deeper-deit-s.pth"], "timm-deit"),
    "Tian2022Deeper_DeiT-B": ("deit_base", 81.38, 67.55, 65.9, [
        RELEASE + "v1.1.1-test/tian2022deeper-deit-b.pth"], "timm-deit"),
}
# model_info's footnotes and architecture names, for the descriptions
RB_NOTES = {
    "Wong2020Fast": "Focuses on fast adversarial training.",
    "Amini2024MeanSparse_ConvNeXt-L": "It adds the MeanSparse operator to the adversarially "
    "trained models Liu2023Comprehensive_ConvNeXt-L. 58.22% robust accuracy is due to APGD "
    "(both versions) with BPDA.",
    "Amini2024MeanSparse_Swin-L": "It adds the MeanSparse operator to the adversarially trained "
    "models Liu2023Comprehensive_Swin-L. 58.92% robust accuracy is due to APGD (both versions) "
    "with BPDA.",
    "Erichson2022NoisyMix": "Basic model.",
    "Erichson2022NoisyMix_new": "Better tuned model.",
    "Geirhos2018_SIN": "Model A: trained on Stylized ImageNet.",
    "Geirhos2018_SIN_IN": "Model B: trained on Stylized ImageNet and standard ImageNet.",
    "Geirhos2018_SIN_IN_IN": "Model C: trained on Stylized ImageNet and standard ImageNet, then "
    "fine-tuned on standard ImageNet.",
}
# RobustBench ids served by an existing entry: id -> (entry name, threat model)
RB_ALIASES = {
    "Salman2020Do_R50": ("resnet50_linf_eps4", "Linf"),
    "Salman2020Do_R18": ("resnet18_linf_eps4", "Linf"),
    "Salman2020Do_50_2": ("wide_resnet50_2_linf_eps4", "Linf"),
    "Salman2020Do_50_2_Linf": ("wide_resnet50_2_linf_eps4", "corruptions"),
}
# corruption results of the Salman entry, and Standard_R50 (torchvision's resnet50 weights),
# which RobustBench lists under both threat models
RB_SALMAN_CORRUPTIONS = {"Salman2020Do_50_2_Linf": (68.64, 36.09, 41.86)}
STANDARD_R50 = {"Linf": (76.52, 0.0), "corruptions": (76.72, 39.48, 47.12)}
STANDARD_R50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"

# RobustBench ImageNet models that are not entries, and why
LEFT_OUT = {
    "Bai2024MixedNUTS": "an ensemble (a ConvNeXtV2-L pre-trained on ImageNet-21k and "
    "Liu2023Comprehensive_Swin-L) mixed nonlinearly: two forward passes and two checkpoints, "
    "which one zoo entry (one network, one file) does not describe",
}

# Peng et al. 2023 on the Hub (poloclub/robust-principles README, "Trained Model Weights")
PENG_REPO = "poloclub/robust-principles"
PENG_SRC = "poloclub/robust-principles README, Trained Model Weights table (commit b54c562)"
PENG_LICENSE_SRC = "poloclub/robust-principles LICENSE (MIT)"
# name: (arch, file, sha256, clean, AA, PGD-100 at 2, 4, 8 /255)
PENG = {
    "Peng2023Robust_RaResNet-50": (
        "ra_resnet50", "ra_resnet50_imagenet.pt",
        "9bee26eb37b4e42ebee2b0d1b6e274a5dc22f7ce18ad77aec15aed2cce944ded",
        70.17, 44.14, (60.06, 47.77, 21.77)),
    "Peng2023Robust_RaResNet-101": ("ra_resnet101", "ra_resnet101_imagenet.pt", None,
                                    71.88, 46.26, (61.89, 49.30, 23.01)),
    "Peng2023Robust": ("ra_wrn101_2", "ra_wrn101_2_imagenet.pt", None,
                       73.44, 48.94, (63.49, 51.03, 25.31)),
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
        metrics += rb_linf_metrics(*ROBUSTBENCH[name])
    kind = "standard-trained" if eps == 0 else f"{'L2' if norm == 'l2' else 'Linf'}-robust"
    aliases = [rb for rb, (n, _) in RB_ALIASES.items() if n == name]
    threats = sorted({tm for rb, (n, tm) in RB_ALIASES.items() if n == name} | {
        "L2" if norm == "l2" else "Linf"}, key=["Linf", "L2", "corruptions"].index)
    for rb in aliases:
        if rb in RB_SALMAN_CORRUPTIONS:
            metrics += rb_corruption_metrics(rb, *RB_SALMAN_CORRUPTIONS[rb])
    extra = {"threat_model": threats} if len(threats) > 1 else {}
    return {
        "name": name, "arch": arch, "norm": norm, "eps": eps, "num_classes": 1000,
        "description": f"{kind} {arch} on ImageNet-1k (Salman et al. 2020)",
        "num_params": a.num_params, **extra, "family": a.family, "paper": "Salman2020Do",
        **({"aliases": aliases} if aliases else {}),
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
    models += robustbench_entries() + peng_entries()
    names = {m["name"] for m in models}
    assert not names & set(LEFT_OUT), names & set(LEFT_OUT)
    return {"schema_version": 1, "models": models}


def paper_of(name: str) -> str:
    """The paper key a RobustBench id starts with (its longest match in PAPERS)."""
    return max((k for k in PAPERS if name.startswith(k)), key=len)


def citation(paper: str) -> str | None:
    """A BibTeX-like record of ``paper`` from model_info's title, authors, venue and link."""
    title, authors, venue, link = PAPERS[paper]
    year = re.search(r"\d{4}", venue)
    if year is None:
        return None
    names = " and ".join(a.strip() for a in authors.split(","))
    return (f"@misc{{{paper.lower()},\n  title={{{title}}},\n  author={{{names}}},\n"
            f"  year={{{year.group(0)}}},\n  note={{{venue}}},\n  url={{{link}}}\n}}")


def files_of(name: str, sources: list) -> list[dict]:
    """Drive ids, URLs and (Hub repo, file) pairs as manifest file specs, in order."""
    out = []
    for s in sources:
        if isinstance(s, tuple):
            out.append({"format": "torch-state-dict", "repo_id": s[0], "filename": s[1],
                        "revision": "main", "sha256": None, "size": None})
        else:
            out.append(url(s) if s.startswith("https://") else drive(s, name))
    return out


def rb_metric(rb_id: str, threat: str, name: str, value: float, **fields) -> dict:
    """One accuracy of RobustBench's model_info for ``rb_id`` on leaderboard ``threat``."""
    dataset = {"corruptions_top1": "imagenet-c", "corruptions_3d_top1": "imagenet-3dcc"}
    m = {"name": name, "value": value, **fields,
         "dataset": dataset.get(name, "imagenet-1k"), "split": "val"}
    if threat == "Linf":
        m["n_examples"] = 5000
    m.update(threat_model=threat, robustbench_id=rb_id,
             source=RB_INFO.format(tm=threat, id=rb_id))
    return m


def rb_linf_metrics(rb_id: str, clean: float, aa: float) -> list[dict]:
    aa_fields = {"norm": "linf", "eps": 4 / 255,
                 "attack": {"name": "autoattack", "version": "standard"}}
    if rb_id in RB_EXTERNAL:
        aa_fields["external"] = RB_EXTERNAL[rb_id]
    return [rb_metric(rb_id, "Linf", "clean_top1", clean),
            rb_metric(rb_id, "Linf", "autoattack_top1", aa, **aa_fields)]


def rb_corruption_metrics(rb_id: str, clean: float, c2d: float, c3d: float) -> list[dict]:
    return [rb_metric(rb_id, "corruptions", "clean_top1", clean),
            rb_metric(rb_id, "corruptions", "corruptions_top1", c2d),
            rb_metric(rb_id, "corruptions", "corruptions_3d_top1", c3d)]


def peng_metrics(name: str) -> list[dict]:
    """The README's accuracies: clean, AutoAttack and PGD-100 at ε = 2, 4, 8 /255."""
    clean, aa, pgd = PENG[name][3:]
    m = [{"name": "clean_top1", "value": clean, "dataset": "imagenet-1k", "split": "val",
          "source": PENG_SRC},
         {"name": "autoattack_top1", "value": aa, "norm": "linf", "eps": 4 / 255,
          "attack": {"name": "autoattack"}, "dataset": "imagenet-1k", "split": "val",
          "source": PENG_SRC}]
    m += [{"name": "pgd_top1", "value": v, "norm": "linf", "eps": e / 255,
           "attack": {"name": "pgd", "steps": 100}, "dataset": "imagenet-1k", "split": "val",
           "source": PENG_SRC} for e, v in zip((2, 4, 8), pgd)]
    return m


def new_entry(name: str, arch: str, norm: str, threat, metrics: list[dict], files: list[dict],
              pre: dict, description: str, license_source: str, info_url: str | None) -> dict:
    """An entry for a model of RobustBench or of Peng et al.: no recipe (none published in
    the sources read), its paper, licence and where its numbers come from."""
    a = get_arch(arch)
    paper = paper_of(name)
    license = "unknown" if license_source.startswith("not stated") else "mit"
    links = {"paper": PAPERS[paper][3]}
    if info_url:
        links["robustbench_model_info"] = info_url
    return {
        "name": name, "arch": arch, "norm": norm, "eps": 4 / 255 if norm == "linf" else 0.0,
        "num_classes": 1000, "description": description, "num_params": a.num_params,
        "threat_model": threat, "family": a.family, "paper": paper, "files": files,
        "metrics": metrics, "preprocessing": pre, "license": license,
        "license_source": license_source, "citation": citation(paper), "recipe": {},
        "links": links,
    }


def _describe(name: str, arch: str, kind: str) -> str:
    title, authors, venue, _ = PAPERS[paper_of(name)]
    first = authors.split(",")[0].split()[-1]
    note = f" {RB_NOTES[name]}" if name in RB_NOTES else ""
    return f"{kind} {arch} on ImageNet-1k ({first} et al., {venue}): {name}.{note}"


def robustbench_entries() -> list[dict]:
    out = []
    for rb_id, (arch, clean, aa, sources, pre) in RB_LINF.items():
        p = dict(RB_PRE[pre], **(NO_NORMALIZATION if rb_id in RB_UNNORMALIZED else {}))
        metrics = rb_linf_metrics(rb_id, clean, aa)
        if rb_id in PENG:
            metrics += peng_metrics(rb_id)[2:]
        out.append(new_entry(
            rb_id, arch, "linf", "Linf", metrics, files_of(rb_id, sources), p,
            _describe(rb_id, arch, "Linf-robust (ε = 4/255)"), RB_LICENSE_SRC,
            RB_INFO_URL.format(tm="Linf", id=rb_id)))
    for rb_id, (arch, clean, c2d, c3d, sources, pre) in RB_CORRUPTIONS.items():
        torchvision = sources[0].startswith("https://download.pytorch.org/")
        out.append(new_entry(
            rb_id, arch, "none", "corruptions", rb_corruption_metrics(rb_id, clean, c2d, c3d),
            files_of(rb_id, sources), RB_PRE[pre],
            _describe(rb_id, arch, "corruption-robust" if not torchvision else "standard"),
            TV_LICENSE_SRC if torchvision else RB_LICENSE_SRC,
            RB_INFO_URL.format(tm="corruptions", id=rb_id)))
    std = STANDARD_R50
    metrics = (rb_linf_metrics("Standard_R50", *std["Linf"])
               + rb_corruption_metrics("Standard_R50", *std["corruptions"]))
    e = new_entry("Standard_R50", "resnet50", "linf", ["Linf", "corruptions"], metrics,
                  [url(STANDARD_R50_URL)], RB_PRE["Res256Crop224"],
                  "torchvision's standard-trained resnet50 (IMAGENET1K_V1 weights), RobustBench's "
                  "Standard_R50 on its Linf and corruptions leaderboards", TV_LICENSE_SRC,
                  RB_INFO_URL.format(tm="Linf", id="Standard_R50"))
    e["eps"] = 0.0
    return out + [e]


def peng_entries() -> list[dict]:
    out = []
    for name, (arch, fname, sha, *_) in PENG.items():
        if name in RB_LINF:
            continue
        f = files_of(name, [(PENG_REPO, fname)])
        f[0]["sha256"] = sha
        out.append(new_entry(name, arch, "linf", "Linf", peng_metrics(name), f,
                             RB_PRE["Res256Crop224"],
                             _describe(name, arch, "Linf-robust (ε = 4/255)"), PENG_LICENSE_SRC,
                             None))
    return out


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
