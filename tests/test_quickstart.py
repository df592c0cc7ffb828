"""``robust-zoo quickstart --fast`` end to end: offline, real training code, real data (sklearn's
digits), and the point of the zoo: the robust model survives an attack the standard one does not."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robust_zoo

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_outputs_load_and_robust_beats_standard(quickstart_fast):
    out = quickstart_fast
    for f in ("weights_manifest.json", "quickstart.png", "quickstart_synthesis.png", "results.json",
              "standard/model.safetensors", "robust/model.safetensors",
              "standard/training_curves.png", "robust/README.md", "robust/metrics.jsonl"):
        assert (out / f).is_file(), f
    manifest = json.loads((out / "weights_manifest.json").read_text())
    import jsonschema

    jsonschema.validate(manifest, json.loads(
        (ROOT / "robust_zoo" / "schema" / "manifest.schema.json").read_text()))
    names = [m["name"] for m in manifest["models"]]
    assert names == ["mini_resnet_linf_eps0", "mini_resnet_linf_eps32"]

    res = json.loads((out / "results.json").read_text())
    std, rob = res["rows"]
    assert std["clean"] > 90 and rob["clean"] > 90
    assert rob["pgd"] >= std["pgd"] + 20, res["rows"]
    assert rob["transfer_clean"] > 80 and std["transfer_clean"] > 80
    # the synthesis panel grows class-conditional seeds; the robust model's are recognised at
    # least as often as the blurred seeds they start from
    synth = res["synthesis"]
    assert synth["judge_recognised_percent"]["robust"] >= synth["seeds_judge_recognised_percent"]

    for entry, row in zip(manifest["models"], res["rows"]):
        # each run folder's own manifest loads too, and the loaded weights are the trained ones
        own = Path(row["run_dir"]) / "weights_manifest.json"
        model = robust_zoo.load(entry["name"], manifest=own)
        assert model.num_classes == 5 and model.entry.preprocessing["crop"] == 16
        # the training run's final evaluation (same PGD-20 attack, deterministic) agrees
        claimed = next(m for m in entry["metrics"] if m["name"] == "pgd_top1")
        assert claimed["value"] == pytest.approx(row["pgd"], abs=1e-3)
        assert claimed["eps"] == pytest.approx(32 / 255) and claimed["attack"]["steps"] == 20
        x = torch.rand(2, 3, 16, 16)
        with torch.no_grad():
            assert model(x).shape == (2, 5)


def test_quickstart_replaces_only_its_own_runs(tmp_path, capsys):
    from robust_zoo.cli import quickstart

    foreign = tmp_path / "out" / "standard"
    foreign.mkdir(parents=True)
    (foreign / "model.safetensors").write_bytes(b"someone else's")
    (foreign / "recipe.json").write_text('{"dataset": "imagenet"}')
    assert quickstart.main(["--out", str(tmp_path / "out")]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (foreign / "model.safetensors").exists()
    (foreign / "recipe.json").write_text('{"dataset": "digits:0-4"}')
    assert quickstart._is_quickstart_run(foreign)
