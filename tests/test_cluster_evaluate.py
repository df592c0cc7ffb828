"""``python -m robust_zoo.evaluate NAME… | --all --out DIR``: one run per model, each writing its
own result, and one table against the claims, aggregated by one process (the command, its next
run, or ``robust-zoo jobs OUT``). The same runs as a SLURM job array: test_cluster_train.py."""
from __future__ import annotations

import json

import pytest

from robust_zoo.cli.commands import main as robust_zoo_main
from robust_zoo.evaluate import main

from zoo import image_tree, mini_model, safetensors_entry, write_manifest

ARGS = ["--steps", "2", "--workers", "0", "--autoattack", "off", "--device", "cpu",
        "--batch-size", "8", "--no-progress"]


@pytest.fixture
def two_models(tmp_path):
    """Two mini ResNets as manifest entries, one claiming what it measures (found by a first
    evaluation) and one claiming 99% clean; a 12-image tree of 3 classes."""
    data = image_tree(tmp_path / "val", {"": 4}, [(200, 40, 40), (40, 200, 40), (40, 40, 200)])
    entries = [safetensors_entry(tmp_path, f"mini_{k}", mini_model(seed=k).model, "mini_resnet",
                                 norm="l2", eps=0.25, num_classes=3,
                                 preprocessing={"resize": 16, "crop": 16}, metrics=[])
               for k in (1, 2)]
    manifest = write_manifest(tmp_path / "zoo.json", *entries)
    return manifest, data, entries


def test_many_models_one_result_each_one_table_and_a_rerun_skips_them(two_models, tmp_path,
                                                                       capsys):
    manifest, data, entries = two_models
    probe = tmp_path / "probe"
    assert main(["mini_1", "--manifest", str(manifest), "--data", str(data), "--out",
                 str(probe), *ARGS]) == 0
    measured = json.loads((probe / "mini_1" / "result.json").read_text())["metrics"]
    entries[0]["metrics"] = [{"name": "clean_top1", "value": measured["clean_top1"]},
                             {"name": "pgd_top1", "value": measured["pgd_top1"], "norm": "l2",
                              "eps": 0.25}]
    entries[1]["metrics"] = [{"name": "clean_top1", "value": 99.0}]
    write_manifest(manifest, *entries)
    capsys.readouterr()

    out = tmp_path / "evals"
    argv = ["--all", "--manifest", str(manifest), "--data", str(data), "--out", str(out), *ARGS]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["model", "n", "threat"]
    rows = {line.split()[0]: line for line in table[1:-1]}
    assert sorted(rows) == ["mini_1", "mini_2"]
    assert rows["mini_1"].rstrip().endswith("ok") and rows["mini_2"].rstrip().endswith("DIFFERS")
    assert "(99.00 DIFFERS)" in rows["mini_2"]
    assert table[-1] == "2 models, 1 differ from their claims"
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results] == ["mini_1", "mini_2"]
    one = json.loads((out / "mini_1" / "result.json").read_text())
    assert one["metrics"] == measured and one["n"] == 12 and one["clean_acc"] is not None

    stamp = (out / "mini_1" / "result.json").stat().st_mtime_ns
    assert main(argv) == 0                           # finished runs are not run again
    assert capsys.readouterr().out.splitlines() == table
    assert (out / "mini_1" / "result.json").stat().st_mtime_ns == stamp
    assert robust_zoo_main(["jobs", str(out)]) == 0  # the ledger's table function
    said = capsys.readouterr().out
    assert "2 done" in said and "\n".join(table) in said


def test_one_model_without_out_prints_its_report_as_before(two_models, tmp_path, capsys):
    manifest, data, _ = two_models
    assert main(["mini_1", "--manifest", str(manifest), "--data", str(data), *ARGS]) == 0
    report = capsys.readouterr().out
    assert report.startswith("mini_1  on ") and "clean_top1" in report
    assert not (tmp_path / "mini_1").exists()
