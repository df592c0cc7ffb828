"""The architecture registry: one table for load, train and transfer."""
from __future__ import annotations

import pytest
import torch

from robust_zoo import models

from robust_zoo.models import archs
from robust_zoo.models import RobustModel
from robust_zoo.naming import model_name, parse_name


@pytest.mark.parametrize("name", archs.list_archs(include_extra=True))
def test_registry_facts_match_the_network(name):
    a = archs.get_arch(name)
    net = archs.build(name, device="meta")
    assert sum(p.numel() for p in net.parameters()) == a.num_params
    head = models.get_head(net, name)
    assert isinstance(head, torch.nn.Linear) and head.in_features == a.num_features
    assert head.out_features == 1000
    models.replace_head(net, 5, hidden=(16,), arch=name)
    new = models.get_head(net, name)
    assert isinstance(new, torch.nn.Sequential) and new[-1].out_features == 5


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
