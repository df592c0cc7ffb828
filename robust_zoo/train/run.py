"""``train(recipe, options)``: a whole run, from data to a loadable manifest entry.

Rank 0 alone writes; every rank runs the same steps in the same order, so the collectives
(metric sums, RNG-state gathering for checkpoints, evaluation) line up.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import archs
from ..data import DataError, ResumableSampler, SeededDataset, TensorImages, build_datasets
from ..models import RobustModel
from ..naming import eps_display, model_name
from ..recipe import Recipe
from . import checkpoint as ckpt
from .. import distributed
from . import outputs
from .loop import (RecipeError, build_optimizer, build_scheduler, check_recipe, clean_correct,
                   train_step)
from .plots import plot_curves, read_metrics


@dataclass
class RunOptions:
    """How to run a recipe (nothing here changes what is trained)."""

    out: str | os.PathLike
    data: str | os.PathLike | None = None
    download: bool = False
    resume: bool = False
    name: str | None = None
    device: str | None = None
    workers: int | None = None            # None: 0 for in-memory data, else min(8, CPUs)
    ckpt_every_steps: int = 0             # 0: only at epoch ends
    log_every: int = 50
    deterministic: bool = False
    compile: bool = False
    sync_bn: bool = False
    eval_every: int = 1                   # epochs between validation passes (0: never)
    eval_limit: int | None = None         # examples per validation pass
    final_eval_steps: int = 20
    final_eval_norm: str | None = None    # default: the recipe's
    final_eval_eps: float | None = None   # default: the recipe's (clean only when 0)
    final_eval_limit: int | None = None
    progress: bool = True
    argv: list[str] | None = None         # recorded as provenance (default sys.argv)
    notes: list[str] = field(default_factory=list)   # printed and kept in the provenance


@dataclass
class RunResult:
    run_dir: Path
    name: str
    entry: dict[str, Any] | None          # None on ranks other than 0
    final: dict[str, Any]                 # robust_zoo.evaluate result of the final evaluation


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device):
    """``--deterministic``: deterministic kernels (restored afterwards, for callers that train
    in-process); otherwise let cuDNN pick the fastest kernels. ``warn_only``: a few CUDA
    backward kernels (adaptive average pooling, which every ResNet's global pool uses) have no
    deterministic version; PyTorch then warns instead of refusing to train."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic,
             torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[3])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:3]


def _say(d: distributed.Dist, msg: str) -> None:
    if d.is_main:
        print(msg, file=sys.stderr, flush=True)


def train(recipe: Recipe, options: RunOptions) -> RunResult:
    """Train ``recipe`` into ``options.out`` (or continue it there with ``options.resume``)."""
    check_recipe(recipe)
    d = distributed.setup(options.device)
    try:
        with _determinism(options.deterministic, d.device):
            return _Run(recipe, options, d).run()
    finally:
        distributed.cleanup(d)


