"""One transfer run: (zoo model, data set, mode) → trained head or network, metrics,
result.json."""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UsageError
from ..models.archs import get_arch
from ..models.robust_model import get_head
from ..fileio import atomic_write_text
from ..models.robust_model import RobustModel
from .core import freeze, replace_head
from ..data import load_splits, make_transforms
from ..engine.distributed import Dist, barrier, cleanup, setup
from ..engine import checkpoint as engine_checkpoint
from .finetune import accuracy_metrics, predict_dataset, train_network
from .feature_cache import (cached_features, default_cache_dir, head_predict, model_fingerprint,
                            train_head)
from .hparams import PAPER_PROTOCOLS, TransferConfig, default_protocol, paper_lr, paper_result

__all__ = ["load_model", "check_model_name", "run_transfer", "run_dir", "prepare_model",
           "check_input_size"]

DEFAULT_CACHE = "default"


def check_model_name(name: str, *, manifest: Any = None, pretrained: bool = True) -> str:
    """The architecture of zoo model ``name`` (``robust_zoo.api.arch_of``)."""
    from ..hub.factory import arch_of

    return arch_of(name, manifest=manifest, pretrained=pretrained)


def load_model(name: str, *, manifest: Any = None, pretrained: bool = True,
               arch: str | None = None, progress: bool = True) -> RobustModel:
    """A zoo model as ``RobustModel`` (normalizing inside). With ``pretrained=False`` an
    architecture name (``resnet18``) also works and gives random weights (seed 0)."""
    from ..hub.factory import get_entry, load
    from ..hub.manifest import UnknownModelError

    have = check_model_name(name, manifest=manifest, pretrained=pretrained)
    if arch is not None and get_arch(arch).name != have:
        raise ValueError(f"Model {name!r} is a {have}, not a {get_arch(arch).name} "
                         f"(--arch); drop --arch or pick a {get_arch(arch).name} model")
    try:
        get_entry(name, manifest=manifest)
    except UnknownModelError:  # an architecture name, pretrained=False (checked above)
        torch.manual_seed(0)
        return RobustModel(get_arch(name).build(), have, name=name)
    return load(name, manifest=manifest, pretrained=pretrained, progress=progress)


def prepare_model(net: RobustModel, spec, num_classes: int, cfg: TransferConfig) -> int:
    """Fresh head (seeded), freezing and normalization for ``cfg``; returns the head size.

    Default: ImageNet normalization inside the model (what the weights were trained with) and
    the frozen part pinned to eval mode. ``cfg.faithful``: the paper code's choices: the data
    set's own normalization (none, or CIFAR mean/std), BN statistics free to drift, DTD's head
    of 57.
    """
    if cfg.faithful:
        num_classes = spec.faithful_num_classes or num_classes
        mean, std = spec.faithful_norm
        net.normalize.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
        net.normalize.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    torch.manual_seed(cfg.seed)
    replace_head(net, num_classes, hidden=cfg.hidden)
    freeze(net, cfg.mode, pin_eval=not cfg.faithful)
    return num_classes


def check_input_size(net: RobustModel, size: int) -> None:
    """Refuse an image size the network cannot take before any data is read: ViT, DeiT and
    Swin are built for one size (position tables, attention windows); another size than the
    architecture's own is tried with one forward of a blank image (a convnet's downsampling
    needs a minimum size)."""
    from ..models.robust_model import eval_mode, input_size

    native = input_size(net)
    if size == native:
        return
    if net.arch_spec.fixed_input_size:
        raise UsageError(f"{net.arch} is built for {native}-px images (its position table "
                         f"fixes the size); pass --image-size {native} (image_size={native})")
    x = torch.zeros(1, 3, size, size, device=next(net.parameters()).device)
    try:
        with eval_mode(net), torch.no_grad():
            net(x)
    except (AssertionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"{net.arch} cannot take {size}-px images ({first}); pass "
                         f"--image-size {native} (image_size={native})") from None


def _model_meta(model: nn.Module, name: str) -> dict[str, Any]:
    entry = getattr(model, "entry", None)
    return {"model": name, "arch": model.arch,
            "norm": getattr(entry, "norm", None), "eps": getattr(entry, "eps", None)}


def _protocol_tag(cfg: TransferConfig) -> str:
    """"" for the mode's default protocol, else "-<protocol>" (K-view: "-kview<K>")."""
    r = cfg.resolved()
    if r.protocol == "paper-kview-approx":
        return f"-kview{r.views}"
    return "" if r.protocol == default_protocol(r.mode) else f"-{r.protocol}"


def run_dir(out: Path, model: str, dataset: str, cfg: TransferConfig) -> Path:
    """``out/<model>/<data set>/<mode>[-<protocol>][-g<PX>][-faithful][-lr<lr>]/seed<k>``: the
    protocol appears when it is not the mode's default, the lr when the config gives one (else
    the paper's table decides it)."""
    tag = cfg.mode + _protocol_tag(cfg) + (f"-g{cfg.granularity}" if cfg.granularity else "") + (
        "-faithful" if cfg.faithful else "") + (f"-lr{cfg.lr:g}" if cfg.lr is not None else "")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model)
    return Path(out) / safe / dataset / tag / f"seed{cfg.seed}"


