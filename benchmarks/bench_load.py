"""Warm-cache load time: robust_zoo.load vs the anchor (torchvision constructor + safetensors
``load_state_dict`` of the same weights), hash throughput of the content check, and
``import robust_zoo`` cost beyond ``import torch``.

    python benchmarks/bench_load.py [--arch resnet50] [--repeats 7] [--baseline DIR]

The checkpoint is a random-weight file in the upstream layout, served once by the loopback Hub
of the test suite; after that first load everything is warm (converted safetensors on disk, page
cache hot). Each timing is the median of ``--repeats`` runs in this process, after imports.
``--baseline DIR`` also times another checkout of robust_zoo (e.g. the previous release) in a
child process of the same run, alternating with this one, so both see the same machine state.
"""
from __future__ import annotations

import argparse
import json
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
            subprocess.run([sys.executable, "-c", stmt], check=True, cwd=ROOT)
            ts[k].append(time.perf_counter() - t)
    return statistics.median(ts["torch"]), statistics.median(ts["both"])


def measure(arch: str, repeats: int) -> dict:
    """Timings of the robust_zoo on sys.path (one child process per tree with --baseline)."""
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
    from robust_zoo.models import archs
    from zoo import manifest, publish_upstream

    entry, net = publish_upstream(server, arch)
    m = manifest(entry)
    t = time.perf_counter()
    robust_zoo.load(entry["name"], manifest=m, progress=False)
    cold = time.perf_counter() - t

    anchor_file = Path(tmp) / "anchor.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(anchor_file))

    def anchor():
        model = archs.get_arch(arch).build()
        model.load_state_dict(load_file(str(anchor_file)))
        return model.eval()

    def ours():
        return robust_zoo.load(entry["name"], manifest=m, progress=False)

    anchor(), ours()  # warm both code paths
    t_anchor = median_time(anchor, repeats)
    t_ours = median_time(ours, repeats)
    t_verify = median_time(lambda: robust_zoo.load(entry["name"], manifest=m, progress=False,
                                                   verify="always"), max(3, repeats // 2))
    server.stop()
    out = {"robust_zoo": robust_zoo.__file__, "cold": cold, "anchor": t_anchor, "auto": t_ours,
           "always": t_verify}
    conv = next((Path(tmp) / "rz" / "converted").glob("*.safetensors"))
    data = conv.read_bytes()
    out["file_mb"] = len(data) / 1e6
    import hashlib
    hashers = {"sha256": lambda: hashlib.sha256(data).digest()}
    try:
        import xxhash
        hashers["xxh3_128"] = lambda: xxhash.xxh3_128(data).digest()
    except ImportError:
        pass
    try:
        import blake3
        hashers["blake3"] = lambda: blake3.blake3(data).digest()
    except ImportError:
        pass
    out["hash_mb_s"] = {k: len(data) / 1e6 / median_time(f, 5) for k, f in hashers.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--baseline", help="another robust_zoo checkout to time in the same run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.arch, args.repeats)))
        return

    import torch

    def child(tree: Path) -> dict:
        env = dict(os.environ, PYTHONPATH=str(tree))
        r = subprocess.run([sys.executable, __file__, "--child", "--arch", args.arch,
                            "--repeats", str(args.repeats)], env=env, cwd=tree,
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    trees = {"this": ROOT}
    if args.baseline:
        trees = {"baseline": Path(args.baseline).resolve(), "this": ROOT}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for _ in range(2 if args.baseline else 1):       # alternate, so drifts hit both
        for k, tree in trees.items():
            runs[k].append(child(tree))
    imp_torch, imp_rz = import_cost(args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpu, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"arch: {args.arch}; repeats: {args.repeats} (median; best of the alternated runs)")
    res = {k: {f: min(r[f] for r in v) for f in ("cold", "anchor", "auto", "always")}
           for k, v in runs.items()}
    for k, r in res.items():
        print(f"[{k}] {runs[k][0]['robust_zoo']}")
        print(f"  first load (download + verify + convert): {r['cold']:.3f} s")
        print(f"  anchor  torchvision ctor + load_state_dict(safetensors): "
              f"{r['anchor'] * 1e3:.1f} ms")
        print(f"  robust_zoo.load (warm cache, verify=auto):   {r['auto'] * 1e3:.1f} ms  "
              f"ratio {r['auto'] / r['anchor']:.2f}x (target <= 0.35x)")
        print(f"  robust_zoo.load (warm cache, verify=always): {r['always'] * 1e3:.1f} ms  "
              f"ratio {r['always'] / r['anchor']:.2f}x")
    if "baseline" in res:
        b, t = res["baseline"], res["this"]
        print(f"warm auto, this / baseline: {t['auto'] / b['auto']:.2f}x (target <= 1.5x)")
    h = runs["this"][-1]["hash_mb_s"]
    print(f"hash throughput on the {runs['this'][-1]['file_mb']:.1f} MB converted file (1 core): "
          + ", ".join(f"{k} {v:.0f} MB/s" for k, v in h.items()))
    print(f"import torch: {imp_torch:.2f} s; import torch + robust_zoo: {imp_rz:.2f} s; "
          f"robust_zoo adds {imp_rz - imp_torch:+.3f} s")


if __name__ == "__main__":
    main()
