"""Write docs/models.md, the model table, from the manifest.

    python scripts/gen_model_table.py          # rewrite
    python scripts/gen_model_table.py --check  # exit 1 if docs/models.md is stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robust_zoo.hub.manifest import load_manifest  # noqa: E402


def render() -> str:
    m = load_manifest()
    lines = ["# Models", "",
             "Generated from `weights_manifest.json` by `scripts/gen_model_table.py`; do not edit.",
             "Clean top-1 is ImageNet val as claimed by the source named in each entry "
             "(`robust-zoo info NAME`). AutoAttack numbers are RobustBench's (5,000 val images).",
             "", f"{len(m)} models.", ""]
    for norm, title in (("l2", "L2-robust (ε = L2 radius on [0, 1] images)"),
                        ("linf", "Linf-robust (ε in /255)")):
        lines += [f"## {title}", "",
                  "| name | arch | ε | top-1 % | AutoAttack % | sha256 pinned |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for e in sorted(m.filter(norm=norm), key=lambda e: (e.arch, e.eps)):
            aa = e.metric("autoattack_top1")
            lines.append(f"| `{e.name}` | {e.arch} | {e.eps_display} | "
                         f"{'%.2f' % e.clean_top1 if e.clean_top1 is not None else '–'} | "
                         f"{'%.2f' % aa['value'] if aa else '–'} | "
                         f"{'yes' if e.files[0].sha256 else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    target = ROOT / "docs" / "models.md"
    text = render()
    if ap.parse_args().check:
        ok = target.exists() and target.read_text() == text
        print("docs/models.md up to date" if ok else "docs/models.md is stale: run "
              "python scripts/gen_model_table.py")
        return 0 if ok else 1
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
