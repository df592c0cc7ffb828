"""Property tests (hypothesis): the parsers of outside input (manifests, export configs, ε,
revisions, safetensors headers) give a valid value or their own error, whatever they are fed."""
from __future__ import annotations

import json
import math
import os
import struct

import pytest
import torch

from robust_zoo import validate
from robust_zoo.errors import RobustZooError
from robust_zoo.formats.safetensors_file import read_weights
from robust_zoo.hub.manifest import parse_manifest
from zoo import manifest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=20)
field_values = (st.none() | st.booleans() | st.integers(-5, 2000) | st.floats()
                | st.sampled_from(["resnet18", "l2", "linf", "4/255", "../x", "main", "a" * 64,
                                   "org/repo", "", "nan", "1e309", "3"]) | st.text(max_size=12)
                | st.lists(st.floats(), max_size=4))


def _entry_like():
    return {"name": "m", "arch": "resnet18", "norm": "l2", "eps": 3,
            "files": [{"format": "robustness-ckpt", "repo_id": "org/repo", "filename": "a.ckpt",
                       "revision": "main", "sha256": None}]}


@settings(max_examples=300, deadline=None)
@given(top=st.dictionaries(st.sampled_from(["name", "arch", "norm", "eps", "num_classes",
                                            "files", "preprocessing", "recipe"]), field_values),
       more=st.dictionaries(st.sampled_from(["metrics", "license", "citation", "description",
                                             "recipe"]), json_values),
       file=st.dictionaries(st.sampled_from(["format", "repo_id", "filename", "revision",
                                             "sha256", "size", "url", "path"]), field_values),
       raw=json_values)
def test_manifest_parser_gives_a_manifest_or_its_own_error(top, more, file, raw):
    entry = _entry_like()
    entry.update(top)
    entry.update(more)
    if isinstance(entry.get("files"), list) and entry["files"] and \
            isinstance(entry["files"][0], dict):
        entry["files"] = [dict(entry["files"][0], **file)]
    for data in (manifest(entry), {"schema_version": 1, "models": raw}, raw):
        try:
            m = parse_manifest(data)
        except RobustZooError:
            continue
        for e in m:
            assert e.num_classes >= 1 and e.eps >= 0 and e.files
            for f in e.files:
                assert f.sha256 is None or len(f.sha256) == 64
                if f.revision is not None:
                    assert ".." not in f.revision


@settings(max_examples=300, deadline=None)
@given(rz=st.dictionaries(st.sampled_from(["name", "arch", "norm", "eps", "num_classes",
                                           "preprocessing", "sha256", "size"]), field_values),
       pre=st.dictionaries(st.sampled_from(["mean", "std", "crop"]), field_values),
       raw=json_values)
def test_export_config_parser_gives_a_value_or_its_own_error(rz, pre, raw):
    cfg = {"robust_zoo": dict({"name": "m", "arch": "resnet18", "norm": "l2", "eps": 3}, **rz)}
    if isinstance(cfg["robust_zoo"].get("preprocessing"), dict) or pre:
        cfg["robust_zoo"]["preprocessing"] = pre
    for c in (cfg, raw, {"robust_zoo": raw}):
        try:
            d = validate.export_config(c, "ref")
        except RobustZooError:
            continue
        assert isinstance(d, dict) and validate.positive_int(d.get("num_classes", 1000), "n")


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=20) | st.floats() | st.integers()
       | st.from_regex(r"-?\d{1,4}(\.\d{0,3})?/-?\d{0,4}", fullmatch=True))
def test_parse_eps_gives_a_finite_non_negative_number_or_usage_error(text):
    from robust_zoo.naming import parse_eps

    try:
        v = parse_eps(text)
    except RobustZooError as e:
        assert isinstance(e, ValueError)
        return
    assert isinstance(v, float) and math.isfinite(v) and v >= 0


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40) | field_values)
def test_revision_validator_never_accepts_a_path_escape(value):
    try:
        rev = validate.revision(value)
    except RobustZooError:
        return
    if rev is not None:
        refs = os.path.normpath(os.path.join("/cache/refs", rev))
        assert refs.startswith("/cache/refs/") and "\\" not in rev


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), header=json_values)
def test_safetensors_header_parser_gives_a_header_or_its_own_error(tmp_path_factory, data,
                                                                   header):
    d = tmp_path_factory.mktemp("st")
    for blob in (data, struct.pack("<Q", len(json.dumps(header))) + json.dumps(header).encode()
                 + data):
        p = d / "f.safetensors"
        p.write_bytes(blob)
        try:
            loaded = read_weights(p)
        except RobustZooError:
            continue
        assert all(isinstance(t, torch.Tensor) for t in loaded.state_dict.values())
