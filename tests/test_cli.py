"""Every command on bad input: one line ``error: <what is wrong>`` on stderr, exit 2, never a
traceback (``robust_zoo.console.run_main`` runs all six programs)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from robust_zoo.cli import commands as cli
from robust_zoo.console import run_main
from robust_zoo.errors import UsageError
from robust_zoo.models import archs

from zoo import make_image_folder, safetensors_entry, write_manifest

BAD = [
    ["list", "--eps", "4/0"], ["list", "--eps", "nan"], ["list", "--eps", "inf"],
    ["list", "--eps", "-1"], ["list", "--arch", "resnet5O"], ["list", "--norm", "l3"],
    ["info", "no_such_model"], ["info", "resnet50"], ["download", "no_such_model"],
    ["verify", "no_such_model"], ["convert", "{tmp}/missing.ckpt", "--arch", "resnet18",
                                  "--out", "{tmp}/x.safetensors"],
    ["convert", "{tmp}/garbage.ckpt", "--arch", "resnet18", "--out", "{tmp}/x.safetensors"],
    ["convert", "{tmp}/garbage.ckpt", "--arch", "bogus", "--out", "{tmp}/x.safetensors"],
    ["export", "no_such_model", "{tmp}/out"], ["pin", "--manifest", "{tmp}/missing.json"],
    ["list", "--manifest", "{tmp}/garbage.ckpt"],
    ["quickstart", "--epochs", "0"], ["quickstart", "--threads", "-1"],
    ["train", "--arch", "resnet18", "--out", "{tmp}/r", "--lr", "nan"],
    ["train", "--arch", "resnet18", "--out", "{tmp}/r", "--eps", "4/0"],
    ["train", "--resume", "--out", "{tmp}/nothing"],
    ["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data", "{tmp}/val",
     "--steps", "-1"],
    ["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data", "{tmp}/val",
     "--eps", "4/0"],
    ["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data", "{tmp}/val",
     "--limit", "0"],
    ["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data", "{tmp}/nowhere"],
    ["evaluate", "no_such_model", "--data", "{tmp}"],
    ["transfer", "--model", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--dataset",
     "no_such_set", "--data-root", "{tmp}"],
    ["transfer", "--model", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--dataset",
     "imagefolder", "--data-root", "{tmp}", "--epochs", "0"],
    ["transfer", "--model", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--dataset",
     "imagefolder", "--data-root", "{tmp}", "--lr", "nan"],
    ["transfer", "--model", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--dataset",
     "imagefolder", "--data-root", "{tmp}/nowhere", "--epochs", "1"],
    ["train", "--arch", "mini_resnet", "--out", "{tmp}/r", "--device", "nonsense"],
    ["transfer", "--model", "mini_l2_eps1", "--dataset", "imagefolder", "--device", "gpu"],
    ["viz", "mini_l2_eps1", "saliency", "--out", "{tmp}/x.png", "--device", "nonsense"],
    ["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data", "{tmp}/val",
     "--device", "nonsense"],
]


@pytest.fixture
def inputs(tmp_path):
    """A garbage checkpoint, a manifest of one 2-class ``mini_l2_eps1`` and an image tree."""
    (tmp_path / "garbage.ckpt").write_bytes(b"this is not a checkpoint")
    net = archs.build("mini_resnet", 2)
    write_manifest(tmp_path / "m.json", safetensors_entry(tmp_path, "mini_l2_eps1", net,
                                                          "mini_resnet", eps=1.0,
                                                          num_classes=2))
    make_image_folder(tmp_path, classes=2, per_class=(2, 2), size=16)
    return tmp_path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a)[:60])
def test_bad_input_exits_2_with_one_line(inputs, capsys, argv):
    rc = cli.main([a.format(tmp=inputs) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    _one_error_line(err)


# one bad number per program, each through robust-zoo's own name for it
BAD_NUMBERS = {
    "robust-zoo": (["list", "--eps", "nan"], "--eps"),
    "train": (["train", "--arch", "mini_resnet", "--out", "{tmp}/r", "--epochs", "nan"],
              "--epochs"),
    "evaluate": (["evaluate", "mini_l2_eps1", "--manifest", "{tmp}/m.json", "--data",
                  "{tmp}/val", "--steps", "4/0"], "--steps"),
    "transfer": (["transfer", "--model", "mini_l2_eps1", "--dataset", "imagefolder",
                  "--epochs", "nan"], "--epochs"),
    "viz": (["viz", "mini_l2_eps1", "synthesize", "--target", "0", "--steps", "4/0", "--out",
             "{tmp}/x.png"], "--steps"),
    "quickstart": (["quickstart", "--out", "{tmp}/qs", "--epochs", "2.5"], "--epochs"),
}


@pytest.mark.parametrize("program", BAD_NUMBERS)
def test_a_bad_number_names_its_flag_in_one_line(inputs, capsys, program):
    argv, flag = BAD_NUMBERS[program]
    assert cli.main([a.format(tmp=inputs) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flag} ") or line.startswith(f"error: {flag}:"), line
    assert not (inputs / "x.png").exists() and not (inputs / "r").exists()


@pytest.mark.parametrize("argv, flag", [
    (["robust_zoo.transfer", "--model", "resnet18", "--dataset", "cifar10", "--epochs", "nan"],
     "--epochs"),
    (["robust_zoo.cli", "viz", "resnet18_l2_eps3", "synthesize", "--target", "0", "--steps",
      "4/0", "--out", "x.png"], "--steps")])
def test_the_shell_commands_exit_2_with_one_line(tmp_path, subprocess_env, argv, flag):
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                       env=subprocess_env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert _one_error_line(r.stderr).startswith(f"error: {flag}")
    assert list(tmp_path.iterdir()) == []


# -- the runner: which errors become one line, and which stay bugs ------------------------------

@pytest.mark.parametrize("where", ["under a file", "a folder", "in /proc"])
def test_an_output_path_that_cannot_be_written_is_one_line(inputs, capsys, where):
    (inputs / "file").write_text("a file where a folder must be")
    (inputs / "folder").mkdir()
    blocker = {"under a file": inputs / "file", "a folder": inputs / "folder",
               "in /proc": "/proc"}[where]
    out = blocker if where == "a folder" else f"{blocker}/grid.png"
    rc = cli.main(["viz", "mini_l2_eps1", "saliency", "--images", str(inputs / "val" / "class0"),
                   "--manifest", str(inputs / "m.json"), "--no-progress", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(blocker) in line, line
    assert (inputs / "file").read_text() == "a file where a folder must be"
    assert list((inputs / "folder").iterdir()) == []


def test_a_run_folder_under_a_file_is_one_line(inputs, capsys):
    (inputs / "file").write_text("")
    rc = cli.main(["train", "--arch", "mini_resnet", "--dataset", "digits:0-1", "--input-size",
                   "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress",
                   "--out", str(inputs / "file" / "run")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "file" in line, line


def test_value_and_key_errors_of_argument_handling_are_one_line(capsys):
    assert run_main(lambda argv: int(argv[0]), ["three"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "error: invalid literal for int() with base 10: 'three'")
    assert run_main(lambda argv: {"a": 1}[argv[0]], ["b"]) == 2
    assert _one_error_line(capsys.readouterr().err) == "error: b"


def test_a_multi_line_message_is_joined_into_one_line(capsys):
    def main(argv):
        raise UsageError("sha256 mismatch for x\n  expected: 00\n  actual:   ff")

    assert run_main(main, []) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "error: sha256 mismatch for x; expected: 00; actual:   ff")


class _Broken(torch.utils.data.Dataset):
    """Item 1 fails the way a bad input file does: ``kind`` says how."""

    def __init__(self, kind: str):
        self.kind = kind

    def __len__(self):
        return 2

    def __getitem__(self, i):
        if i == 1 and self.kind == "usage":
            raise UsageError("image 1 (b.png) is truncated; re-download it")
        if i == 1:
            b"\xff".decode("utf-8")       # UnicodeDecodeError: torch re-raises a RuntimeError
        return torch.zeros(1)


@pytest.mark.parametrize("kind, text", [
    ("usage", "error: image 1 (b.png) is truncated; re-download it"),
    ("decode", "can't decode byte 0xff")])
def test_an_error_from_a_dataloader_worker_is_one_line(capsys, kind, text):
    from robust_zoo.data.common import Loader

    def main(argv):
        for _ in Loader(_Broken(kind), batch_size=1, num_workers=1):
            pass

    assert run_main(main, []) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert text in line and "Traceback" not in line, line


def test_a_bug_keeps_its_traceback_and_help_exits_0(capsys):
    with pytest.raises(ZeroDivisionError):
        run_main(lambda argv: 1 // len(argv), [])
    assert cli.main(["viz", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: robust-zoo viz")


def test_every_program_runs_through_the_one_runner():
    """Each module with a parser builds it with ``console.ArgumentParser``, ends in
    ``main = command(_main)``, and no module but ``console`` writes an ``error:`` line."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "robust_zoo"
    programs = []
    for p in sorted(pkg.rglob("*.py")):
        src = p.read_text()
        tree = ast.parse(src)
        if p.name != "console.py":
            assert "error: " not in src, p
            assert "argparse.ArgumentParser(" not in src, p
        if any(isinstance(n, ast.FunctionDef) and n.name == "build_parser" for n in tree.body):
            programs.append(p.relative_to(pkg).as_posix())
            assert "main = command(_main)" in src, p
    assert programs == ["cli/commands.py", "cli/quickstart.py", "cli/viz.py", "evaluate/cli.py",
                        "train/cli.py", "transfer/__main__.py"]
