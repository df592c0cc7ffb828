"""``robust-zoo``: list | info | download | verify | convert | export | pin | jobs, and the
quickstart, train, evaluate, transfer and viz programs under one name.

Exit codes: 0 success; 1 a check found a problem (``verify``: a corrupted file; ``pin``: the Hub
contradicts a pinned hash; ``jobs``: a run failed); 2 bad input or an unavailable source, with a
message that says what and what is valid (never a traceback).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from ..console import ArgumentParser, command, report_error
from ..errors import RobustZooError, UsageError
from ..naming import arg_type, parse_eps


def _manifest_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help="manifest file or folder (default: $ROBUST_ZOO_MANIFEST or "
                   "the zoo's own)")


def _cached(entry) -> bool:
    from ..hub import factory as api, sources as hub

    try:
        api.load_state_dict(entry, progress=False, local_files_only=True, verify="auto")
        return True
    except (hub.NotCachedError, hub.SourceUnavailableError, hub.IntegrityError):
        return False


def cmd_list(args) -> int:
    from ..hub.manifest import load_manifest

    entries = load_manifest(args.manifest).filter(args.arch, args.norm, args.eps)
    if args.json:
        print(json.dumps([e.name for e in entries], indent=1))
        return 0
    rows = [(e.name, e.arch, e.norm, e.eps_display,
             f"{e.clean_top1:.2f}" if e.clean_top1 is not None else "-") for e in entries]
    head = ("name", "arch", "norm", "eps", "top-1")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    for r in sorted(rows):
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    print(f"{len(rows)} models")
    return 0


def cmd_info(args) -> int:
    from ..hub.factory import get_entry
    from ..hub.publish import model_card

    entry = get_entry(args.name, manifest=args.manifest)
    if args.json:
        print(json.dumps(entry.to_dict(), indent=2))
    else:
        print(model_card(entry))
        for f in entry.files:
            print(f"file: {f.describe()}  format={f.format}  sha256={f.sha256 or 'unpinned'}  "
                  f"size={f.size or '?'}")
        try:
            cached = _cached(entry)
        except RobustZooError as e:  # a cached file that cannot be read counts as not cached
            cached = False
            print(f"cache: {str(e).splitlines()[0]}")
        print(f"cached: {'yes' if cached else 'no'}")
    return 0


def cmd_download(args) -> int:
    from ..hub.factory import download
    from ..hub.manifest import load_manifest

    names = load_manifest(args.manifest).names() if args.all else args.names
    if not names:
        raise UsageError("download: name one or more models, or pass --all")
    for name, path in download(names, manifest=args.manifest, progress=not args.quiet).items():
        print(f"{name}: {path}")
    return 0


def cmd_verify(args) -> int:
    """Re-hash every cached file of the named (default: all) entries against its pin, and say
    per entry what was hashed and against what."""
    from ..hub.cache import cleanup_stale
    from ..hub.manifest import load_manifest

    m = load_manifest(args.manifest)
    bad = unverifiable = 0
    for entry in [m.get(n) for n in args.names] if args.names else m:
        cleanup_stale()
        status, lines = _verify_entry(entry)
        bad += status.startswith(("MISMATCH", "FAILED"))
        unverifiable += status.startswith("UNVERIFIABLE")
        if args.names or status != "not cached":
            print(f"{entry.name}: {status}" + "".join(f"\n  {ln}" for ln in lines))
    if not bad and not unverifiable:
        print("all cached files verified")
        return 0
    if bad:
        print(f"{bad} entr{'y' if bad == 1 else 'ies'} failed verification (corrupted files "
              "were removed)")
    if unverifiable:
        print(f"{unverifiable} entr{'y' if unverifiable == 1 else 'ies'} could not be verified "
              "(a converted copy whose source is not cached)")
    return 1


def _verify_entry(entry) -> tuple[str, list[str]]:
    """(status, what was hashed against what) of one entry's cached files."""
    from ..errors import RobustZooError
    from ..hub import sources
    from ..hub.loading import verify_spec

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checks = [c for c in (verify_spec(entry, spec) for spec in entry.files)
                      if c.status != "not cached"]
    except sources.IntegrityError as e:
        return f"MISMATCH (deleted)\n{e}", []
    except RobustZooError as e:  # a bad file or entry: report it and go on to the next
        return f"FAILED ({type(e).__name__}: {e})", []
    lines = [c.describe() for c in checks]
    if not checks:
        return "not cached", lines
    if any(c.status == "unverifiable" for c in checks):
        return "UNVERIFIABLE", lines
    repairs = [str(w.message).splitlines()[0] for w in caught
               if issubclass(w.category, UserWarning)
               and not issubclass(w.category, sources.UnpinnedFileWarning)]
    return ("ok" if not repairs else "repaired: " + "; ".join(repairs)), lines