def run_transfer(model: "str | nn.Module", dataset: str, *, data_root, out_dir,
                 config: TransferConfig | None = None, manifest: Any = None,
                 pretrained: bool = True, download: bool = False,
                 cache_dir: "str | Path | None" = DEFAULT_CACHE, resume: bool = False,
                 progress: bool = True, workers: int = 0, device: str | None = None,
                 save_model: bool | None = None, keep_checkpoint: bool = False,
                 dist: Dist | None = None, log: Callable = print, model_name: str | None = None,
                 datasets: tuple | None = None, on_epoch_end: Callable | None = None
                 ) -> dict[str, Any]:
    """Transfer ``model`` (a zoo name, or a loaded ``RobustModel``, which is not modified) to
    ``dataset`` and write ``result.json`` (plus weights) to ``out_dir``. Returns the result.

    ``config.protocol`` decides what training sees (``hparams.resolve_protocol``): by default
    ("paper") every mode trains behind the network on fresh augmented views every epoch (DDP
    under torchrun); the fixed-feature protocols "paper-kview-approx" and "centre-crop-*" train
    the head on cached features. ``result["paper_reference"]`` (the paper's number for the same
    data set, arch and mode) is there only for the paper's protocol and its K-view
    approximation.
    """
    cfg = (config or TransferConfig()).resolved()
    own_dist = dist is None
    dist = dist or setup(device)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    try:
        train_ds, test_ds, spec = _splits(dataset, data_root, cfg, download, dist, datasets)
        name, net = _source_model(model, model_name, manifest, pretrained, progress)
        meta = _model_meta(net, name)
        num_classes = prepare_model(net, spec, len(train_ds.classes), cfg)
        check_input_size(net, cfg.image_size)
        lr, lr_source = (cfg.lr, "given") if cfg.lr is not None else paper_lr(
            spec.name, net.arch, cfg.mode)
        rcfg = dataclasses.replace(cfg, lr=lr)
        if dist.is_main:
            views = f" views={rcfg.views}" if rcfg.protocol == "paper-kview-approx" else ""
            log(f"[{name} → {spec.name}] mode={rcfg.mode} protocol={rcfg.protocol}{views} "
                f"lr={lr} ({lr_source}) epochs={rcfg.epochs} train={len(train_ds)} "
                f"test={len(test_ds)} classes={num_classes} path={rcfg.path}")
        if rcfg.uses_cache:
            cdir = (default_cache_dir() if cache_dir == DEFAULT_CACHE else
                    Path(cache_dir) if cache_dir else None)
            preds, labels, info = _fit_cached(net, name, train_ds, test_ds, rcfg, cdir,
                                              workers=workers, dist=dist, progress=progress,
                                              log=log)
        else:
            preds, labels, info = _fit_network(
                net, train_ds, test_ds, rcfg, out_dir, workers=workers, dist=dist,
                progress=progress, log=log, resume=resume, on_epoch_end=on_epoch_end)
        net.cpu()
        m = accuracy_metrics(preds, labels)
        result = {**meta, "dataset": spec.name, "mode": rcfg.mode, "protocol": rcfg.protocol,
                  "train_transform": repr(train_ds.transform), "views": rcfg.views,
                  "path": rcfg.path, "metric": spec.metric, "accuracy": m[spec.metric],
                  "top1": m["top1"], "mean_per_class": m["mean_per_class"],
                  "num_classes": num_classes, "n_train": len(train_ds), "n_test": m["n"],
                  "lr": lr, "lr_source": lr_source, "epochs": rcfg.epochs,
                  "granularity": rcfg.granularity, "faithful": rcfg.faithful, "seed": rcfg.seed,
                  "config": rcfg.to_dict(), "history": info.pop("history"),
                  "time_s": time.perf_counter() - t_start, **info, "out_dir": str(out_dir)}
        reference = paper_result(spec.name, net.arch, rcfg.mode)
        if rcfg.protocol in PAPER_PROTOCOLS and reference is not None:
            result["paper_reference"] = reference
        if dist.is_main:
            _write_outputs(out_dir, net, result, rcfg, save_model)
            if not keep_checkpoint:
                engine_checkpoint.remove(out_dir)
            also = f" (top-1 {result['top1']:.2f}%)" if spec.metric != "top1" else ""
            log(f"[{name} → {spec.name}] {spec.metric} = {result['accuracy']:.2f}%{also} "
                f"in {result['time_s']:.1f}s")
        barrier(dist)
        return result
    finally:
        if own_dist:
            cleanup(dist)


def _splits(dataset: str, data_root, cfg: TransferConfig, download: bool, dist: Dist,
            datasets: tuple | None) -> tuple:
    """(train, test, spec): the train split with the transform training sees (augmented or the
    centre crop), the test split with the centre crop."""
    train_tf, test_tf = make_transforms(cfg.image_size, cfg.resize_size, cfg.granularity)
    if datasets is None:
        if download and dist.is_main:
            load_splits(dataset, data_root, download=True)
        barrier(dist)
        train_ds, test_ds, spec = load_splits(dataset, data_root)
    else:
        train_ds, test_ds, spec = datasets
    fit_tf = train_tf if cfg.augment else test_tf
    return train_ds.with_transform(fit_tf), test_ds.with_transform(test_tf), spec


