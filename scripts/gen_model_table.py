"""Write docs/models.md, the model tables, from the manifest (and the list of RobustBench models
left out, from scripts/build_manifest.py).

    python scripts/gen_model_table.py          # rewrite
    python scripts/gen_model_table.py --check  # exit 1 if docs/models.md is stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_manifest import LEFT_OUT  # noqa: E402
from robust_zoo.hub.manifest import Entry, entry_family, load_manifest  # noqa: E402

HOSTS = {"drive.usercontent.google.com": "Google Drive", "github.com": "GitHub release",
         "download.pytorch.org": "download.pytorch.org"}

INTRO = """\
Generated from `weights_manifest.json` by `scripts/gen_model_table.py`; do not edit.

Load any model by its name: `robust_zoo.load("Singh2023Revisiting_ConvNeXt-T-ConvStem")`.
RobustBench's models keep their RobustBench ids as names. Their torch.hub entry points
(`hubconf.py`) are the same names with every `-` written `_`
(`torch.hub.load(repo, "Singh2023Revisiting_ConvNeXt_T_ConvStem")`), and `robust_zoo.load`
accepts that spelling too. RobustBench's `Salman2020Do_*` ids are aliases of the Salman et al.
entries: they load the same entry (one file), and `robust_zoo.list_models()` lists the entry once.

Accuracies are as claimed by the source named in each entry (`robust-zoo info NAME` shows it):
RobustBench's model_info files (clean and AutoAttack on 5,000 ImageNet val images; ImageNet-C
and ImageNet-3DCC accuracy for corruptions), the paper README tables for the Salman et al. and
Peng et al. models. "pinned": the manifest holds the file's sha256. An unpinned URL file has
its sha256 recorded on first download and checked from then on; an unpinned Hub file is checked
against the sha256 the Hub reports; `robust-zoo pin` writes hashes into a manifest.
Licences are as RobustBench's LICENSE or the model's repository states them; "unknown" where
neither states one (torchvision's weights)."""


def _pct(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _source(e: Entry) -> str:
    """Where the files come from, in order of preference."""
    out = []
    for f in e.files:
        if f.repo_id:
            out.append(f"HF `{f.repo_id}`")
        elif f.url:
            host = urlsplit(f.url).hostname or ""
            out.append(HOSTS.get(host, host))
        else:
            out.append("local path")
    return " + ".join(out)


def _pinned(e: Entry) -> str:
    return "yes" if e.files[0].sha256 else "no"


def _value(e: Entry, name: str, **match) -> float | None:
    m = e.metric(name, **match)
    return None if m is None else m["value"]


def _rb_rows(m, threat: str) -> list[tuple[str, Entry]]:
    """(RobustBench id, entry) of every model on leaderboard ``threat``, aliases included."""
    rows = {(r["robustbench_id"], e.name): e for e in m for r in e.metrics
            if r.get("threat_model") == threat and r.get("robustbench_id")}
    return sorted(((rb, e) for (rb, _), e in rows.items()), key=lambda r: r[0].lower())


def _name(rb_id: str, e: Entry) -> str:
    return f"`{rb_id}`" if rb_id == e.name else f"`{rb_id}` (alias of `{e.name}`)"


def robustbench_tables(m) -> list[str]:
    lines = ["## RobustBench ImageNet, Linf ε = 4/255", "",
             "| name | arch | family | clean % | AutoAttack % | licence | weights from | pinned |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rb, e in _rb_rows(m, "Linf"):
        aa = e.metric("autoattack_top1", robustbench_id=rb)
        ext = f" (external {aa['external']:.2f})" if aa and aa.get("external") else ""
        lines.append(f"| {_name(rb, e)} | {e.arch} | {entry_family(e)} | "
                     f"{_pct(_value(e, 'clean_top1', robustbench_id=rb, threat_model='Linf'))} | "
                     f"{_pct(aa and aa['value'])}{ext} | {e.license or 'unknown'} | "
                     f"{_source(e)} | {_pinned(e)} |")
    lines += ["", "## RobustBench ImageNet, common corruptions", "",
              "| name | arch | family | clean % | ImageNet-C % | ImageNet-3DCC % | licence | "
              "weights from | pinned |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rb, e in _rb_rows(m, "corruptions"):
        clean = _value(e, "clean_top1", robustbench_id=rb, threat_model="corruptions")
        lines.append(f"| {_name(rb, e)} | {e.arch} | {entry_family(e)} | {_pct(clean)}"
                     f" | {_pct(_value(e, 'corruptions_top1', robustbench_id=rb))} | "
                     f"{_pct(_value(e, 'corruptions_3d_top1', robustbench_id=rb))} | "
                     f"{e.license or 'unknown'} | {_source(e)} | {_pinned(e)} |")
    return lines + [""]


def other_tables(m) -> list[str]:
    """Entries on no RobustBench leaderboard: Peng et al.'s Hub models, Salman et al.'s."""
    on_rb = {e.name for e in m for r in e.metrics if r.get("robustbench_id")}
    peng = [e for e in m if e.paper == "Peng2023Robust" and e.name not in on_rb]
    lines = ["## Peng et al. 2023 (Hugging Face Hub), Linf ε = 4/255", "",
             "Their RaWRN-101-2, `Peng2023Robust`, is on RobustBench's list above (its Hub file "
             "first, RobustBench's Drive copy second).", "",
             "| name | arch | family | clean % | AutoAttack % | licence | weights from | pinned |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| `{e.name}` | {e.arch} | {entry_family(e)} | {_pct(e.clean_top1)} | "
              f"{_pct(_value(e, 'autoattack_top1'))} | {e.license or 'unknown'} | {_source(e)} | "
              f"{_pinned(e)} |" for e in sorted(peng, key=lambda e: e.name)]
    lines.append("")
    for norm, title in (("l2", "L2-robust (ε = L2 radius on [0, 1] images)"),
                        ("linf", "Linf-robust (ε in /255)")):
        lines += [f"## Salman et al. 2020, {title}", "",
                  "| name | arch | ε | top-1 % | AutoAttack % | licence | weights from | pinned |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for e in sorted(m.filter(norm=norm, paper="Salman2020Do"), key=lambda e: (e.arch, e.eps)):
            lines.append(f"| `{e.name}` | {e.arch} | {e.eps_display} | {_pct(e.clean_top1)} | "
                         f"{_pct(_value(e, 'autoattack_top1'))} | {e.license or 'unknown'} | "
                         f"{_source(e)} | {_pinned(e)} |")
        lines.append("")
    return lines


def render() -> str:
    m = load_manifest()
    lines = ["# Models", "", INTRO, "", f"{len(m)} models.", ""]
    lines += robustbench_tables(m) + other_tables(m)
    lines += ["## RobustBench ImageNet models left out", ""]
    lines += [f"- `{name}`: {why}." for name, why in sorted(LEFT_OUT.items())]
    return "\n".join(lines) + "\n"


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
