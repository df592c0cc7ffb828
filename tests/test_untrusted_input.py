"""Input from outside the package (manifests, export folders, weight files, the Hub's answers,
the user's own files) is validated before it is used, and nothing it drives can crash with a
traceback, write what was not validated or overwrite what the package did not write."""
from __future__ import annotations

import struct
import time

import pytest

from robust_zoo import validate
from robust_zoo.cli import commands as cli
from robust_zoo.hub.manifest import ManifestError, load_manifest


DEEP = 100_000      # far past the interpreter's recursion limit


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- JSON depth

def test_parsers_never_recurse_without_a_bound_manifest(tmp_path, capsys):
    """A manifest nested 100 000 levels deep is refused by every command that reads it: exit 2,
    one line naming the file, no RecursionError."""
    p = tmp_path / "deep.json"
    p.write_text('{"schema_version": 1, "models": [' + "[" * DEEP + "]" * DEEP + "]}")
    for argv in (["list"], ["info", "m"], ["download", "m"], ["verify"]):
        rc, _, err = _run([*argv, "--manifest", p], capsys)
        assert rc == 2 and str(p) in err and "levels deep" in err, err
        assert "Traceback" not in err and "Recursion" not in err
    with pytest.raises(ManifestError, match="over the limit of 64"):
        load_manifest(p)


def test_parsers_never_recurse_without_a_bound_export_config(tmp_path):
    import robust_zoo

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"robust_zoo": ' + "{\"a\": " * DEEP + "1"
                                          + "}" * DEEP + "}")
    with pytest.raises(ManifestError, match="config.json.*levels deep"):
        robust_zoo.load(f"local-dir:{tmp_path}")


def test_parsers_never_recurse_without_a_bound_safetensors_header(tmp_path):
    from robust_zoo.formats.safetensors_file import read_weights

    header = ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
              + "[" * DEEP + "]" * DEEP + "}}").encode()
    p = tmp_path / "deep.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(validate.CheckpointFormatError, match="header.*levels deep"):
        read_weights(p)


def test_json_depth_is_measured_outside_strings_in_linear_time():
    assert validate.json_depth('{"a": [1, {"b": "[[[[{{{"}], "c": "\\"]]"}') == 3
    assert validate.load_json('{"k": "' + "[" * 1000 + '"}', "doc") == {"k": "[" * 1000}
    assert validate.load_json("[" * 64 + "]" * 64, "doc") is not None
    with pytest.raises(validate.JSONError, match="doc nests arrays/objects 65 levels"):
        validate.load_json("[" * 65 + "]" * 65, "doc")
    with pytest.raises(validate.JSONError, match="doc is not valid JSON"):
        validate.load_json('{"a": 1', "doc")
    # hostile text of megabytes (a quadratic scan would take hours): unterminated strings full
    # of escapes, brackets, both
    for hostile in ('"\\"' * (1 << 20), "[" * (4 << 20), '["' * (2 << 20)):
        t0 = time.perf_counter()
        with pytest.raises(validate.JSONError):
            validate.load_json(hostile, "hostile")
        assert time.perf_counter() - t0 < 5


def test_nested_cache_record_is_treated_as_absent(tmp_path):
    from robust_zoo.hub import records

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    where = records.record_path(f)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("[" * DEEP + "]" * DEEP)
    assert records.read(f) is None
