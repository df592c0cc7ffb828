"""The architecture registry: one table for load, train and transfer."""
from __future__ import annotations

import sys

import pytest
import torch

from robust_zoo import models

from robust_zoo.models import archs
from robust_zoo.models import RobustModel
from robust_zoo.naming import model_name, parse_name


def test_list_archs_keeps_the_ten_upstream_architectures_and_filters_by_family():
    assert len(archs.list_archs()) == 10 and "resnet50" in archs.list_archs()
    assert all(archs.get_arch(a).upstream_name for a in archs.list_archs())
    every = set(archs.list_archs(include_extra=True))
    assert {"convnext_tiny_convstem", "swin_large_mimir", "ra_wrn101_2", "mini_resnet"} <= every
    assert archs.list_archs(include_extra=True, family="xcit") == ["xcit_l12", "xcit_m12",
                                                                    "xcit_s12"]
    assert archs.list_archs(family="swin") == []          # none has upstream robustness files
    assert {"resnet", "convnext", "swin", "vit", "xcit", "rawrn", "alexnet"} <= set(
        archs.families())


def test_new_architectures_refuse_weights_and_name_the_missing_timm(monkeypatch):
    with pytest.raises(ValueError, match="robust_zoo.load"):
        archs.get_arch("convnext_base").builder(weights="IMAGENET1K_V1")
    monkeypatch.setitem(sys.modules, "timm", None)          # what an install without timm sees
    for name in ("swin_base", "convnext_tiny_convstem"):
        with pytest.raises(ImportError, match=r"robust-zoo\[timm\]"):
            archs.build(name, device="meta")
    assert archs.build("ra_resnet50", device="meta").fc.in_features == 2160    # no timm needed


def test_aliases_and_unknown_names():
    assert archs.get_arch("densenet").name == "densenet161"
    assert archs.get_arch("shufflenet").name == "shufflenet_v2_x1_0"
    with pytest.raises(ValueError, match="Did you mean 'resnet50'"):
        archs.get_arch("resnet5O")


def test_replace_head_through_wrapper_and_features_only():
    m = RobustModel(archs.build("resnet18"), "resnet18")
    models.replace_head(m, 0)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    m.reset_classifier(3)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 3) and m.num_classes == 3


def test_names_roundtrip():
    for arch, norm, eps in [("resnet50", "l2", 0.25), ("resnet50", "linf", 4 / 255),
                            ("wide_resnet50_2", "linf", 0.5 / 255), ("vgg16_bn", "l2", 0.0)]:
        n = model_name(arch, norm, eps)
        a, nm, e = parse_name(n)
        assert (a, nm) == (arch, norm) and abs(e - eps) < 1e-9 and n.isidentifier()
    assert model_name("resnet50", "linf", 4 / 255) == "resnet50_linf_eps4"
    assert model_name("resnet50", "l2", 0.25) == "resnet50_l2_eps0_25"
    with pytest.raises(ValueError, match="form"):
        parse_name("resnet50_l3_eps1")