class _Run:
    def __init__(self, recipe: Recipe, options: RunOptions, d: distributed.Dist):
        self.recipe, self.opt, self.d = recipe, options, d
        self.run_dir = Path(options.out).expanduser()
        self.name = options.name or model_name(recipe.arch, recipe.norm, recipe.eps)
        self.precision = recipe.precision
        self.channels_last = d.device.type == "cuda"

    # ------------------------------------------------------------------ setup
    def _check_run_dir(self) -> dict | None:
        """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run."""
        problem = None
        if self.d.is_main:
            has_ckpt = (self.run_dir / ckpt.CHECKPOINT).is_file()
            done = (self.run_dir / outputs.WEIGHTS).is_file()
            if not self.opt.resume and (has_ckpt or done):
                what = "finished" if done else "checkpoint.pt"
                problem = (f"{self.run_dir} already holds a run ({what}): pass --resume to "
                           "continue it, or choose another --out")
        problem = distributed.broadcast(self.d, problem)
        if problem:
            raise ckpt.ResumeError(problem)
        if not self.opt.resume:
            return None
        state = ckpt.load(self.run_dir)
        saved = Recipe.from_dict(state["recipe"])
        diff = self.recipe.diff(saved)
        if diff:
            rows = "; ".join(f"{k}: checkpoint {b!r}, requested {a!r}"
                             for k, (a, b) in diff.items())
            raise ckpt.ResumeError(
                f"Cannot resume {self.run_dir}: the requested recipe differs from the run's in "
                f"{', '.join(diff)} ({rows}). Resume with the run's own recipe (plain "
                f"--resume --out {self.run_dir}) or start a new run in another --out")
        return state

    def _data(self):
        r, d = self.recipe, self.d
        kw = dict(input_size=int(r.input_size), augmentation=r.augmentation)
        if self.opt.download and d.enabled:   # one rank downloads, the others wait and read
            if d.is_main:
                build_datasets(r.dataset, self.opt.data, download=True, **kw)
            distributed.barrier(d)
        spec = build_datasets(r.dataset, self.opt.data, download=self.opt.download, **kw)
        if spec.num_classes != int(r.num_classes):
            raise DataError(f"The data has {spec.num_classes} classes but the recipe says "
                            f"num_classes={r.num_classes}; pass --num-classes {spec.num_classes} "
                            "or point --data at the intended data set")
        B, W = int(r.batch_size), d.world_size
        if B % W:
            raise RecipeError(f"batch_size {B} (global) is not divisible by the world size {W}; "
                              f"use a multiple of {W}, e.g. {B - B % W or W}")
        if len(spec.train) < B:
            raise DataError(f"The training set has {len(spec.train)} images, fewer than one "
                            f"batch ({B}); pass a smaller --batch-size")
        return spec

    def _model(self, spec):
        r, d = self.recipe, self.d
        ckpt.seed_everything(int(r.seed))     # identical initial weights on every rank
        net = archs.build(r.arch, int(r.num_classes))
        if self.opt.sync_bn and d.enabled:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = RobustModel(net, r.arch, spec.mean, spec.std, name=self.name).to(d.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return net, model

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        r, d, o = self.recipe, self.d, self.opt
        state = self._check_run_dir()
        spec = self._data()         # before anything is written: bad data leaves no folder
        if d.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.run_dir)
            for note in o.notes:
                _say(d, note)
            outputs.write_recipe(self.run_dir, r)
        net, model = self._model(spec)
        optimizer = build_optimizer(r, model)
        scheduler = build_scheduler(r, optimizer)
        attack_model = torch.compile(model) if o.compile else model
        train_model = attack_model
        if d.enabled:
            ids = [d.device.index] if d.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(attack_model, device_ids=ids)

        B, b = int(r.batch_size), int(r.batch_size) // d.world_size
        sampler = ResumableSampler(spec.train, num_replicas=d.world_size, rank=d.rank,
                                   seed=int(r.seed), batch_size=b)
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        workers = o.workers if o.workers is not None else (
            0 if isinstance(spec.train, TensorImages) else
            max(1, min(8, (os.cpu_count() or 1) // per_node)))
        # A private generator: creating the loader's iterator must not draw from the global
        # RNG, or a resumed run's attack noise would diverge from the uninterrupted run's.
        loader = torch.utils.data.DataLoader(
            SeededDataset(spec.train), batch_size=b, sampler=sampler, num_workers=workers,
            pin_memory=d.device.type == "cuda", drop_last=True,
            generator=torch.Generator().manual_seed(int(r.seed)))
        steps_per_epoch = sampler.batches_per_epoch()

        epoch = step = global_step = 0
        stats0, window0 = [0.0] * 5, [0.0] * 5
        run_info = {"start_time": outputs.now(), "elapsed": 0.0, "commands": []}
        if state is not None:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            epoch, step = int(state["epoch"]), int(state["step"])
            global_step = int(state["global_step"])
            if int(state["steps_per_epoch"]) != steps_per_epoch:
                raise ckpt.ResumeError(
                    f"The checkpoint has {state['steps_per_epoch']} steps per epoch, this data "
                    f"gives {steps_per_epoch}: the training set changed since the run started")
            rngs = state["rng"]
            if len(rngs) == d.world_size:
                ckpt.set_rng_state(rngs[d.rank])
            else:
                _say(d, f"note: resuming a {len(rngs)}-process run on {d.world_size}; the data "
                        "order is kept, attack random starts are re-seeded")
                ckpt.seed_everything(int(r.seed) * 100_003 + global_step * 101 + d.rank)
            if d.is_main:   # the sums over ranks live on rank 0
                stats0 = [float(v) for v in state["epoch_stats"]]
                window0 = [float(v) for v in state["log_window"]]
                self._truncate_metrics(global_step)
            run_info = dict(state["run"])
            _say(d, f"Resuming {self.run_dir} at epoch {epoch + 1}, step {step}/{steps_per_epoch} "
                    f"(global step {global_step})")
        else:
            ckpt.seed_everything(int(r.seed) + d.rank)
        argv = o.argv if o.argv is not None else sys.argv
        run_info["commands"] = list(run_info.get("commands", [])) + [shlex.join(map(str, argv))]
        t_start = time.perf_counter()

        def save_checkpoint(ep: int, st: int, stats: list[float], window: list[float]) -> None:
            sums = distributed.all_reduce_sum(d, stats + window)
            rngs = distributed.all_gather(d, ckpt.rng_state())
            if d.is_main:
                info = dict(run_info, elapsed=run_info["elapsed"] + time.perf_counter() - t_start)
                ckpt.save(self.run_dir / ckpt.CHECKPOINT, {
                    "recipe": r.to_dict(), "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": ep, "step": st, "global_step": global_step,
                    "steps_per_epoch": steps_per_epoch, "world_size": d.world_size, "rng": rngs,
                    "sampler": {"seed": int(r.seed), "epoch": ep, "start_batch": st},
                    "epoch_stats": sums[:5], "log_window": sums[5:], "run": info})

        _say(d, f"Training {self.name}: {r.arch} on {r.dataset} ({len(spec.train)} train / "
                f"{len(spec.val)} val images), {r.epochs} epochs × {steps_per_epoch} steps of "
                f"{B} images ({d.world_size} × {b}), "
                + (f"{r.norm} PGD-{r.attack_steps} ε={eps_display(r.norm, r.eps)}" if r.adversarial
                   else "standard (ε=0)")
                + f", {d.device}, {self.precision}" + (", compiled" if o.compile else ""))
        while epoch < int(r.epochs):
            # stats: loss·n, correct, n, clean correct (sampled at log steps), clean n
            stats = [torch.tensor(v, dtype=torch.float64, device=d.device) for v in stats0]
            window = window0            # cumulative stats at the last log step
            stats0, window0 = [0.0] * 5, [0.0] * 5
            sampler.set_epoch(epoch, step)
            model.train()
            bar = self._bar(epoch, steps_per_epoch, step)
            t_win, steps_win = time.perf_counter(), 0
            for step, (x, y) in enumerate(loader, start=step):
                x = x.to(d.device, non_blocking=True)
                y = y.to(d.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss, correct = train_step(r, train_model, attack_model, optimizer, x, y,
                                           precision=self.precision)
                global_step += 1
                steps_win += 1
                for i, v in enumerate((loss * len(y), correct, len(y))):
                    stats[i] += v
                if o.log_every and global_step % o.log_every == 0:
                    cc = (clean_correct(attack_model, x, y, self.precision) if r.adversarial
                          else correct)
                    stats[3] += cc
                    stats[4] += len(y)
                    now = [float(s) for s in stats]
                    sums = distributed.all_reduce_sum(d, [a - w for a, w in zip(now, window)])
                    window = now
                    rate = steps_win * B / (time.perf_counter() - t_win)
                    t_win, steps_win = time.perf_counter(), 0
                    rec = {"type": "step", "epoch": epoch + 1, "step": step + 1,
                           "global_step": global_step, "lr": optimizer.param_groups[0]["lr"],
                           "loss": sums[0] / sums[2], "train_acc": 100 * sums[1] / sums[2],
                           "train_clean_acc": 100 * sums[3] / sums[4], "images_per_s": rate,
                           "time": outputs.now()}
                    self._log(rec)
                    if bar is not None:
                        acc = "adv" if r.adversarial else "acc"
                        bar.set_postfix({"img/s": f"{rate:.0f}", "loss": f"{rec['loss']:.3f}",
                                         "clean": f"{rec['train_clean_acc']:.1f}",
                                         acc: f"{rec['train_acc']:.1f}"})
                if bar is not None:
                    bar.update(1)
                if (o.ckpt_every_steps and global_step % o.ckpt_every_steps == 0
                        and step + 1 < steps_per_epoch):
                    save_checkpoint(epoch, step + 1, [float(s) for s in stats], window)
            if bar is not None:
                bar.close()
            sums = distributed.all_reduce_sum(d, [float(s) for s in stats])
            rec = {"type": "epoch", "epoch": epoch + 1, "global_step": global_step,
                   "lr": optimizer.param_groups[0]["lr"], "train_loss": sums[0] / max(sums[2], 1),
                   "train_acc": 100 * sums[1] / max(sums[2], 1),
                   "train_clean_acc": 100 * sums[3] / sums[4] if sums[4] else None,
                   "adversarial": r.adversarial}
            if o.eval_every and ((epoch + 1) % o.eval_every == 0 or epoch + 1 == int(r.epochs)):
                res = self._evaluate(attack_model, spec, r.norm, r.eps, int(r.attack_steps or 0),
                                     r.step_size if r.adversarial else None, o.eval_limit, b,
                                     workers)
                rec.update(val_clean_acc=res["metrics"]["clean_top1"],
                           val_adv_acc=res["metrics"]["pgd_top1"], val_n=res["n"])
            scheduler.step()
            epoch, step = epoch + 1, 0
            rec["time"] = outputs.now()
            self._log(rec)
            _say(d, "epoch {epoch}: loss {train_loss:.4f}, train acc {train_acc:.2f}".format(**rec)
                 + (f", val clean {rec['val_clean_acc']:.2f}" if "val_clean_acc" in rec else "")
                 + (f", val adv {rec['val_adv_acc']:.2f}" if rec.get("val_adv_acc") is not None
                    else ""))
            if d.is_main:
                plot_curves(read_metrics(self.run_dir / outputs.METRICS),
                            self.run_dir / outputs.CURVES, title=self.name)
            save_checkpoint(epoch, 0, [0.0] * 5, [0.0] * 5)

        return self._finish(net, attack_model, spec, b, workers, run_info, t_start)

    # ------------------------------------------------------------------ pieces
    def _bar(self, epoch: int, total: int, initial: int):
        if not (self.opt.progress and self.d.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                    desc=f"epoch {epoch + 1}/{self.recipe.epochs}")

    def _log(self, rec: dict) -> None:
        if self.d.is_main:
            with open(self.run_dir / outputs.METRICS, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _truncate_metrics(self, global_step: int) -> None:
        """Drop the records of steps after the checkpoint: the resumed run redoes them."""
        path = self.run_dir / outputs.METRICS
        keep = [r for r in read_metrics(path) if r.get("global_step", 0) <= global_step]
        from ..io import atomic_write_text

        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def _evaluate(self, model, spec, norm, eps, steps, step_size, limit, batch_size, workers):
        from ..evaluate import evaluate

        devices = [self.d.device] if self.d.device.type == "cuda" else []
        # evaluation draws no training randomness: changing how often it runs changes nothing
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return evaluate(model, spec.val, norm=norm, eps=eps, steps=steps, step_size=step_size,
                            limit=limit, batch_size=batch_size, workers=workers,
                            device=self.d.device, progress=self.opt.progress and self.d.is_main)

    def _finish(self, net, attack_model, spec, b, workers, run_info, t_start) -> RunResult:
        r, o, d = self.recipe, self.opt, self.d
        norm = o.final_eval_norm or r.norm
        eps = r.eps if o.final_eval_eps is None else float(o.final_eval_eps)
        final = self._evaluate(attack_model, spec, norm, eps, int(o.final_eval_steps), None,
                               o.final_eval_limit, b, workers)
        entry = None
        if d.is_main:
            m = final["metrics"]
            _say(d, f"final: clean top-1 {m['clean_top1']:.2f}%"
                 + (f", PGD-{o.final_eval_steps} {norm} ε={eps_display(norm, eps)} top-1 "
                    f"{m['pgd_top1']:.2f}%"
                    if m.get("pgd_top1") is not None else "") + f" on {final['n']} val images")
            provenance = {
                "trainer": "robust_zoo.train", "git_commit": outputs.git_commit(),
                "command": run_info["commands"][0], "commands": run_info["commands"],
                "start_time": run_info["start_time"], "end_time": outputs.now(),
                "train_seconds": round(run_info["elapsed"] + time.perf_counter() - t_start, 1),
                "hardware": outputs.hardware(d.device, d.world_size),
                "deterministic": o.deterministic, "compiled": o.compile, "sync_bn": o.sync_bn,
                "notes": list(o.notes)}
            entry = outputs.finalize(
                self.run_dir, name=self.name, recipe=r, net=net, mean=spec.mean, std=spec.std,
                preprocessing=spec.preprocessing,
                metrics=outputs.metric_records(final, r.dataset), provenance=provenance)
            plot_curves(read_metrics(self.run_dir / outputs.METRICS),
                        self.run_dir / outputs.CURVES, title=self.name)
            _say(d, f"wrote {self.run_dir}: {outputs.WEIGHTS}, {outputs.MANIFEST}, {outputs.CARD}, "
                    f"{outputs.METRICS}, {outputs.CURVES}")
        distributed.barrier(d)
        return RunResult(self.run_dir, self.name, entry, final)