def cmd_convert(args) -> int:
    from ..models.archs import get_arch
    from ..formats.upstream import from_robustness, read_checkpoint
    from ..fileio import sha256_file
    from ..formats.safetensors_file import save_weights

    ckpt, out = Path(args.ckpt), Path(args.out)
    if not ckpt.is_file():
        raise UsageError(f"convert: {ckpt} does not exist (give a robustness .ckpt file)")
    if out.resolve() == ckpt.resolve() or (out.exists() and out.samefile(ckpt)):
        raise UsageError(f"--out {out} is the checkpoint being converted ({ckpt}); write the "
                         "safetensors file to another path")
    source_sha = sha256_file(ckpt)
    conv = from_robustness(read_checkpoint(ckpt), args.arch, source=str(ckpt))
    num_classes = int(conv.state_dict[get_arch(conv.arch).head + ".weight"].shape[0])
    save_weights(conv.state_dict, args.out, arch=conv.arch, num_classes=num_classes,
                 mean=conv.mean, std=conv.std, source_sha256=source_sha, source_file=ckpt.name)
    sha = sha256_file(args.out)
    print(f"{args.out}: {conv.arch}, {num_classes} classes, "
          f"{'DummyModel-wrapped, ' if conv.wrapped else ''}epoch {conv.epoch}\nsha256 {sha}")
    return 0


def cmd_export(args) -> int:
    from ..hub.publish import export

    entry = export(args.name, args.out, manifest=args.manifest, repo_id=args.repo_id,
                   progress=not args.quiet, force=args.force)
    print(f"wrote {args.out}/model.safetensors, config.json, README.md")
    print("manifest entry for the uploaded repo:")
    print(json.dumps(entry, indent=2))
    return 0


def cmd_pin(args) -> int:
    from ..hub.pin import pin_manifest

    changed = pin_manifest(args.manifest, args.out, revision=args.revision)
    print(f"pinned {changed} file(s); wrote {args.out or 'the manifest in place'}")
    return 0


def cmd_jobs(args) -> int:
    from ..launch import jobs

    out = Path(args.out)
    if not jobs.jobs_dir(out).is_dir():
        raise UsageError(f"{out} holds no submissions (no {jobs.JOBS_DIR} folder): pass the "
                         "--out folder of a run started with --launcher")
    st = jobs.status(out)
    if args.json:
        print(json.dumps({"counts": st.counts(), "runs": [
            {"key": r.key, "state": r.state, "job_id": r.job_id, "detail": r.detail,
             "attempts": r.attempts, "restarts": r.restarts, "run_dir": str(r.run_dir),
             "log": str(r.log) if r.log else None} for r in st.runs]}, indent=1))
    else:
        print(f"{out}: {st.summary()}")
        for r in st.runs:
            if r.state == "done" and not args.all:
                continue
            why = f" ({r.detail})" if r.detail else ""
            again = f", requeued {r.restarts}x" if r.restarts else ""
            print(f"  {r.state:<8} {r.key}  job {r.job_id or '-'}{why}{again}  log: {r.log or '-'}")
            if r.state == "failed" and r.log_tail:
                print("\n".join(f"      | {ln}" for ln in r.log_tail.splitlines()))
    table = None if args.json else jobs.aggregator(out)
    if table:                           # the program's tables, from the finished run folders
        import importlib

        module, _, fn = table.partition(":")
        for line in getattr(importlib.import_module(module), fn)(out) or []:
            print(line)
    return 1 if st.counts()["failed"] else 0


