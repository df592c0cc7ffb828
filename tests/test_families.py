"""The architectures of the RobustBench ImageNet models against RobustBench's own builders
(robustbench==1.1.1): every id's network has exactly our architecture's state-dict keys and
shapes once RobustBench's normalization wrapper is taken off, timm export names build the same
keys, and the modules this package writes itself (ConvStem, MeanSparse, RaWRN, MIMIR's Swin as
timm's) compute what RobustBench's do with the same weights."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from robust_zoo.models import archs

from zoo import RB_UNBUILDABLE, robustbench, robustbench_model, robustbench_normalization

# RobustBench ImageNet id -> our architecture, per threat model
LINF = {
    "Wong2020Fast": "resnet50",
    "Engstrom2019Robustness": "resnet50",
    "Salman2020Do_R50": "resnet50",
    "Salman2020Do_R18": "resnet18",
    "Salman2020Do_50_2": "wide_resnet50_2",
    "Standard_R50": "resnet50",
    "Debenedetti2022Light_XCiT-S12": "xcit_s12",
    "Debenedetti2022Light_XCiT-M12": "xcit_m12",
    "Debenedetti2022Light_XCiT-L12": "xcit_l12",
    "Singh2023Revisiting_ViT-S-ConvStem": "vit_small_convstem",
    "Singh2023Revisiting_ViT-B-ConvStem": "vit_base_convstem",
    "Singh2023Revisiting_ConvNeXt-T-ConvStem": "convnext_tiny_convstem",
    "Singh2023Revisiting_ConvNeXt-S-ConvStem": "convnext_small_convstem",
    "Singh2023Revisiting_ConvNeXt-B-ConvStem": "convnext_base_convstem",
    "Singh2023Revisiting_ConvNeXt-L-ConvStem": "convnext_large_convstem",
    "Liu2023Comprehensive_ConvNeXt-B": "convnext_base",
    "Liu2023Comprehensive_ConvNeXt-L": "convnext_large",
    "Liu2023Comprehensive_Swin-B": "swin_base",
    "Liu2023Comprehensive_Swin-L": "swin_large",
    "Peng2023Robust": "ra_wrn101_2",
    "Chen2024Data_WRN_50_2": "wide_resnet50_2",
    "Mo2022When_Swin-B": "swin_base",
    "Mo2022When_ViT-B": "vit_base",
    "Amini2024MeanSparse_ConvNeXt-L": "convnext_large_meansparse",
    "Amini2024MeanSparse_Swin-L": "swin_large_meansparse",
    "RodriguezMunoz2024Characterizing_Swin-B": "swin_base",
    "RodriguezMunoz2024Characterizing_Swin-L": "swin_large",
    "Xu2024MIMIR_Swin-B": "swin_base_mimir",
    "Xu2024MIMIR_Swin-L": "swin_large_mimir",
}
CORRUPTIONS = {
    "Erichson2022NoisyMix": "resnet50",
    "Erichson2022NoisyMix_new": "resnet50",
    "Geirhos2018_SIN": "resnet50",
    "Geirhos2018_SIN_IN": "resnet50",
    "Geirhos2018_SIN_IN_IN": "resnet50",
    "Hendrycks2020Many": "resnet50",
    "Hendrycks2020AugMix": "resnet50",
    "Salman2020Do_50_2_Linf": "wide_resnet50_2",
    "Standard_R50": "resnet50",
    "AlexNet": "alexnet",
    "Tian2022Deeper_DeiT-S": "deit_small",
    "Tian2022Deeper_DeiT-B": "deit_base",
}
CASES = ([("Linf", i, a) for i, a in LINF.items()]
         + [("corruptions", i, a) for i, a in CORRUPTIONS.items()])
MIMIR = ("swin_base_mimir", "swin_large_mimir")
# the RobustBench models without a normalization layer: [0, 1] images go straight in
UNNORMALIZED = {*(f"Singh2023Revisiting_{m}-ConvStem"
                  for m in ("ConvNeXt-T", "ConvNeXt-S", "ConvNeXt-B", "ConvNeXt-L", "ViT-B")),
                "Chen2024Data_WRN_50_2", "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L",
                *(f"Debenedetti2022Light_XCiT-{s}" for s in ("S12", "M12", "L12"))}


def robustbench_state(model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """RobustBench's state dict in our architecture's layout: its normalization layers taken out
    (the ``normalize``/``model.`` wrapper, RaWRN's ``normalization``), the SimMIM Swin of MIMIR
    through timm's Swin checkpoint filter (the fix-up RobustBench applies to its other Swins)."""
    sd = model.state_dict()
    if isinstance(model, nn.Sequential) and hasattr(model, "normalize"):
        sd = {k.removeprefix("model."): v for k, v in sd.items()
              if not k.startswith("normalize.")}
    sd = {k: v for k, v in sd.items() if not k.startswith("normalization.")}
    if arch in MIMIR:
        from timm.models.swin_transformer import checkpoint_filter_fn

        sd = checkpoint_filter_fn(sd, archs.build(arch, device="meta"))
    return sd


def shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


@functools.cache
def our_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of our ``arch`` (built once: several ids share an architecture)."""
    return shapes(archs.build(arch, device="meta").state_dict())


def test_the_table_covers_every_robustbench_imagenet_model():
    robustbench()
    from robustbench.model_zoo.enums import ThreatModel
    from robustbench.model_zoo.imagenet import imagenet_models

    ids = {(tm.value, i) for tm, models in imagenet_models.items() for i in models}
    assert {(t, i) for t, i, _ in CASES} | {("Linf", i) for i in RB_UNBUILDABLE} == ids
    assert set(imagenet_models) == {ThreatModel.Linf, ThreatModel.corruptions}


@pytest.mark.parametrize("threat, rb_id, arch", CASES, ids=[f"{t}-{i}" for t, i, _ in CASES])
def test_our_architecture_has_robustbench_keys_and_shapes(threat, rb_id, arch):
    """... and RobustBench normalizes the inputs of every model with ImageNet's mean/std except
    those of UNNORMALIZED, which get [0, 1] images as they are."""
    model = robustbench_model(rb_id, threat)
    theirs = shapes(robustbench_state(model, arch))
    ours = our_shapes(arch)
    assert sorted(set(ours) ^ set(theirs))[:5] == []
    assert {k for k in ours if ours[k] != theirs[k]} == set()
    identity = ((0.0,) * 3, (1.0,) * 3)
    assert robustbench_normalization(model) == (
        identity if rb_id in UNNORMALIZED else (archs.IMAGENET_MEAN, archs.IMAGENET_STD))


@pytest.mark.parametrize("arch", [a for a in archs.list_archs(include_extra=True)
                                  if not archs.get_arch(a).zoo and archs.get_arch(a).timm])
def test_timm_export_names_build_our_keys(arch):
    import timm

    spec = archs.get_arch(arch).timm
    with torch.device("meta"):
        ref = timm.create_model(spec["architecture"], pretrained=False,
                                **spec.get("model_args", {}))
    assert shapes(ref.state_dict()) == our_shapes(arch)


# ------------------------------------------------- this package's modules compute RobustBench's

def _same_weights(ours: nn.Module, theirs: nn.Module, arch: str, seed: int = 0) -> None:
    """Random non-trivial values in RobustBench's model (layer scales, MeanSparse statistics and
    thresholds, BN statistics), then copied into ours through ``robustbench_state``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(theirs.named_parameters()) + list(theirs.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf in ("running_mean", "bias") and t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf == "threshold":
                t.fill_(0.5)
    ours.load_state_dict(robustbench_state(theirs, arch))


def _assert_same_logits(ours: nn.Module, theirs: nn.Module, x: torch.Tensor,
                        normalized: bool) -> None:
    mean = torch.tensor(archs.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(archs.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = ours.eval()((x - mean) / std if normalized else x)
        want = theirs.eval()(x)
    assert got.shape == want.shape and want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _x(size: int) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_convstem_convnext_computes_robustbench_logits_at_a_tiny_input():
    theirs = robustbench_model("Singh2023Revisiting_ConvNeXt-T-ConvStem", device="cpu")
    ours = archs.build("convnext_tiny_convstem")
    _same_weights(ours, theirs, "convnext_tiny_convstem")
    _assert_same_logits(ours, theirs, _x(32), normalized=False)    # RobustBench: no normalize


def test_meansparse_convnext_computes_robustbench_logits():
    robustbench()
    import timm
    from robustbench.model_zoo.architectures.sparsified_model import (MeanSparse_imagenet,
                                                                      add_custom_layer_imagenet)
    from robustbench.model_zoo.architectures.utils_architectures import normalize_model

    # RobustBench hard-codes convnext_large's stage widths; the rest can be small
    small = {"depths": (1, 1, 1, 1), "num_classes": 10}
    theirs = normalize_model(timm.create_model("convnext_large", pretrained=False, **small),
                             archs.IMAGENET_MEAN, archs.IMAGENET_STD)
    add_custom_layer_imagenet(theirs, MeanSparse_imagenet)
    ours = archs.get_arch("convnext_large_meansparse").build(**small)
    _same_weights(ours, theirs, "convnext_large_meansparse")
    _assert_same_logits(ours, theirs, _x(32), normalized=True)


SMALL_SWIN = {"embed_dim": 32, "depths": (2, 2), "num_heads": (2, 4), "img_size": 112}


def test_meansparse_swin_computes_robustbench_logits():
    robustbench()
    from robustbench.model_zoo.architectures.Meansparse_swin_L import (
        swin_large_patch4_window7_224_with_MeanSparse as theirs_fn)

    theirs = theirs_fn(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                       **SMALL_SWIN)
    ours = archs.get_arch("swin_large_meansparse").build(**SMALL_SWIN)
    _same_weights(ours, theirs, "swin_large_meansparse")
    _assert_same_logits(ours, theirs, _x(112), normalized=True)


@pytest.mark.parametrize("arch, window", [("swin_base_mimir", 7), ("swin_large_mimir", 14)])
def test_mimir_simmim_swin_is_timms_swin_after_its_checkpoint_filter(arch, window):
    robustbench()
    from robustbench.model_zoo.architectures.MIMIR_swin_transformer import SwinTransformer

    from robust_zoo.models.archs import _ln6

    theirs = SwinTransformer(window_size=window, drop_path_rate=0.0, norm_layer=_ln6,
                             **SMALL_SWIN)
    ours = archs.get_arch(arch).build(**SMALL_SWIN)
    _same_weights(ours, theirs, arch)
    _assert_same_logits(ours, theirs, _x(112), normalized=False)   # MIMIR: no normalize


def test_rawrn_computes_robustbench_logits():
    robustbench()
    from robustbench.model_zoo.architectures.robustarch_wide_resnet import (
        NormalizedConfigurableModel, Stem)

    from robust_zoo.models.rawrn import RaNet

    small = ((1, 2, 1, 1), (64, 128, 128, 256), (8, 16, 16, 32))
    theirs = NormalizedConfigurableModel(
        mean=archs.IMAGENET_MEAN, std=archs.IMAGENET_STD, stage_widths=list(small[1]), kernel=3,
        strides=[2] * 4, dilation=1, norm_layer=[nn.Identity, nn.BatchNorm2d, nn.BatchNorm2d],
        activation_layer=[nn.SiLU] * 3, group_widths=list(small[2]),
        bottleneck_multipliers=[0.25] * 4, downsample_norm=nn.BatchNorm2d,
        depths=list(small[0]), dense_ratio=None, stem_type=Stem, stem_width=96, stem_kernel=7,
        stem_downsample_factor=2, stem_patch_size=None, se_ratio=0.25, se_activation=nn.ReLU)
    ours = RaNet(*small)
    _same_weights(ours, theirs, "ra_wrn101_2")
    _assert_same_logits(ours, theirs, _x(64), normalized=True)


def test_raresnets_have_the_parameter_counts_peng_et_al_publish():
    """RaResNet-50/101 have no RobustBench builder: their settings are robust-principles'
    MODEL.mk; its README gives 26M, 46M and 104M parameters (the registry walk checks that the
    networks have the registry's counts)."""
    assert [round(archs.get_arch(a).num_params / 1e6) for a in
            ("ra_resnet50", "ra_resnet101", "ra_wrn101_2")] == [26, 46, 104]
