"""torch.hub entry points: one per zoo model, generated from the manifest.

    model = torch.hub.load("<org>/robust_zoo:main", "resnet50_l2_eps3")
    model = torch.hub.load("path/to/robust_zoo", "resnet50_l2_eps3", source="local")

Every entry takes ``robust_zoo.load``'s keyword arguments (``pretrained``, ``normalize``,
``num_classes``, ``device``, ``dtype``, ...). Helpers are imported under ``_`` names so that
``torch.hub.list`` shows only models.
"""
dependencies = ["torch", "torchvision", "huggingface_hub", "safetensors"]

from robust_zoo import load as _load  # noqa: E402
from robust_zoo.hub.manifest import load_manifest as _load_manifest  # noqa: E402


def _entry_point(entry):
    def model(pretrained=True, **kwargs):
        return _load(entry.name, pretrained=pretrained, **kwargs)

    top1 = entry.clean_top1
    model.__name__ = model.__qualname__ = entry.name
    model.__doc__ = (
        f"{entry.description or entry.name}\n\n"
        f"arch={entry.arch}, norm={entry.norm}, eps={entry.eps_display}"
        + (f", ImageNet top-1 {top1:.2f}%" if top1 is not None else "") + ".\n"
        "Takes images in [0, 1] (normalizes inside); kwargs go to robust_zoo.load "
        "(pretrained, normalize, num_classes, device, dtype, progress, verify)."
    )
    return model


for _entry in _load_manifest(_load_manifest.__globals__["PACKAGE_MANIFEST"]):
    globals()[_entry.name] = _entry_point(_entry)
del _entry