# Subcommands that are whole programs of their own (each also runs as ``python -m MODULE``):
# their arguments go to that program's own parser untouched.
PROGRAMS = {
    "quickstart": ("robust_zoo.cli.quickstart", "offline demo: train, attack, load and "
                   "transfer"),
    "train": ("robust_zoo.train.cli", "train a model from a recipe (python -m robust_zoo.train)"),
    "evaluate": ("robust_zoo.evaluate.cli", "clean and PGD/AutoAttack accuracy vs the claimed "
                 "metrics (python -m robust_zoo.evaluate)"),
    "transfer": ("robust_zoo.transfer.__main__", "fixed-feature / full-network transfer "
                 "(python -m robust_zoo.transfer)"),
    "viz": ("robust_zoo.cli.viz", "saliency, class synthesis, inversion, feature pictures"),
}


def run_program(name: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(PROGRAMS[name][0])
    return module.main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="robust-zoo", description="Adversarially robust ImageNet models "
                       "(Salman et al. 2020): list, fetch, verify, convert, export.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list zoo models")
    s.add_argument("--arch")
    s.add_argument("--norm", choices=["l2", "linf"])
    s.add_argument("--eps", type=arg_type(parse_eps, what="--eps"), help="e.g. 3 or 4/255")
    s.add_argument("--json", action="store_true")
    _manifest_arg(s)
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="model card, files and cache state of one model")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    _manifest_arg(s)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("download", help="fetch, verify and convert models for offline use")
    s.add_argument("names", nargs="*")
    s.add_argument("--all", action="store_true")
    s.add_argument("--quiet", action="store_true")
    _manifest_arg(s)
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("verify", help="re-hash cached files against the manifest")
    s.add_argument("names", nargs="*")
    _manifest_arg(s)
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("convert", help="robustness .ckpt -> safetensors (no code is unpickled)")
    s.add_argument("ckpt")
    s.add_argument("--arch", required=True)
    s.add_argument("--out", required=True, help="the safetensors file to write (never the "
                   "checkpoint itself)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="write a Hub-ready folder: model.safetensors, config.json, "
                       "README.md")
    s.add_argument("name")
    s.add_argument("out")
    s.add_argument("--repo-id", help="the Hub repo it will be uploaded to (for the card)")
    s.add_argument("--force", action="store_true", help="replace a README.md or config.json in "
                   "OUT that export did not write (a folder holding the source or another "
                   "model is refused regardless)")
    s.add_argument("--quiet", action="store_true")
    _manifest_arg(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("pin", help="fill sha256/size/commit of Hub files from the Hub's API")
    s.add_argument("--revision", help="pin to this branch/commit (default: each file's own)")
    s.add_argument("--out", help="write here instead of in place")
    _manifest_arg(s)
    s.set_defaults(func=cmd_pin)

    s = sub.add_parser("jobs", help="where the runs of a --launcher slurm (or local) sweep, "
                       "evaluation or regeneration stand; exit 1 if any failed")
    s.add_argument("out", help="the program's --out folder (it holds .jobs/)")
    s.add_argument("--all", action="store_true", help="list finished runs too")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_jobs)

    for name, (_, help_text) in PROGRAMS.items():
        sub.add_parser(name, help=f"{help_text} (options: robust-zoo {name} --help)",
                       add_help=False)
    return p


def _main(argv: list[str]) -> int:
    if argv and argv[0] in PROGRAMS:
        return run_program(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from ..validate import IntegrityError

    try:
        return args.func(args)
    except IntegrityError as e:    # a check found a corrupted file: exit 1 (module docstring)
        report_error(e)
        return 1


main = command(_main)
