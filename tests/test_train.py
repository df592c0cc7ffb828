"""``python -m robust_zoo.train``: recipe command line, errors, the files a run leaves, resume after
SIGKILL (bit-identical weights), and a 2-process torchrun run against a 1-process run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo.engine import checkpoint as ckpt
from robust_zoo.data import Lighting, ResumableSampler, TensorImages, sample_seed
from robust_zoo.recipe import Recipe
from robust_zoo.train import main
from robust_zoo.train.cli import build_parser, parse_number, recipe_fields, resolve_recipe

from zoo import make_image_folder

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds on 2 cores, but every moving part runs: ImageFolder decoding, the
# robustness ImageNet augmentation (with Lighting), L2 PGD with random start and keep_best,
# BatchNorm in eval during the attack, 14 steps per epoch, checkpoints every 2 steps (so a kill
# right after the first checkpoint has 12 steps of margin before the epoch ends). Every run
# option that shapes the outputs differs from its default, so a resume that forgets them shows.
RUN_ARGS = ["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
            "--norm", "l2", "--eps", "0.5", "--random-start", "--epochs", "2", "--batch-size", "4",
            "--lr", "0.05", "--ckpt-every-steps", "2", "--log-every", "3", "--deterministic",
            "--no-progress", "--final-eval-steps", "3", "--eval-limit", "10",
            "--final-eval-limit", "8", "--name", "r10"]


def child_env() -> dict[str, str]:
    # One thread per process: the runs below go side by side on 2 cores, and a resumed run
    # must use the thread count of the run it continues.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "robust_zoo.train", *map(str, args)]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def data_bytes(path: Path) -> bytes:
    """The tensor bytes of a safetensors file (its JSON header orders metadata keys freely)."""
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


# ----------------------------------------------------------------------------- command line

def test_every_recipe_field_is_a_flag_and_fractions_parse():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in recipe_fields()} <= dests
    args = parser.parse_args(["--out", "x", "--arch", "resnet18", "--norm", "linf", "--eps",
                              "4/255", "--attack-steps", "7", "--no-use-best", "--lr", "1e-2"])
    recipe, _ = resolve_recipe(args)
    assert recipe.eps == pytest.approx(4 / 255) and recipe.attack_steps == 7
    assert recipe.keep_best is False and recipe.lr == 0.01
    assert parse_number(" 8 / 255 ") == pytest.approx(8 / 255)


def test_from_manifest_fills_unknowns_with_defaults_and_flags_override(tmp_path, capsys):
    recipe = Recipe(arch="resnet18", norm="l2", eps=3.0).to_dict()
    recipe.update(lr_step=None, weight_decay=None, unknown=["lr_step", "weight_decay"],
                  unconfirmed=["attack_step_size", "epochs"])
    entry = {"name": "resnet18_l2_eps3", "arch": "resnet18", "norm": "l2", "eps": 3.0,
             "files": [{"format": "safetensors", "path": "x.safetensors", "sha256": None}],
             "recipe": recipe}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"schema_version": 1, "models": [entry]}))
    rc = main(["--from-manifest", "resnet18_l2_eps3", "--manifest", str(manifest), "--out",
               str(tmp_path / "run"), "--epochs", "5", "--device", "cpu", "--print-recipe"])
    out, err = capsys.readouterr()
    assert rc == 0
    got = json.loads(out)
    assert got["lr_step"] == 30 and got["weight_decay"] == 1e-4       # Recipe defaults
    assert got["epochs"] == 5 and got["eps"] == 3.0 and got["arch"] == "resnet18"
    assert "lr_step=30" in err and "weight_decay=0.0001" in err
    assert "Unconfirmed" in err and "attack_step_size" in err and "Overridden" in err
    assert not (tmp_path / "run").exists()


def test_the_zoo_manifest_recipe_reproduces():
    args = build_parser().parse_args(["--from-manifest", "resnet50_l2_eps3", "--out", "x"])
    recipe, notes = resolve_recipe(args, cuda=True)
    assert (recipe.arch, recipe.norm, recipe.eps, recipe.attack_steps) == ("resnet50", "l2", 3.0, 3)
    # the recorded precision (unknown upstream: fp32), not the CUDA default of flag recipes
    assert recipe.batch_size == 512 and recipe.epochs == 90 and recipe.precision == "fp32"
    assert any("unknown" in n for n in notes)
    args = build_parser().parse_args(["--from-manifest", "resnet50_l2_eps3", "--out", "x",
                                      "--precision", "bf16"])
    assert resolve_recipe(args, cuda=True)[0].precision == "bf16"
    flags = build_parser().parse_args(["--arch", "resnet18", "--out", "x"])
    recipe, notes = resolve_recipe(flags, cuda=True)
    assert recipe.precision == "bf16" and any("bf16" in n for n in notes)


@pytest.mark.parametrize("extra, message", [
    (["--eps", "-1"], "eps must be >= 0"),
    (["--eps", "nan"], "eps must be a finite number"),
    (["--eps", "inf"], "eps must be a finite number"),
    (["--eps", "4/0"], "not a number or fraction"),
    (["--lr", "nan"], "must be a finite number"),
    (["--lr", "0"], "lr must be > 0"),
    (["--label-smoothing", "2"], "label_smoothing must be < 1"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--norm", "linf", "--eps", "4"], "Did you mean 4/255"),
    (["--eps", "0.5", "--attack-steps", "0"], "needs attack_steps >= 1"),
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--arch", "resnet5O"], "Did you mean 'resnet50'"),
    (["--data", "{tmp}/nowhere"], "does not exist"),
    (["--data", "{tmp}/empty"], "holds no usable images"),
    (["--data", "{tmp}/noval"], "has no val/ folder"),
    (["--dataset", "cifar10", "--data", "{tmp}/nowhere"], "--download"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    (tmp_path / "noval" / "train" / "a").mkdir(parents=True)
    base = ["--arch", "mini_resnet", "--dataset", "imagefolder", "--num-classes", "2",
            "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]
    assert main(base + [a.format(tmp=tmp_path) for a in extra]) == 2
    assert message in capsys.readouterr().err


def test_unparsable_eps_is_rejected(capsys):
    assert main(["--arch", "resnet18", "--out", "x", "--eps", "4/0"]) == 2
    err = capsys.readouterr().err
    assert "not a number or fraction" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- data pieces

def test_lighting_is_robustness_pca_noise():
    torch.manual_seed(3)
    img = torch.full((3, 4, 4), 0.5)
    out = Lighting(0.05)(img)
    torch.manual_seed(3)
    alpha = torch.empty(3).normal_(0, 0.05)
    lt = Lighting(0.05)
    expected = 0.5 + (lt.eigvec * (alpha * lt.eigval)).sum(1)
    assert torch.allclose(out[:, 0, 0], expected) and (out == out[:, :1, :1]).all()
    assert torch.equal(Lighting(0.0)(img), img)
    assert Lighting(50.0)(img).min() >= 0 and Lighting(50.0)(img).max() <= 1


def test_sampler_global_batches_do_not_depend_on_world_size():
    ds = TensorImages(torch.zeros(50, 3, 8, 8), torch.zeros(50), ["a"])
    one = list(ResumableSampler(ds, num_replicas=1, rank=0, seed=4, batch_size=8))
    ranks = [list(ResumableSampler(ds, num_replicas=2, rank=r, seed=4, batch_size=4))
             for r in range(2)]
    for b in range(len(one) // 8):
        union = {i for r in ranks for i in r[b * 4:(b + 1) * 4]}
        assert union == set(one[b * 8:(b + 1) * 8])       # same images, same seeds
    resumed = ResumableSampler(ds, num_replicas=1, rank=0, seed=4, batch_size=8)
    resumed.set_epoch(0, start_batch=2)
    assert list(resumed) == one[16:] and len(resumed) == len(one) - 16
    # a function of (seed, epoch, index) alone, different for each of them
    seeds = {sample_seed(0, 1, 5), sample_seed(0, 2, 5), sample_seed(1, 1, 5), sample_seed(0, 1, 6)}
    assert len(seeds) == 4 and sample_seed(0, 1, 5) == sample_seed(0, 1, 5)


def test_restore_puts_back_the_generators_or_reseeds_on_another_world_size():
    from torch import nn

    from robust_zoo.engine.distributed import Dist

    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    torch.manual_seed(1)
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "rng": [ckpt.rng_state()]}
    want = torch.rand(4)
    kw = dict(model=net, optimizer=opt, scheduler=sched, reseed=7)
    assert ckpt.restore(state, Dist(), **kw) is True
    assert torch.equal(torch.rand(4), want)              # continues the saved stream
    state["rng"] = state["rng"] * 2                      # written by 2 processes
    assert ckpt.restore(state, Dist(), **kw) is False
    got = torch.rand(4)
    torch.manual_seed(7)                                 # reseed + rank 0
    assert torch.equal(got, torch.rand(4))


# ----------------------------------------------------------------------------- whole runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and, beside it, the same run SIGKILLed after a mid-epoch
    checkpoint and resumed by ``--resume --out`` alone (with a different number of loader
    workers): data, cadence, evaluation settings and kernels are the interrupted run's."""
    tmp = tmp_path_factory.mktemp("train")
    data = make_image_folder(tmp / "data")
    full, killed = tmp / "full", tmp / "killed"
    args = RUN_ARGS + ["--data", str(data)]
    ref = subprocess.Popen(train_cmd(*args, "--out", full, "--workers", "0"), env=child_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_cmd(*args, "--out", killed, "--workers", "1"),
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    at, _ = ckpt.load(killed)      # what --resume reads (checksummed)
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    resumed = subprocess.run(train_cmd("--resume", "--out", killed, "--no-progress",
                                       "--workers", "0"),
                             env=child_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    return {"data": data, "full": full, "killed": killed, "killed_at": at,
            "log": err, "resume_log": resumed.stderr}


def test_sigkilled_and_resumed_run_is_bit_identical(runs):
    at = runs["killed_at"]
    assert at["epoch"] == 0 and 0 < at["step"] < at["steps_per_epoch"]      # mid-epoch
    assert f"Resuming {runs['killed']} at epoch 1, step {at['step']}/14" in runs["resume_log"]
    a = tensors(runs["full"] / "model.safetensors")
    b = tensors(runs["killed"] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert data_bytes(runs["full"] / "model.safetensors") == data_bytes(
        runs["killed"] / "model.safetensors")
    # the resumed run's metrics replace the lost steps instead of duplicating them
    recs = [json.loads(x) for x in (runs["killed"] / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in recs if r["type"] == "step"]
    assert steps == sorted(set(steps)) == list(range(3, 29, 3))
    ref = [json.loads(line) for line in (runs["full"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in recs if r["type"] == "step"] == [
        r["loss"] for r in ref if r["type"] == "step"]


def test_resume_restores_the_interrupted_runs_options(runs):
    """Resumed with ``--resume --out DIR --workers 0 --no-progress`` only, the run kept its data
    folder, name, log cadence (--log-every 3), checkpoint cadence (--ckpt-every-steps 2),
    validation subset (--eval-limit 10) and final evaluation (PGD-3 on 8 images)."""
    killed = runs["killed"]
    recs = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in recs if r["type"] == "step"] == list(range(3, 29, 3))
    assert [r["val_n"] for r in recs if r["type"] == "epoch"] == [10, 10]
    assert ckpt.read(killed / "checkpoint.prev.pt")["global_step"] == 26   # step 12 of epoch 2
    (entry,) = json.loads((killed / "weights_manifest.json").read_text())["models"]
    assert entry["name"] == "r10"
    pgd = next(m for m in entry["metrics"] if m["name"] == "pgd_top1")
    assert (pgd["attack"]["steps"], pgd["n_examples"]) == (3, 8)
    assert entry["provenance"]["deterministic"] is True
    assert "note:" not in runs["resume_log"]


def test_an_option_given_on_resume_wins_with_a_note(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["full"], run)
    rc = main(["--resume", "--out", str(run), "--no-progress", "--workers", "0",
               "--final-eval-steps", "2", "--log-every", "3"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert ("--final-eval-steps 2 given on the command line; the run used --final-eval-steps 3"
            in err)
    assert "--log-every" not in err                   # the same as the run's: no note
    (entry,) = json.loads((run / "weights_manifest.json").read_text())["models"]
    pgd = next(m for m in entry["metrics"] if m["name"] == "pgd_top1")
    assert (pgd["attack"]["steps"], pgd["n_examples"]) == (2, 8)
    assert any("--final-eval-steps 2" in n for n in entry["provenance"]["notes"])


def test_a_run_leaves_a_loadable_entry_and_its_records(runs):
    run = runs["full"]
    for f in ("model.safetensors", "weights_manifest.json", "README.md", "metrics.jsonl",
              "training_curves.png", "recipe.json", "checkpoint.pt"):
        assert (run / f).is_file(), f
    manifest = json.loads((run / "weights_manifest.json").read_text())
    schema = json.loads((ROOT / "robust_zoo" / "schema" / "manifest.schema.json").read_text())
    import jsonschema

    jsonschema.validate(manifest, schema)
    (entry,) = manifest["models"]
    assert entry["name"] == "r10" and entry["num_classes"] == 2
    assert entry["recipe"] == json.loads((run / "recipe.json").read_text())
    assert entry["recipe"]["random_start"] is True and entry["recipe"]["augmentation"] == \
        "robustness-imagenet"
    (spec,) = entry["files"]
    assert spec["path"] == "model.safetensors"
    assert spec["size"] == (run / spec["path"]).stat().st_size
    pgd = next(m for m in entry["metrics"] if m["name"] == "pgd_top1")
    assert pgd["attack"]["steps"] == 3 and pgd["norm"] == "l2" and pgd["eps"] == 0.5
    prov = entry["provenance"]
    assert "--ckpt-every-steps 2" in prov["command"] and prov["hardware"]["device_type"] == "cpu"
    assert prov["start_time"] <= prov["end_time"]

    model = robust_zoo.load(entry["name"], manifest=run / "weights_manifest.json")
    assert not model.training and model.num_classes == 2
    from robust_zoo.formats.safetensors_file import read_metadata

    meta = read_metadata(run / "model.safetensors")
    assert meta["arch"] == "mini_resnet" and json.loads(meta["recipe"])["eps"] == 0.5
    state = ckpt.read(run / "checkpoint.pt")        # checksummed; tensors and plain data only
    assert (run / "checkpoint.pt").read_bytes().startswith(ckpt.MAGIC)
    assert ckpt.read(run / "checkpoint.prev.pt")["global_step"] < 28     # the one before is kept
    assert (state["epoch"], state["step"], state["global_step"]) == (2, 0, 28)
    assert torch.equal(state["model"]["fc.weight"], tensors(run / "model.safetensors")["fc.weight"])
    assert len(state["rng"]) == 1 and state["rng"][0]["torch"].dtype == torch.uint8
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and all("val_adv_acc" in e for e in epochs)
    assert "# r10" in (run / "README.md").read_text()


def test_resume_refuses_a_different_recipe_and_a_fresh_run_refuses_an_old_folder(runs, capsys):
    rc = main(["--resume", "--out", str(runs["full"]), "--data", str(runs["data"]), "--epochs",
               "3", "--lr", "0.1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "differs from the run's in epochs, lr" in err
    assert "epochs: checkpoint 2, requested 3" in err
    rc = main(RUN_ARGS + ["--data", str(runs["data"]), "--out", str(runs["full"])])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_resume_skips_a_corrupt_checkpoint_and_ends_bit_identical(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["full"], run)
    (run / "model.safetensors").unlink()
    _flip_byte(run / "checkpoint.pt", (run / "checkpoint.pt").stat().st_size // 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # the thread count of the run it continues (child_env)
    try:
        with pytest.warns(UserWarning, match="checkpoint.pt is corrupt"):
            rc = main(["--resume", "--out", str(run), "--data", str(runs["data"]),
                       "--no-progress", "--deterministic", "--workers", "0"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, capsys.readouterr().err
    # the previous checkpoint was used and the lost steps redone: the same weights as the run
    a, b = tensors(runs["full"] / "model.safetensors"), tensors(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_resume_with_no_usable_checkpoint_stops_with_exit_2(runs, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["full"], run)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        p = run / name
        if damage == "flip":
            _flip_byte(p, len(ckpt.MAGIC) + 100)
        else:
            p.write_bytes(p.read_bytes()[:1000] if damage == "truncate" else b"")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc = main(["--resume", "--out", str(run), "--data", str(runs["data"]), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "No usable checkpoint" in err and "Traceback" not in err
    assert ("is empty" if damage == "empty" else "is corrupt") in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # untouched


def test_a_fresh_run_does_not_append_to_an_old_log(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=(4, 2), size=16)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"type": "step", "global_step": 99}) + "\n")
    rc = main(["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
               "--epochs", "1", "--batch-size", "4", "--no-progress", "--eval-every", "0",
               "--final-eval-steps", "0", "--data", str(data), "--out", str(out)])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["global_step"] != 99 for r in recs) and recs[-1]["type"] == "epoch"


NOBN_SCRIPT = '''
import sys
from torch import nn
from robust_zoo.models import archs


class NoBN(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


archs._register(archs.Arch("nobn_cnn", lambda weights=None, num_classes=1000: NoBN(num_classes),
                           "fc", 16, "", False, 17_000, None))
from robust_zoo.train import main
sys.exit(main(sys.argv[1:]))
'''


def test_torchrun_two_processes_match_one_process(tmp_path):
    """Same global batch (8 = 2 × 4 vs 1 × 8): equal weights up to float summation order.

    The model has no BatchNorm: with BN each rank would normalize its own 4 images (per-rank
    statistics, as robustness' DataParallel), so the runs would differ by design, and gloo on
    CPU has no SyncBatchNorm. Everything else is the real thing: L2 PGD-3 with keep_best,
    ImageFolder + robustness augmentation, DDP gradient averaging, checkpoints with RNG states
    gathered from both ranks. Gradients are averaged over 2 × 4 instead of summed over 8, so
    sums run in another order: differences are rounding-level (~1e-7 after 14 steps).
    """
    data = make_image_folder(tmp_path / "data")
    script = tmp_path / "train_nobn.py"
    script.write_text(NOBN_SCRIPT)
    args = ["--arch", "nobn_cnn", "--dataset", "imagefolder", "--data", data, "--input-size",
            "16", "--norm", "l2", "--eps", "0.5", "--epochs", "2", "--batch-size", "8", "--lr",
            "0.05", "--ckpt-every-steps", "3", "--log-every", "2", "--no-progress",
            "--final-eval-steps", "2", "--workers", "0"]
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node", "2", script, *map(str, args), "--out",
                            tmp_path / "two"], env=child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    one = subprocess.run([sys.executable, script, *map(str, args), "--out", tmp_path / "one"],
                         env=child_env(), capture_output=True, text=True, timeout=300)
    out, err = two.communicate(timeout=300)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, err
    assert "(2 × 4)" in err and "(1 × 8)" in one.stderr
    a = tensors(tmp_path / "one" / "model.safetensors")
    b = tensors(tmp_path / "two" / "model.safetensors")
    state = ckpt.read(tmp_path / "two" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), (k, (a[k] - b[k]).abs().max())
    # the same trajectory step by step, and one that went somewhere (the loss fell 5×), so
    # agreement to 1e-5 is not agreement of two barely-moved initializations
    ra = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    la = [r["loss"] for r in ra if r["type"] == "step"]
    lb = [r["loss"] for r in rb if r["type"] == "step"]
    assert len(la) == 7 and la == pytest.approx(lb, rel=1e-5)
    assert la[-1] < la[0] / 5
