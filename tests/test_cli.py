"""Every command on bad input: a message that says what is wrong, exit 2, never a traceback."""
from __future__ import annotations

import pytest

from robust_zoo.models import archs

from robust_zoo.cli import commands as cli

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
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a)[:60])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv):
    (tmp_path / "garbage.ckpt").write_bytes(b"this is not a checkpoint")
    net = archs.build("mini_resnet", 2)
    write_manifest(tmp_path / "m.json", safetensors_entry(tmp_path, "mini_l2_eps1", net,
                                                          "mini_resnet", eps=1.0,
                                                          num_classes=2))
    make_image_folder(tmp_path, classes=2, per_class=(2, 2), size=16)
    try:
        rc = cli.main([a.format(tmp=tmp_path) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.strip(), err
