"""The torchrun layer shared by training, evaluation and transfer."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robust_zoo.engine import distributed

ROOT = Path(__file__).resolve().parents[1]

# A rank that joins the group, then imports torchvision (as every robust_zoo program does after
# setup), runs a collective and leaves: the group's gloo threads must be gone after shutdown(),
# or they outlive the interpreter and abort the process at exit now and then.
_RANK = textwrap.dedent("""
    import json, os, sys
    from robust_zoo.engine import distributed
    d = distributed.setup("cpu")
    import torchvision.models  # noqa: F401
    total = distributed.all_reduce_sum(d, [d.rank + 1, 1])
    gathered = distributed.all_gather(d, d.rank)
    shared = distributed.broadcast(d, {"from": d.rank})
    distributed.shutdown()
    threads = sorted(open(f"/proc/self/task/{t}/comm").read().strip()
                     for t in os.listdir("/proc/self/task"))
    with open(os.path.join(sys.argv[1], f"rank{d.rank}.json"), "w") as f:
        json.dump({"total": total, "gathered": gathered, "shared": shared,
                   "threads": threads, "owns": d.owns_group}, f)
""")


def test_world_of_one_has_no_group():
    d = distributed.setup("cpu")
    assert (d.rank, d.world_size, d.enabled, d.is_main, d.owns_group) == (0, 1, False, True, False)
    assert distributed.all_reduce_sum(d, [2, 3]) == [2.0, 3.0]
    assert distributed.all_gather(d, "x") == ["x"]
    assert distributed.broadcast(d, 7) == 7
    distributed.cleanup(d)       # nothing to end, and no error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_two_ranks_collectives_and_clean_teardown(tmp_path, subprocess_env):
    script = tmp_path / "rank.py"
    script.write_text(_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    env = dict(subprocess_env, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["total"] == [3.0, 2.0]
        assert r["gathered"] == [0, 1]
        assert r["shared"] == {"from": 0}
        assert r["owns"] is True
        assert not [t for t in r["threads"] if "gloo" in t], r["threads"]
