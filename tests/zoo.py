"""Test helpers, in one place: random-weight networks (BN statistics randomised too), a small
CNN and the quickstart's mini ResNet, a record of a model's state, checkpoints in the upstream
layout published on the loopback Hub, manifest entries (upstream, safetensors, any served
file), and image class-folder trees."""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from robust_zoo.models import RobustModel, archs
from robust_zoo.formats.upstream import to_robustness
from robust_zoo.naming import model_name, upstream_filename

REPO = "madrylab/robust-imagenet-models"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))   # a fixed input batch
# publish_upstream makes the upstream files of networks up to CACHED_NET parameters once per
# session (most tests publish a resnet18), and those of networks over BIG_NET with the attacker
# copy sharing the model copy's storage (half the bytes to write, serve, hash and read).
CACHED_NET = 12_000_000
BIG_NET = 50_000_000


# ----------------------------------------------------------------------------- networks

def random_net(arch: str, seed: int = 0, num_classes: int = 1000) -> torch.nn.Module:
    """A network whose BN statistics are random too, so a load that skips buffers shows."""
    torch.manual_seed(seed)
    net = archs.build(arch, num_classes).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def small_cnn(num_classes: int = 5, *, seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """conv-BN-ReLU, dropout (an Identity at 0, so the indices stay), strided conv-BN-ReLU,
    2×2 pool, linear: every kind of layer a ResNet step has, in train mode, built in ms."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Dropout(dropout) if dropout else nn.Identity(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))


def mini_model(seed: int = 0, num_classes: int = 3) -> RobustModel:
    """The quickstart's mini ResNet as a zoo model (16-px inputs), in train mode."""
    from robust_zoo.models.smallnets import mini_resnet

    torch.manual_seed(seed)
    return RobustModel(mini_resnet(num_classes=num_classes), "mini_resnet", name="tiny")


class ModelState(NamedTuple):
    modes: list[bool]
    requires_grad: list[bool]
    grads: list[torch.Tensor | None]
    dtypes: list[torch.dtype]
    state_dict: dict[str, torch.Tensor]


def model_state(model: nn.Module) -> ModelState:
    """What a call must leave as it found it: modes, requires_grad, pending gradients, dtypes,
    parameters and buffers (copies)."""
    params = list(model.parameters())
    return ModelState([m.training for m in model.modules()], [p.requires_grad for p in params],
                      [None if p.grad is None else p.grad.clone() for p in params],
                      [p.dtype for p in params],
                      {k: v.clone() for k, v in model.state_dict().items()})


def assert_same_state(model: nn.Module, before: ModelState) -> None:
    now = model_state(model)
    assert now.modes == before.modes and now.requires_grad == before.requires_grad
    assert now.dtypes == before.dtypes
    for g, g0 in zip(now.grads, before.grads):
        assert (g is None and g0 is None) or torch.equal(g, g0)
    for k, v in now.state_dict.items():
        assert torch.equal(v, before.state_dict[k]), f"{k} changed (BN running stats updated?)"


def reference_logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net((x - MEAN) / STD)


def same(model: torch.nn.Module, net: torch.nn.Module) -> bool:
    """Whether a loaded ``model`` (inputs in [0, 1]) gives exactly ``net``'s logits behind the
    ImageNet normalization, on the fixed batch ``X``."""
    with torch.no_grad():
        return torch.equal(model(X), reference_logits(net, X))


# ----------------------------------------------------------------------------- manifests

def manifest(*entries: dict) -> dict:
    return {"schema_version": 1, "models": list(entries)}


def write_manifest(path: Path, *entries: dict) -> Path:
    Path(path).write_text(json.dumps(manifest(*entries)))
    return Path(path)


def served_entry(server, filename: str, data: bytes, arch: str = "resnet18", norm: str = "l2",
                 eps: float = 3.0, fmt: str = "robustness-ckpt", repo: str = REPO,
                 pin: bool = True, **fields) -> dict:
    """Serve ``data`` as ``repo/filename`` on the loopback Hub; return a manifest entry whose one
    file it is (pinned by sha256 and size unless ``pin`` is false)."""
    sha = server.add_file(repo, filename, data)
    return {"name": model_name(arch, norm, eps), "arch": arch, "norm": norm, "eps": eps,
            "files": [{"format": fmt, "repo_id": repo, "filename": filename, "revision": "main",
                       "sha256": sha if pin else None, "size": len(data)}], **fields}


def ckpt_bytes(net: torch.nn.Module, arch: str, *, shared: bool = False, **kw) -> bytes:
    """``net`` as an upstream ``.ckpt`` file (``to_robustness``: the released files' keys, with
    the attacker copy's tensors separate clones); ``shared``: the attacker copy's tensors are
    the model copy's, so torch.save writes each storage once (the same keys and values)."""
    ckpt = to_robustness(net.state_dict(), arch, **kw)
    if shared:
        sd = ckpt["model"]
        for k in sd:
            if k.startswith("module.attacker.model."):
                sd[k] = sd["module.model." + k[len("module.attacker.model."):]]
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def _cached_ckpt(arch: str, seed: int) -> bytes:
    return ckpt_bytes(random_net(arch, seed), arch)


def publish_upstream(server, arch: str, norm: str = "l2", eps: float = 3.0, seed: int = 0,
                     pin: bool = True) -> tuple[dict, torch.nn.Module]:
    """Serve an upstream .ckpt of ``random_net(arch, seed)`` for (arch, norm, eps); return its
    manifest entry and the net."""
    net = random_net(arch, seed)
    size = archs.get_arch(arch).num_params
    data = (_cached_ckpt(arch, seed) if size <= CACHED_NET
            else ckpt_bytes(net, arch, shared=size > BIG_NET))
    fname = upstream_filename(archs.get_arch(arch).upstream_name, norm, eps)
    entry = served_entry(server, fname, data, arch, norm, eps, pin=pin,
                         metrics=[{"name": "clean_top1", "value": 50.0}])
    return entry, net


def safetensors_entry(folder: Path, name: str, net: torch.nn.Module, arch: str, *,
                      norm: str = "l2", eps: float = 3.0, num_classes: int = 1000,
                      server=None, repo: str = "robust-zoo/st", **fields) -> dict:
    """Save ``net`` as ``folder/<name>.safetensors`` and return its manifest entry: the file
    pinned by sha256 and size, by its path relative to the manifest's folder, or, with
    ``server``, served from ``repo`` on the loopback Hub."""
    from robust_zoo.fileio import sha256_file
    from robust_zoo.formats.safetensors_file import save_weights

    path = save_weights(net.state_dict(), Path(folder) / f"{name}.safetensors", arch=arch,
                        num_classes=num_classes)
    fields = {"num_classes": num_classes, "metrics": [], "preprocessing": {}, **fields}
    if server is not None:
        return dict(served_entry(server, path.name, path.read_bytes(), arch, norm, eps,
                                 fmt="safetensors", repo=repo), name=name, **fields)
    return {"name": name, "arch": arch, "norm": norm, "eps": eps,
            "files": [{"format": "safetensors", "path": path.name,
                       "sha256": sha256_file(path), "size": path.stat().st_size}], **fields}


def random_manifest(folder: Path, specs: Sequence[tuple[str, float, int]],
                    arch: str = "resnet18") -> Path:
    """``folder/manifest.json`` of random-weight safetensors entries: (name, eps, seed) each."""
    entries = [safetensors_entry(folder, name, random_net(arch, seed), arch, eps=eps)
               for name, eps, seed in specs]
    return write_manifest(Path(folder) / "manifest.json", *entries)


# ----------------------------------------------------------------------------- image trees

def write_image_tree(root: Path, per_split: dict[str, int], classes: Sequence[str],
                     draw: Callable[[str, int, int], Any], suffix: str = ".png") -> Path:
    """Class folders ``root/<split>/<class>/<i><suffix>`` (``root/<class>/...`` for split "")
    holding ``per_split[split]`` images per class, drawn in that order by ``draw(split, c, i)``:
    an H×W×3 uint8 array (saved in the format ``suffix`` names) or encoded bytes (written as
    they are)."""
    from PIL import Image

    for split, n in per_split.items():
        for c, name in enumerate(classes):
            d = Path(root) / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = draw(split, c, i)
                if isinstance(img, bytes):
                    (d / f"{i}{suffix}").write_bytes(img)
                else:
                    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(d / f"{i}{suffix}")
    return Path(root)


def image_tree(root: Path, per_split: dict[str, int], colors: Sequence[Sequence[float]],
               size: int = 20, noise: float = 60.0, seed: int = 0) -> Path:
    """PNG class folders ``root/<split>/class<c>/<i>.png``: noisy images whose mean colour is
    the class's (``colors[c]``), so a model can learn them."""
    rng = np.random.default_rng(seed)

    def draw(split: str, c: int, i: int) -> np.ndarray:
        return np.clip(rng.normal(colors[c], noise, size=(size, size, 3)), 0, 255)

    return write_image_tree(root, per_split, [f"class{c}" for c in range(len(colors))], draw)


def make_image_folder(root: Path, classes: int = 2, per_class=(28, 6), size: int = 20) -> Path:
    """train/ and val/ trees of ``classes`` classes, each a dominant primary colour."""
    colors = [tuple(140.0 if k == c % 3 else 0.0 for k in range(3)) for c in range(classes)]
    return image_tree(root, dict(zip(("train", "val"), per_class)), colors, size, noise=60.0)


# ----------------------------------------------------------------------------- RobustBench

def robustbench():
    """The ``robustbench`` package (1.1.1, the fidelity reference), imported with AutoAttack under
    the name it imports (``autoattack``; ``pyautoattack`` installs it as ``pyautoattack``). Skips
    the test when it is not installed, except under ``CI=true``, where that fails the test."""
    import importlib.util
    import os
    import sys
    import warnings

    import pytest

    missing = [m for m in ("robustbench", "pyautoattack") if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed (scripts/bootstrap.sh installs robustbench)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    import pyautoattack

    sys.modules.setdefault("autoattack", pyautoattack)
    with warnings.catch_warnings():     # its pkg_resources import warns on import
        warnings.simplefilter("ignore")
        import robustbench
        import robustbench.model_zoo.imagenet  # noqa: F401  (registers its timm models)
    return robustbench


class _MetaBuild(archs.NoInitOnMeta):
    """A build on the meta device without initialisers, and with the tensors made from values
    (``torch.tensor``, ``as_tensor``, ``linspace``) on the CPU: code that reads them
    (``x.item()`` for stochastic-depth rates) builds, and normalization constants can be read."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.linspace, torch.tensor, torch.as_tensor):
            kwargs = {**(kwargs or {}), "device": "cpu"}
        return super().__torch_function__(func, types, args, kwargs)


# RobustBench ImageNet ids its own builders cannot give with random weights and no network:
# Standard_R50 downloads torchvision's weights (the same network without them is built instead);
# MixedNUTS is an ensemble (left out of the zoo).
RB_UNBUILDABLE = {"Bai2024MixedNUTS": "an ensemble of two networks with two forward passes"}


def robustbench_model(model_id: str, threat: str = "Linf", *, device: str = "meta") -> nn.Module:
    """RobustBench's ImageNet model ``model_id`` (its builder, random weights, no network), on
    ``device``. Models RobustBench loads through timm (XCiT, DeiT, AlexNet) are built from the timm
    names it registers, with ``pretrained=False``, as its ``load_model`` would name them."""
    import timm

    rb = robustbench()
    if model_id in RB_UNBUILDABLE:
        raise ValueError(f"{model_id}: {RB_UNBUILDABLE[model_id]}")
    from robustbench.model_zoo.architectures.utils_architectures import normalize_model
    from robustbench.model_zoo.enums import ThreatModel
    from torchvision.models import resnet50

    timm_name = f"{model_id.lower().replace('-', '_')}_imagenet_{threat.lower()}"
    models = rb.model_zoo.imagenet.imagenet_models[ThreatModel(threat)]
    with torch.device(device), _MetaBuild():
        if timm.is_model(timm_name):
            model = timm.create_model(timm_name, pretrained=False)
        elif model_id == "Standard_R50":
            model = normalize_model(resnet50(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        else:
            model = models[model_id]["model"]()
    return model.eval()


def robustbench_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a RobustBench model applies to its [0, 1] inputs: its ``normalize`` wrapper
    or RaWRN's ``normalization`` layer; (0, 0, 0), (1, 1, 1) for the models without one (the
    ConvStem ConvNeXts and ViT-B, Chen2024Data_WRN_50_2, MIMIR's Swins, the XCiTs)."""
    layer = getattr(model, "normalize", None) or getattr(model, "normalization", None)
    if layer is None:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (tuple(round(float(v), 6) for v in layer.mean.flatten()),
            tuple(round(float(v), 6) for v in layer.std.flatten()))


def random_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for ``model``'s state dict (its keys, shapes and dtypes; a model built on
    the meta device has no initialisation to wait for), scaled so a forward pass stays in
    range: weights N(0, 1/fan-in), norm scales around 1, biases and BN means small, BN variances
    in [0.5, 1.5], integer buffers 0. Computed buffers a state dict may hold (an older Swin's
    attention masks and position indices) get no real values: not for such networks."""
    import math

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if not v.dtype.is_floating_point:
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.dim() >= 2:
            out[k] = torch.randn(v.shape, generator=g) / math.sqrt(math.prod(v.shape[1:]))
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.1 + (k.endswith("weight"))
    return out


def digits_folder(root: Path, classes: Sequence[int] = (5, 6, 7, 8, 9),
                  per_class: tuple[int, int] = (12, 4), size: int = 16) -> Path:
    """scikit-learn's digits ``classes`` (the quickstart's transfer target 5-9) as an
    ImageFolder tree ``root/train`` and ``root/val`` of grey PNGs, the first ``per_class``
    (train, test) images of each class of the package's fixed digits split, at ``size`` px."""
    from robust_zoo.data import digits_tensors

    images = {}
    for split in ("train", "test"):
        x, y = digits_tensors(list(classes), size, split)
        images["train" if split == "train" else "val"] = (
            (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), y.numpy())

    def draw(split: str, c: int, i: int) -> np.ndarray:
        x, y = images[split]
        return x[np.flatnonzero(y == c)[i]]

    return write_image_tree(root, dict(zip(("train", "val"), per_class)),
                            [f"digit{d}" for d in classes], draw)


