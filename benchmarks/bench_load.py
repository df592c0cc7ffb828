"""Warm-cache load time: robust_zoo.load vs the anchor (torchvision constructor + safetensors
``load_state_dict`` of the same weights), and ``import robust_zoo`` cost beyond ``import torch``.

    python benchmarks/bench_load.py [--arch resnet50] [--repeats 7]

The checkpoint is a random-weight file in the upstream layout, served once by the loopback Hub
of the test suite; after that first load everything is warm (converted safetensors on disk, page
cache hot). Each timing is the median of ``--repeats`` runs in this process, after imports.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def import_cost(repeats: int) -> tuple[float, float]:
    """Median wall time of fresh interpreters importing torch, and torch + robust_zoo; the two
    are interleaved so that machine load drifts affect both alike."""
    stmts = {"torch": "import torch", "both": "import torch, robust_zoo"}
    ts: dict[str, list[float]] = {k: [] for k in stmts}
    for _ in range(repeats):
        for k, stmt in stmts.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], check=True)
            ts[k].append(time.perf_counter() - t)
    return statistics.median(ts["torch"]), statistics.median(ts["both"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    os.environ.update(ROBUST_ZOO_CACHE=f"{tmp}/rz", HF_HUB_CACHE=f"{tmp}/hf",
                      HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")
    from hubserver import HubServer

    server = HubServer().start()
    os.environ["HF_ENDPOINT"] = server.url
    import torch
    import torchvision  # noqa: F401  (imported by both paths; keep it out of the timings)
    from safetensors.torch import load_file, save_file

    import robust_zoo
    from robust_zoo import archs
    from zoo import manifest, publish_upstream

    torch.set_num_threads(torch.get_num_threads())
    entry, net = publish_upstream(server, args.arch)
    m = manifest(entry)
    t = time.perf_counter()
    robust_zoo.load(entry["name"], manifest=m, progress=False)
    cold = time.perf_counter() - t

    anchor_file = Path(tmp) / "anchor.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(anchor_file))

    def anchor():
        model = archs.get_arch(args.arch).build()
        model.load_state_dict(load_file(str(anchor_file)))
        return model.eval()

    def ours():
        return robust_zoo.load(entry["name"], manifest=m, progress=False)

    anchor(), ours()  # warm both code paths
    t_anchor = median_time(anchor, args.repeats)
    t_ours = median_time(ours, args.repeats)
    t_verify = median_time(lambda: robust_zoo.load(entry["name"], manifest=m, progress=False,
                                                   verify="always"), max(3, args.repeats // 2))
    server.stop()
    imp_torch, imp_rz = import_cost(args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpu, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"arch: {args.arch}; repeats: {args.repeats} (median)")
    print(f"first load (download + verify + convert): {cold:.3f} s")
    print(f"anchor  torchvision ctor + load_state_dict(safetensors): {t_anchor * 1e3:.1f} ms")
    print(f"robust_zoo.load (warm cache, verify=auto):              {t_ours * 1e3:.1f} ms  "
          f"ratio {t_ours / t_anchor:.2f}x (target <= 1.15x)")
    print(f"robust_zoo.load (warm cache, verify=always, re-hash):   {t_verify * 1e3:.1f} ms  "
          f"ratio {t_verify / t_anchor:.2f}x")
    print(f"import torch: {imp_torch:.2f} s; import torch + robust_zoo: {imp_rz:.2f} s; "
          f"robust_zoo adds {imp_rz - imp_torch:+.3f} s")


if __name__ == "__main__":
    main()
