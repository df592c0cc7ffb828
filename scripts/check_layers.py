"""Check that robust_zoo's modules import only downward (robust_zoo/_layers.py, described in
docs/architecture.md).

Every import in the package counts, module level or inside a function. An import of a module of
a higher layer, an import of the package root from inside the package (its lazy attributes
reach any layer), and any import cycle are errors.

    python scripts/check_layers.py            # exit 1 and list the offenders
    python scripts/check_layers.py --graph    # print who imports whom, by layer
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "robust_zoo"

sys.path.insert(0, str(ROOT))
from robust_zoo._layers import LAYERS, layer_of as _layer_of  # noqa: E402  (the one table)


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(mod: str) -> int:
    i = _layer_of(mod)
    if i < 0:
        raise SystemExit(f"scripts/check_layers.py: module robust_zoo.{mod} has no layer; add "
                         "it to LAYERS in robust_zoo/_layers.py")
    return i


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py")) if module_name(p)}


def imports_of(mod: str, path: Path, known: set[str]) -> set[str]:
    """Package-internal modules ``mod`` imports ("" for the package root)."""
    pkg_parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "robust_zoo" or a.name.startswith("robust_zoo."):
                    out.add(a.name.removeprefix("robust_zoo").lstrip("."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:len(pkg_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "robust_zoo"
                                  or node.module.startswith("robust_zoo.")):
                target = node.module.removeprefix("robust_zoo").lstrip(".")
            else:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                out.add(sub if sub in known else target)
    out.discard(mod)
    return out


def check() -> tuple[list[str], dict[str, set[str]]]:
    mods = modules()
    graph = {m: imports_of(m, p, set(mods)) for m, p in mods.items()}
    problems = []
    for m, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if dep == "":
                problems.append(f"robust_zoo.{m} imports the package root (import the module "
                                "that defines the name instead)")
            elif dep not in mods:
                problems.append(f"robust_zoo.{m} imports robust_zoo.{dep}, which does not exist")
            elif layer_of(dep) > layer_of(m):
                problems.append(f"robust_zoo.{m} ({LAYERS[layer_of(m)][0]}) imports "
                                f"robust_zoo.{dep} ({LAYERS[layer_of(dep)][0]}), a higher layer")
    # cycles (Tarjan's strongly connected components)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                problems.append("import cycle: " + " → ".join(f"robust_zoo.{c}"
                                                              for c in sorted(comp)))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return problems, graph


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", action="store_true", help="print the import graph by layer")
    args = p.parse_args(argv)
    problems, graph = check()
    if args.graph:
        for i, (name, _, _) in enumerate(LAYERS):
            print(f"[{name}]")
            for m in sorted(g for g in graph if g and layer_of(g) == i):
                deps = sorted(d for d in graph[m] if d)
                print(f"  {m} -> {', '.join(deps) or '-'}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
