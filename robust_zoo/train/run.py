"""``train(recipe, options)``: a whole run, from data to a loadable manifest entry.

Rank 0 alone writes; every rank runs the same steps in the same order, so the collectives
(metric sums, RNG-state gathering for checkpoints, evaluation) line up.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..console import progress as progress_bar
from ..engine import distributed
from ..models import archs
from ..data import (DataError, ResumableSampler, SeededDataset, TensorImages, build_datasets,
                    dataset_kind, fixed_subset)
from ..data.common import Loader
from ..engine import checkpoint as ckpt
from ..engine import preemption
from ..engine.evaluation import EvalResult, evaluate_loader
from ..engine.loop import Trainer, TrainStats
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.precision import compile_model, determinism
from ..models.robust_model import RobustModel
from ..naming import eps_display, model_name
from ..recipe import Recipe, RecipeError, default_step_size
from ..fileio import atomic_write_text
from . import outputs
from .options import RunOptions
from .plots import plot_curves, read_metrics


@dataclass
class RunResult:
    run_dir: Path
    name: str
    entry: dict[str, Any] | None          # None on ranks other than 0
    final: dict[str, Any]                 # robust_zoo.evaluate result of the final evaluation


def _say(d: distributed.Dist, msg: str) -> None:
    if d.is_main:
        print(msg, file=sys.stderr, flush=True)


def check_recipe(recipe: Recipe) -> None:
    """Reject recipes the trainer cannot run, saying which field and what is valid."""
    try:
        archs.get_arch(recipe.arch)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    dataset_kind(recipe.dataset)
    recipe.require_complete()


def train(recipe: Recipe, options: RunOptions) -> RunResult:
    """Train ``recipe`` into ``options.out`` (or continue it there with ``options.resume``)."""
    check_recipe(recipe)
    d = distributed.setup(options.device)
    try:
        run = _Run(recipe, options, d)
        with determinism(run.opt.deterministic, d.device):
            return run.run()
    finally:
        distributed.cleanup(d)


@dataclass
class _Position:
    """Where a run is: the epoch being trained (0-based), the step it starts at, steps so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