def _source_model(model: "str | nn.Module", model_name: str | None, manifest: Any,
                  pretrained: bool, progress: bool) -> tuple[str, RobustModel]:
    """(name, a copy to train) of the zoo name or loaded model ``model``."""
    if isinstance(model, str):
        net = load_model(model, manifest=manifest, pretrained=pretrained, progress=progress)
        return model_name or model, net
    return model_name or getattr(model, "name", None) or model.arch, copy.deepcopy(model)


def _fit_cached(net: RobustModel, name: str, train_ds, test_ds, cfg: TransferConfig,
                cache_dir: Path | None, *, workers: int, dist: Dist, progress: bool,
                log: Callable) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Fixed-feature protocols: the head trained on cached features; (test predictions, test
    labels, timing, history and cache records)."""
    common = dict(cache_dir=cache_dir, seed=cfg.seed, tag=name, workers=workers, dist=dist,
                  progress=progress, log=log, model_fp=model_fingerprint(net))
    ftr, ytr, itr = cached_features(net, train_ds, views=cfg.views, **common)
    fte, yte, ite = cached_features(net, test_ds, views=1, **common)
    head = get_head(net)
    info = train_head(head, ftr, ytr, cfg, device=dist.device, progress=progress, log=log)
    preds = head_predict(head, fte[0])
    return preds, yte, {"history": info["history"],
                        "extract_s": itr["extract_s"] + ite["extract_s"],
                        "train_s": info["train_s"], "cache": {"train": itr, "test": ite}}


def _fit_network(net: RobustModel, train_ds, test_ds, cfg: TransferConfig, out_dir: Path, *,
                 workers: int, dist: Dist, progress: bool, log: Callable, resume: bool,
                 on_epoch_end: Callable | None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Training behind the network (checkpointed in ``out_dir``), then the test predictions;
    (test predictions, test labels, timing and history)."""
    info = train_network(net, train_ds, cfg, dist=dist, workers=workers, checkpoint=out_dir,
                         resume=resume, progress=progress, test_ds=test_ds, log=log,
                         on_epoch_end=on_epoch_end)
    t0 = time.perf_counter()
    preds, labels = predict_dataset(net, test_ds, dist=dist, workers=workers,
                                    precision=info["precision"], progress=progress,
                                    desc="test")
    return preds, labels, {"history": info["history"], "eval_s": time.perf_counter() - t0,
                           "train_s": info["train_s"]}


def _write_outputs(out_dir: Path, net: RobustModel, result: dict, cfg: TransferConfig,
                   save_model: bool | None) -> None:
    from ..formats.safetensors_file import save_weights

    out_dir.mkdir(parents=True, exist_ok=True)
    head = get_head(net)
    meta = dict(name=f"{result['model']}-{result['dataset']}", source_model=result["model"],
                dataset=result["dataset"], mode=cfg.mode)
    mean = net.normalize.mean.flatten().tolist()
    std = net.normalize.std.flatten().tolist()
    save_weights(head.state_dict(), out_dir / "head.safetensors", arch=net.arch,
                 num_classes=result["num_classes"], mean=mean, std=std, **meta)
    if save_model if save_model is not None else cfg.mode != "fixed-feature":
        from ..data import eval_resize
        from ..hub.manifest import Entry, Manifest

        path = save_weights(net.model.state_dict(), out_dir / "model.safetensors", arch=net.arch,
                            num_classes=result["num_classes"], mean=mean, std=std, **meta)
        # The entry carries the source model's threat model. A source without a manifest entry
        # (random weights) was not adversarially trained: ε = 0, whose norm is "l2" by the zoo's
        # convention for standard models.
        source_known = result["norm"] is not None
        entry = Entry.for_weights(
            path, name=meta["name"], arch=net.arch,
            norm=result["norm"] if source_known else "l2",
            eps=result["eps"] if source_known else 0.0, num_classes=result["num_classes"],
            description=f"{result['model']} transferred to {result['dataset']} ({cfg.mode})",
            metrics=[{"name": f"{result['metric']}", "value": result["accuracy"],
                      "dataset": result["dataset"], "split": "test",
                      "n_examples": result["n_test"], "source": "robust_zoo.transfer"}],
            preprocessing={"resize": cfg.resize_size or eval_resize(cfg.image_size),
                           "crop": cfg.image_size, "mean": mean, "std": std,
                           "normalize_in_model": True},
            provenance={"trainer": "robust_zoo.transfer", "source_model": result["model"],
                        "source_entry": source_known, "dataset": result["dataset"],
                        "mode": cfg.mode, "config": cfg.to_dict()})
        Manifest([entry]).write(out_dir / "weights_manifest.json")
        result["weights"] = str(path)
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2, default=str) + "\n")
