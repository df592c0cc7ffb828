"""torch.hub entry points: one per zoo model name and alias, generated from the manifest.

    model = torch.hub.load("<org>/robust_zoo:main", "resnet50_l2_eps3")
    model = torch.hub.load("<org>/robust_zoo:main", "Singh2023Revisiting_ConvNeXt_T_ConvStem")
    model = torch.hub.load("path/to/robust_zoo", "resnet50_l2_eps3", source="local")

An entry point is a Python identifier, so a RobustBench id's '-' (and any other character
that is not a letter, digit or '_') is written '_': ``Singh2023Revisiting_ConvNeXt-T-ConvStem``
is ``Singh2023Revisiting_ConvNeXt_T_ConvStem``. RobustBench's ``Salman2020Do_*`` ids are entry
points of the zoo entries they alias. Every entry takes ``robust_zoo.load``'s keyword arguments
(``pretrained``, ``normalize``, ``num_classes``, ``device``, ``dtype``, ...). Helpers are
imported under ``_`` names so that ``torch.hub.list`` shows only models.
"""
dependencies = ["torch", "torchvision", "huggingface_hub", "safetensors"]

from robust_zoo import load as _load  # noqa: E402
from robust_zoo.hub.manifest import load_manifest as _load_manifest  # noqa: E402


def _entry_point(entry, hub_name):
    def model(pretrained=True, **kwargs):
        return _load(entry.name, pretrained=pretrained, **kwargs)

    top1 = entry.clean_top1
    aka = f" ({hub_name} is an alias of {entry.name})" if hub_name not in (
        entry.name, entry.hub_name) else ""
    model.__name__ = model.__qualname__ = hub_name
    model.__doc__ = (
        f"{entry.description or entry.name}{aka}\n\n"
        f"arch={entry.arch}, norm={entry.norm}, eps={entry.eps_display}, threat model "
        f"{'/'.join(entry.threat_models)}"
        + (f", ImageNet top-1 {top1:.2f}%" if top1 is not None else "") + ".\n"
        "Takes images in [0, 1] (normalizes inside); kwargs go to robust_zoo.load "
        "(pretrained, normalize, num_classes, device, dtype, progress, verify)."
    )
    return model


_manifest = _load_manifest(_load_manifest.__globals__["PACKAGE_MANIFEST"])
for _hub, _name in _manifest.hub_names().items():
    globals()[_hub] = _entry_point(_manifest.get(_name), _hub)
del _hub, _name, _manifest