# ----------------------------------------------------------------------------- a private SLURM

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def missing_slurm() -> str | None:
    """Why a private SLURM cluster cannot start here (a missing binary, not root), or None."""
    import os
    import shutil

    missing = [b for b in SLURM_BINARIES
               if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if missing:
        return (f"SLURM binaries missing: {', '.join(missing)} (install the Debian packages "
                "slurm-wlm and munge: scripts/bootstrap.sh)")
    if os.geteuid() != 0:
        return "a private SLURM cluster needs root (munged runs as the munge user)"
    return None


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _sbin(name: str) -> str:
    import shutil

    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """A single-node SLURM cluster of its own under ``root``: its own munge key and socket,
    free loopback ports, state, spool and log folders, a node named after the folder; started
    by ``start()`` (returns when the node is idle), stopped by pid with ``stop()``. ``env`` points
    the clients (sbatch, squeue, submitit) at it."""

    def __init__(self, root: Path, *, cpus: int | None = None):
        import os
        import secrets

        self.root = Path(root)
        tag = secrets.token_hex(3)
        self.node = f"rz{tag}"
        self.cluster_name = f"rz{tag}"
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.munge_dir: Path | None = None    # in /tmp: munged (as munge) cannot reach root
        self.pids: dict[str, int] = {}
        self.env = {"SLURM_CONF": str(self.conf)}

    # -- configuration
    def _write_conf(self) -> None:
        import socket

        ctld, slurmd = _free_ports(2)
        mem_mb = 1024
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024 // 2
        host = socket.gethostname().split(".")[0]
        r = self.root
        for d in ("state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld}", f"SlurmdPort={slurmd}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=5",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobRequeue=1", "ReturnToService=2", "MpiDefault=none",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none",
            "SlurmctldTimeout=30", "SlurmdTimeout=60", "InactiveLimit=0", "MinJobAge=300",
            "KillWait=2", "MessageTimeout=20",
            f"PlugStackConfig={r / 'plugstack.conf'}",
            f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=NO",
            "",
        ]))
        (r / "plugstack.conf").write_text("")

    def _start_munge(self) -> None:
        import os
        import pwd

        d = self.munge_dir
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        user = pwd.getpwnam("munge")
        for p in (d, key):
            os.chown(p, user.pw_uid, user.pw_gid)
        os.chmod(d, 0o755)
        os.chmod(key, 0o400)
        _check_run(["runuser", "-u", "munge", "--", _sbin("munged"),
                    f"--socket={self.munge_socket}", f"--key-file={key}",
                    f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                    f"--seed-file={d / 'munged.seed'}"])
        self.pids["munged"] = _read_pid(d / "munged.pid")

    def _start_slurm(self) -> None:
        env = self.client_env()
        for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", self.node])):
            _check_run([_sbin(daemon), "-f", str(self.conf), *extra], env=env)
            self.pids[daemon] = _read_pid(self.root / "run" / f"{daemon}.pid")

    def client_env(self) -> dict[str, str]:
        import os

        return {**os.environ, **self.env}

    @property
    def munge_socket(self) -> Path:
        assert self.munge_dir is not None
        return self.munge_dir / "munge.socket"

    def start(self) -> "SlurmCluster":
        import tempfile
        import time

        self.munge_dir = Path(tempfile.mkdtemp(prefix="rz-munge-"))
        self._write_conf()
        try:
            self._start_munge()
            self._start_slurm()
            deadline = time.monotonic() + 60
            while self.node_state() != "idle":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {self.node} not idle after 60 s: "
                                       f"{self.node_state()!r}; logs in {self.root / 'log'}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel the jobs left, then stop the daemons by pid (slurmd, slurmctld, munged):
        SIGTERM, and SIGKILL for one still there after 3 s (the cluster's state is thrown
        away)."""
        import os
        import shutil
        import signal
        import time

        if "slurmctld" in self.pids:                # no job outlives the cluster
            self.cancel_all()
        pids = [self.pids.pop(n) for n in ("slurmd", "slurmctld", "munged") if n in self.pids]
        for pid in pids:                               # each takes ~2 s: all at once
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids + self.leftover_pids():      # slurmstepd outlives slurmd
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    def cancel_all(self, timeout: float = 10) -> None:
        """Cancel every job of the cluster and wait (up to ``timeout``) until the queue is
        empty."""
        import os
        import time

        self.run("scancel", "--user", str(os.getuid()), check=False)
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-o", "%i", check=False).strip() and \
                time.monotonic() < deadline:
            time.sleep(0.2)

    def leftover_pids(self) -> list[int]:
        """Processes of this cluster other than its daemons (slurmstepd, a job's processes):
        those whose environment names its slurm.conf, this process and its parents excepted."""
        import os

        mine = {os.getpid()}
        p = os.getppid()
        while p > 1 and p not in mine:
            mine.add(p)
            try:
                p = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        needle = f"SLURM_CONF={self.conf}".encode()
        found = []
        for d in Path("/proc").glob("[0-9]*"):
            try:
                if int(d.name) not in mine and needle in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                continue
        return found

    # -- clients
    def run(self, *cmd: str, check: bool = True) -> str:
        """A SLURM client command (``squeue``, ``scontrol``, ``scancel``…) against this cluster;
        its stdout."""
        import subprocess

        p = subprocess.run(list(cmd), env=self.client_env(), capture_output=True, text=True,
                           timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False).strip()

    def squeue(self) -> dict[str, str]:
        """Job id (``123`` or ``123_4`` for an array task) → state (``RUNNING``, ``PENDING``…)."""
        out = self.run("squeue", "-h", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def scontrol(self, *args: str) -> str:
        return self.run("scontrol", *args)

    def scancel(self, job_id: str) -> None:
        self.run("scancel", job_id)

    def job_state(self, job_id: str) -> str:
        """``JobState`` of a job or array task (``scontrol show job``), '' once it is gone."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def wait_state(self, job_id: str, states: Sequence[str], timeout: float = 60) -> str:
        """Poll until ``job_id`` is in one of ``states``; that state (fails after ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while (state := self.job_state(job_id)) not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {state!r}, not one of {states}")
            time.sleep(0.2)
        return state


def _check_run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    import subprocess

    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")


def _read_pid(path: Path, timeout: float = 10) -> int:
    import time

    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pid file {path}")
        time.sleep(0.05)
    return int(path.read_text().split()[0])


def _alive(pid: int) -> bool:
    import os

    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ----------------------------------------------------------------------------- launcher tasks
# module-level (a SLURM job unpickles them by reference: tests/ must be on its PYTHONPATH)

def square_task(run_dir: str, x: int) -> None:
    """A run that writes ``result.json`` with ``x`` squared and the robust_zoo it imported."""
    import robust_zoo
    from robust_zoo.fileio import atomic_write_text

    atomic_write_text(Path(run_dir) / "result.json", json.dumps(
        {"x": x, "y": x * x, "robust_zoo": str(Path(robust_zoo.__file__).parent)}))


def counting_task(run_dir: str, steps: int, seconds_per_step: float,
                  stall_at: int | None = None) -> None:
    """A resumable run: counts to ``steps`` (one step per ``seconds_per_step``), keeping its count
    in ``state.json``; called again, it continues from there. On its first attempt it stalls
    after step ``stall_at`` until it is killed (the test requeues it there); SIGTERM ends it at
    once (submitit would let it run on until SLURM's SIGKILL). ``result.json`` holds the sum of
    the steps' squares and how many attempts it took."""
    import os
    import signal
    import time

    from robust_zoo.fileio import atomic_write_text

    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

    state_file = Path(run_dir) / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"step": 0, "sum": 0}
    first = len((Path(run_dir) / ".attempts").read_text().splitlines()) == 1
    while state["step"] < steps:
        while first and state["step"] == stall_at:
            time.sleep(0.1)
        time.sleep(seconds_per_step)
        state = {"step": state["step"] + 1, "sum": state["sum"] + (state["step"] + 1) ** 2}
        atomic_write_text(state_file, json.dumps(state))
    lines = (Path(run_dir) / ".attempts").read_text().splitlines()
    atomic_write_text(Path(run_dir) / "result.json",
                      json.dumps({"sum": state["sum"], "attempts": len(lines)}))


def ranks_task(run_dir: str) -> None:
    """One run of several processes (a SLURM job's tasks): each writes ``rank-<r>``; rank 0
    waits for all of them and writes ``result.json`` with the world it saw."""
    import os
    import time

    from robust_zoo.fileio import atomic_write_text

    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    (Path(run_dir) / f"rank-{rank}").write_text(os.environ.get("SLURM_LOCALID", ""))
    if rank == 0:
        deadline = time.monotonic() + 60
        while len(list(Path(run_dir).glob("rank-*"))) < world and time.monotonic() < deadline:
            time.sleep(0.05)
        atomic_write_text(Path(run_dir) / "result.json", json.dumps(
            {"world": world, "ranks": sorted(p.name for p in Path(run_dir).glob("rank-*"))}))


def preempted_task(run_dir: str) -> None:
    """A run that checkpoints where SLURM's warning signal finds it, as training and transfer
    do (``engine.preemption``): its first attempt writes ``waiting`` and counts steps until the
    signal comes, saves the step in ``saved.json`` and hands the signal on (submitit requeues
    the job); the next attempt writes ``result.json`` with what was saved."""
    import time

    from robust_zoo.engine import preemption
    from robust_zoo.engine.distributed import Dist
    from robust_zoo.fileio import atomic_write_text

    run = Path(run_dir)
    saved = run / "saved.json"
    if saved.exists():
        attempts = len((run / ".attempts").read_text().splitlines())
        atomic_write_text(run / "result.json", json.dumps(
            {"saved": json.loads(saved.read_text()), "attempts": attempts}))
        return
    with preemption.watch(Dist()) as stop:
        (run / "waiting").write_text("")
        step = 0
        while not stop.requested():
            step += 1
            time.sleep(0.05)
        atomic_write_text(saved, json.dumps({"step": step}))
        stop.hand_over()


def flaky_task(run_dir: str, x: int) -> None:
    """``square_task`` that fails the first time it runs in ``run_dir``."""
    marker = Path(run_dir) / "failed-once"
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError(f"this run fails once on purpose ({run_dir})")
    square_task(run_dir, x)