class _Run:
    """One run, in the steps of torchvision's reference trainer: check the folder, build data,
    model and loader, start or resume, train epoch by epoch (validate, checkpoint), finish."""

    def __init__(self, recipe: Recipe, options: RunOptions, d: distributed.Dist):
        self.recipe, self.opt, self.d = recipe, options, d
        self.run_dir = Path(options.out).expanduser()
        self.state = self._check_run_dir()       # the checkpoint to resume from, or None
        self.opt = options.resolved(self.state.get("options") if self.state else None)
        self.name = self.opt.name = self.opt.name or model_name(recipe.arch, recipe.norm,
                                                                recipe.eps)
        self.precision = recipe.precision
        self.channels_last = d.device.type == "cuda"
        self.B = int(recipe.batch_size)              # global batch
        self.b = self.B // d.world_size              # per rank
        self.pos = _Position()
        self.stats0 = self.window0 = TrainStats()    # the sums an interrupted epoch continues
        self.stop = preemption.watch(d)              # the scheduler's signals

    def run(self) -> RunResult:
        state = self.state
        spec = self._data()         # before anything is written: bad data leaves no folder
        self._prepare_run_dir(fresh=state is None)
        self._build(spec)
        if state is None:
            self.run_info = {"start_time": outputs.now(), "elapsed": 0.0, "commands": []}
            ckpt.seed_everything(int(self.recipe.seed) + self.d.rank)
        else:
            self._resume(state)
        argv = self.opt.argv if self.opt.argv is not None else sys.argv
        self.run_info["commands"] = (list(self.run_info.get("commands", []))
                                     + [shlex.join(map(str, argv))])
        self.t_start = time.perf_counter()
        self._announce(spec)
        with self.stop:             # the scheduler's signals, noted while the epochs run
            while self.pos.epoch < int(self.recipe.epochs):
                self._train_epoch(spec)
        return self._finish(spec)

    # ------------------------------------------------------------------ setup
    def _check_run_dir(self) -> dict | None:
        """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run."""
        problem = None
        if self.d.is_main:
            has_ckpt = ckpt.exists(self.run_dir)
            done = (self.run_dir / outputs.WEIGHTS).is_file()
            if not self.opt.resume and (has_ckpt or done):
                what = "finished" if done else ckpt.CHECKPOINT
                problem = (f"{self.run_dir} already holds a run ({what}): pass --resume to "
                           "continue it, or choose another --out")
        problem = distributed.broadcast(self.d, problem)
        if problem:
            raise ckpt.ResumeError(problem)
        if not self.opt.resume:
            return None
        state, _ = ckpt.load(self.run_dir, kind="train")
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
        kw = dict(input_size=int(r.input_size), augmentation=r.augmentation,
                  decoder=self.opt.decoder, device=d.device)
        if self.opt.download and d.enabled:   # one rank downloads, the others wait and read
            if d.is_main:
                build_datasets(r.dataset, self.opt.data, download=True, **kw)
            distributed.barrier(d)
        spec = build_datasets(r.dataset, self.opt.data, download=self.opt.download, **kw)
        if spec.num_classes != int(r.num_classes):
            raise DataError(f"The data has {spec.num_classes} classes but the recipe says "
                            f"num_classes={r.num_classes}; pass --num-classes {spec.num_classes} "
                            "or point --data at the intended data set")
        B, W = self.B, d.world_size
        if B % W:
            raise RecipeError(f"batch_size {B} (global) is not divisible by the world size {W}; "
                              f"use a multiple of {W}, e.g. {B - B % W or W}")
        if len(spec.train) < B:
            raise DataError(f"The training set has {len(spec.train)} images, fewer than one "
                            f"batch ({B}); pass a smaller --batch-size")
        return spec

    def _prepare_run_dir(self, fresh: bool) -> None:
        if not self.d.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(self.run_dir)
        if fresh:                   # a fresh run starts a fresh log
            (self.run_dir / outputs.METRICS).unlink(missing_ok=True)
        for note in self.opt.notes:
            _say(self.d, note)
        outputs.write_recipe(self.run_dir, self.recipe)

    def _build(self, spec) -> None:
        """Model, trainer, schedule and loader, in the order that fixes the initial weights."""
        self.net, model = self._model(spec)
        self.trainer = self._trainer(model)
        self.scheduler = build_scheduler(self.trainer.optimizer, self.recipe)
        self.workers = self._workers(spec)
        self.loader = self._loader(spec)

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

    def _trainer(self, model: nn.Module) -> Trainer:
        r, d, o = self.recipe, self.d, self.opt
        optimizer = build_optimizer(model.parameters(), r)
        attack_model = compile_model(model, d.device) if o.compile else model
        train_model = attack_model
        if d.enabled:
            ids = [d.device.index] if d.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(attack_model, device_ids=ids)
        return Trainer(model, optimizer, device=d.device, attack=r, precision=self.precision,
                       channels_last=self.channels_last, label_smoothing=r.label_smoothing,
                       train_model=train_model, attack_model=attack_model)

    def _workers(self, spec) -> int:
        if self.opt.workers is not None:
            return self.opt.workers
        if isinstance(spec.train, TensorImages):
            return 0
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(1, min(8, (os.cpu_count() or 1) // per_node))

    def _loader(self, spec):
        d, seed = self.d, int(self.recipe.seed)
        self.sampler = ResumableSampler(spec.train, num_replicas=d.world_size, rank=d.rank,
                                        seed=seed, batch_size=self.b)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        # A private generator: creating the loader's iterator must not draw from the global
        # RNG, or a resumed run's attack noise would diverge from the uninterrupted run's.
        loader = Loader(
            SeededDataset(spec.train), batch_size=self.b, sampler=self.sampler,
            num_workers=self.workers, pin_memory=d.device.type == "cuda", drop_last=True,
            collate_fn=spec.collate, generator=torch.Generator().manual_seed(seed))
        if spec.on_device is not None:      # e.g. --decoder nvjpeg: the GPU decodes batches
            from ..data.jpeg import DeviceBatches

            loader = DeviceBatches(loader, spec.on_device)
        return loader

    def _resume(self, state: dict) -> None:
        d, pos = self.d, self.pos
        if int(state["steps_per_epoch"]) != self.steps_per_epoch:
            raise ckpt.ResumeError(
                f"The checkpoint has {state['steps_per_epoch']} steps per epoch, this data "
                f"gives {self.steps_per_epoch}: the training set changed since the run started")
        pos.epoch, pos.step = int(state["epoch"]), int(state["step"])
        pos.global_step = int(state["global_step"])
        reseed = int(self.recipe.seed) * 100_003 + pos.global_step * 101
        if not ckpt.restore(state, d, model=self.net, optimizer=self.trainer.optimizer,
                            scheduler=self.scheduler, reseed=reseed):
            _say(d, f"note: resuming a {len(state['rng'])}-process run on {d.world_size}; the "
                    "data order is kept, attack random starts are re-seeded")
        if d.is_main:   # the sums over ranks live on rank 0
            self.stats0 = TrainStats.from_list(state["epoch_stats"])
            self.window0 = TrainStats.from_list(state["log_window"])
            self._truncate_metrics(pos.global_step)
        self.run_info = dict(state["run"])
        _say(d, f"Resuming {self.run_dir} at epoch {pos.epoch + 1}, step {pos.step}/"
                f"{self.steps_per_epoch} (global step {pos.global_step})")

    def _announce(self, spec) -> None:
        r, d = self.recipe, self.d
        _say(d, f"Training {self.name}: {r.arch} on {r.dataset} ({len(spec.train)} train / "
                f"{len(spec.val)} val images), {r.epochs} epochs × {self.steps_per_epoch} steps "
                f"of {self.B} images ({d.world_size} × {self.b}), "
                + (f"{r.norm} PGD-{r.attack_steps} ε={eps_display(r.norm, r.eps)}"
                   if r.adversarial else "standard (ε=0)")
                + f", {d.device}, {self.precision}" + (", compiled" if self.opt.compile else ""))

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, spec) -> None:
        """Train the rest of the current epoch, validate, log, checkpoint."""
        pos = self.pos
        self.sampler.set_epoch(pos.epoch, pos.step)
        steps = _StepLog(self, self.window0)
        stats = self.trainer.train_one_epoch(self.loader, start_step=pos.step, stats=self.stats0,
                                             after_step=steps.after_step,
                                             where=f"epoch {pos.epoch + 1}")
        self.stats0 = self.window0 = TrainStats()
        steps.close()
        rec = self._epoch_record(stats.all_reduce(self.d), spec)
        self.scheduler.step()
        pos.epoch, pos.step = pos.epoch + 1, 0
        rec["time"] = outputs.now()
        self._log(rec)
        _say(self.d, "epoch {epoch}: loss {train_loss:.4f}, train acc {train_acc:.2f}".format(**rec)
             + (f", val clean {rec['val_clean_acc']:.2f}" if "val_clean_acc" in rec else "")
             + (f", val adv {rec['val_adv_acc']:.2f}" if rec.get("val_adv_acc") is not None
                else ""))
        if self.d.is_main:
            plot_curves(read_metrics(self.run_dir / outputs.METRICS),
                        self.run_dir / outputs.CURVES, title=self.name)
        self._save(0, TrainStats(), TrainStats())
        if self.stop.requested():
            self._stop()

    def _stop(self):
        """The scheduler's signal came: the checkpoint is written, hand the job back."""
        self.stop.stop_here(f"after global step {self.pos.global_step}",
                            lambda msg: _say(self.d, msg))

    def _epoch_record(self, sums: TrainStats, spec) -> dict:
        """The epoch's record (sums over ranks), with validation when it is due."""
        r, o, epoch = self.recipe, self.opt, self.pos.epoch
        rec = {"type": "epoch", "epoch": epoch + 1, "global_step": self.pos.global_step,
               "lr": self.trainer.optimizer.param_groups[0]["lr"], "train_loss": sums.loss,
               "train_acc": sums.acc, "train_clean_acc": sums.clean_acc,
               "adversarial": r.adversarial}
        if o.eval_every and ((epoch + 1) % o.eval_every == 0 or epoch + 1 == int(r.epochs)):
            res, _ = self._validate(spec, r.norm, r.eps, int(r.attack_steps or 0),
                                    r.step_size if r.adversarial else None, o.eval_limit)
            rec.update(val_clean_acc=res.clean_top1, val_adv_acc=res.pgd_top1, val_n=res.n)
        return rec

    def _save(self, step: int, stats: TrainStats, window: TrainStats) -> None:
        """Checkpoint at ``step`` of the current epoch; ``stats`` and ``window`` are this rank's
        epoch sums and sums at the last step record (every rank calls this)."""
        r, d, pos = self.recipe, self.d, self.pos
        stats, window = stats.all_reduce(d), window.all_reduce(d)
        info = dict(self.run_info,
                    elapsed=self.run_info["elapsed"] + time.perf_counter() - self.t_start)
        ckpt.save_run(self.run_dir, d, kind="train", model=self.net,
                      optimizer=self.trainer.optimizer, scheduler=self.scheduler,
                      recipe=r.to_dict(), epoch=pos.epoch, step=step,
                      global_step=pos.global_step, steps_per_epoch=self.steps_per_epoch,
                      world_size=d.world_size,
                      sampler={"seed": int(r.seed), "epoch": pos.epoch, "start_batch": step},
                      epoch_stats=stats.to_list(), log_window=window.to_list(), run=info,
                      options=self.opt.recorded())

    # ------------------------------------------------------------------ pieces
    def _bar(self):
        if not (self.opt.progress and self.d.is_main):
            return None
        return progress_bar(total=self.steps_per_epoch, initial=self.pos.step, unit="step",
                            desc=f"epoch {self.pos.epoch + 1}/{self.recipe.epochs}")

    def _log(self, rec: dict) -> None:
        if self.d.is_main:
            with open(self.run_dir / outputs.METRICS, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _truncate_metrics(self, global_step: int) -> None:
        """Drop the records of steps after the checkpoint: the resumed run redoes them."""
        path = self.run_dir / outputs.METRICS
        keep = [r for r in read_metrics(path) if r.get("global_step", 0) <= global_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def _validate(self, spec, norm, eps, steps, step_size, limit) -> tuple[EvalResult, dict]:
        """Clean and PGD accuracy on the validation set (a fixed subset of ``limit`` images),
        sharded over the ranks and summed; evaluation draws no training randomness, so how
        often it runs changes nothing about training."""
        d, model = self.d, self.trainer.attack_model
        ds = fixed_subset(spec.val, limit)
        shard = torch.utils.data.Subset(ds, range(d.rank, len(ds), d.world_size))
        loader = Loader(shard, batch_size=self.b, shuffle=False, num_workers=self.workers,
                        pin_memory=d.device.type == "cuda")
        alpha = step_size if step_size is not None else default_step_size(eps, steps)
        devices = [d.device] if d.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = evaluate_loader(model, loader, norm=norm, eps=eps, steps=steps,
                                  step_size=alpha, device=d.device,
                                  progress=self.opt.progress and d.is_main, desc="validate")
        attack = ({"steps": steps, "step_size": alpha, "restarts": 1, "random_start": False,
                   "keep_best": True} if eps > 0 and steps > 0 else None)
        return res.all_reduce(d), attack

    def _finish(self, spec) -> RunResult:
        """The final evaluation, and on rank 0 the weights, manifest entry, card and plots."""
        r, o, d = self.recipe, self.opt, self.d
        norm = o.final_eval_norm or r.norm
        eps = r.eps if o.final_eval_eps is None else float(o.final_eval_eps)
        final, attack = self._validate(spec, norm, eps, int(o.final_eval_steps), None,
                                       o.final_eval_limit)
        entry = None
        if d.is_main:
            _say(d, f"final: clean top-1 {final.clean_top1:.2f}%"
                 + (f", PGD-{o.final_eval_steps} {norm} ε={eps_display(norm, eps)} top-1 "
                    f"{final.pgd_top1:.2f}%"
                    if final.pgd_top1 is not None else "") + f" on {final.n} val images")
            entry = outputs.finalize(
                self.run_dir, name=self.name, recipe=r, net=self.net, mean=spec.mean,
                std=spec.std, preprocessing=spec.preprocessing,
                metrics=outputs.metric_records(final, attack, norm, eps, r.dataset),
                provenance=self._provenance())
            plot_curves(read_metrics(self.run_dir / outputs.METRICS),
                        self.run_dir / outputs.CURVES, title=self.name)
            _say(d, f"wrote {self.run_dir}: {outputs.WEIGHTS}, {outputs.MANIFEST}, {outputs.CARD}, "
                    f"{outputs.METRICS}, {outputs.CURVES}")
        distributed.barrier(d)
        final_dict = {"n": final.n, "norm": norm, "eps": eps, "attack": attack,
                      "metrics": {"clean_top1": final.clean_top1, "pgd_top1": final.pgd_top1}}
        return RunResult(self.run_dir, self.name, entry, final_dict)

    def _provenance(self) -> dict[str, Any]:
        o, info = self.opt, self.run_info
        return {
            "trainer": "robust_zoo.train", "git_commit": outputs.git_commit(),
            "command": info["commands"][0], "commands": info["commands"],
            "start_time": info["start_time"], "end_time": outputs.now(),
            "train_seconds": round(info["elapsed"] + time.perf_counter() - self.t_start, 1),
            "hardware": outputs.hardware(self.d.device, self.d.world_size),
            "deterministic": o.deterministic, "compiled": o.compile, "sync_bn": o.sync_bn,
            "decoder": o.decoder, "notes": list(o.notes)}


class _StepLog:
    """``after_step`` of one epoch: a step record every ``log_every`` steps (the sums over all
    ranks since the last record), the progress bar, and the mid-epoch checkpoints."""

    def __init__(self, run: _Run, window: TrainStats):
        self.run = run
        self.window = window        # this rank's cumulative stats at the last step record
        self.bar = run._bar()
        self.t, self.steps = time.perf_counter(), 0

    def after_step(self, st: int, x, y, running) -> None:
        run, o, pos = self.run, self.run.opt, self.run.pos
        pos.global_step += 1
        self.steps += 1
        if o.log_every and pos.global_step % o.log_every == 0:
            self._record(st, x, y, running)
        if self.bar is not None:
            self.bar.update(1)
        if st + 1 == run.steps_per_epoch:      # the epoch's end checkpoints (and checks)
            return
        stop = run.stop.requested()
        if stop or (o.ckpt_every_steps and pos.global_step % o.ckpt_every_steps == 0):
            run._save(st + 1, running.stats(step=st + 1), self.window)
        if stop:
            self.close()
            run._stop()

    def _record(self, st: int, x, y, running) -> None:
        run = self.run
        running.add_clean(x, y)
        now = running.stats(step=st + 1)
        sums = (now - self.window).all_reduce(run.d)
        self.window = now
        rate = self.steps * run.B / (time.perf_counter() - self.t)
        self.t, self.steps = time.perf_counter(), 0
        rec = {"type": "step", "epoch": run.pos.epoch + 1, "step": st + 1,
               "global_step": run.pos.global_step,
               "lr": run.trainer.optimizer.param_groups[0]["lr"], "loss": sums.loss,
               "train_acc": sums.acc, "train_clean_acc": sums.clean_acc, "images_per_s": rate,
               "time": outputs.now()}
        run._log(rec)
        if self.bar is not None:
            acc = "adv" if run.recipe.adversarial else "acc"
            self.bar.set_postfix({"img/s": f"{rate:.0f}", "loss": f"{rec['loss']:.3f}",
                                  "clean": f"{rec['train_clean_acc']:.1f}",
                                  acc: f"{rec['train_acc']:.1f}"})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
