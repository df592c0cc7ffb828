"""The one validation layer for input from outside the package: JSON text (``load_json``, depth
bounded before it is parsed), manifest fields, an export's ``config.json`` and a safetensors
header. Each check returns a typed value or raises the package's own error naming the field,
what is valid and what was found; nothing here reads the network, and nothing downstream needs
to re-check what passed here.

Bottom layer: imports only ``errors``, ``naming`` and ``recipe``.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Mapping

from .errors import RobustZooError
from .naming import check_norm, parse_eps
from .recipe import FIELD_ORDER, Recipe


class FieldError(RobustZooError, ValueError):
    """One field of an external document has a value that is not valid; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field


class CheckpointFormatError(RobustZooError, ValueError):
    """A weights file (the zoo's safetensors, an upstream ``robustness`` checkpoint, an export)
    that is not of the expected layout. A training run's own checkpoint has
    ``engine.checkpoint.RunCheckpointError``."""


class IntegrityError(RobustZooError, RuntimeError):
    """A file's bytes do not have the sha256 the manifest (or the Hub) promises, or they
    changed since they were verified."""


class JSONError(RobustZooError, ValueError):
    """A JSON document from outside that is not valid JSON or nests deeper than allowed."""


# ----------------------------------------------------------------------------- JSON text

# Deeper than any document the package reads (a manifest nests about 6 levels) and far below the
# interpreter's recursion limit, so that the parser can never run out of stack.
MAX_JSON_DEPTH = 64
# A JSON string, its closing quote optional: every match attempt at a '"' succeeds, so removing
# the strings takes one linear pass even over hostile text (unterminated strings, many escapes).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of ``text`` nest, counted without recursion: the
    brackets outside strings, as a running sum."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def load_json(text: "str | bytes", what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` for a document from outside (a manifest, an export's config.json, a
    safetensors header, a cache record): its nesting is measured first and a document deeper
    than ``max_depth`` is refused unparsed, since Python's parser recurses once per level.
    Errors are a ``JSONError`` naming ``what``."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONError(f"{what} is not valid JSON: not UTF-8 text ({e})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise JSONError(f"{what} nests arrays/objects {depth} levels deep, over the limit of "
                        f"{max_depth}; refused unparsed")
    try:
        return json.loads(text)
    except RecursionError:
        raise JSONError(f"{what} nests too deeply to parse") from None
    except ValueError as e:
        raise JSONError(f"{what} is not valid JSON: {e}") from None


# ----------------------------------------------------------------------------- manifest fields

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FAST_DIGEST_RE = re.compile(r"^[0-9a-f]{32}$")     # fileio.FAST_DIGEST: xxh3-128, 32 hex digits
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# A branch or tag name as git allows it, minus anything a file system could read as a path
# step: no "..", no leading "/" or ".", no "\", no empty component.
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


def sha256_hex(value: Any, field: str = "sha256") -> str | None:
    """None, or 64 lower-case hex digits (upper case is accepted and lowered)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_RE.match(value.lower()):
        raise FieldError(field, f"{value!r} is not a sha256 (64 hex digits) or null")
    return value.lower()


def is_sha256(value: Any) -> bool:
    """``value`` is a sha256 as 64 lower-case hex digits (a Hub LFS etag, a record's field)."""
    return isinstance(value, str) and bool(_SHA256_RE.match(value))


def is_fast_digest(value: Any) -> bool:
    """``value`` is a ``fileio.FAST_DIGEST`` (xxh3-128) as 32 lower-case hex digits."""
    return isinstance(value, str) and bool(_FAST_DIGEST_RE.match(value))


def revision(value: Any, field: str = "revision") -> str | None:
    """None (the default branch), a 40-hex commit, or a branch/tag name that cannot be read as a
    path (huggingface_hub writes ``refs/<revision>`` inside its cache)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise FieldError(field, f"{value!r} is not a commit hash or a branch/tag name")
    if _COMMIT_RE.match(value):
        return value
    if (not _REF_RE.match(value) or ".." in value or value.endswith((".lock", "."))
            or "//" in value):
        raise FieldError(field, f"{value!r} is neither a 40-hex commit nor a plain branch/tag "
                         "name (letters, digits, '_', '-', '.', '/'; no '..'); pin a commit "
                         "with `robust-zoo pin`")
    return value


def is_commit(value: Any) -> bool:
    """``value`` is a git commit as 40 lower-case hex digits."""
    return isinstance(value, str) and bool(_COMMIT_RE.match(value))


def commit(value: Any, field: str = "revision") -> str:
    """A git commit: 40 lower-case hex digits (what a pin records; a branch name is no pin)."""
    if not is_commit(value):
        raise FieldError(field, f"{value!r} is not a commit (40 hex digits)")
    return value


def repo_id(value: Any, field: str = "repo_id") -> str:
    """An ``org/name`` Hub repo id, by huggingface_hub's own validator."""
    if value is None:
        raise FieldError(field, "is null; give the Hub repository as 'org/name', or use a 'url' "
                         "or 'path' source instead")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as e:
        raise FieldError(field, f"{value!r} is not a Hub repo id ({e})") from None
    return value


def relative_filename(value: Any, field: str = "filename") -> str:
    """A file inside a repository: a relative POSIX path with no '..', '.' or empty step."""
    if not isinstance(value, str) or not value:
        raise FieldError(field, f"{value!r} is not a file name")
    parts = value.split("/")
    if (value.startswith("/") or "\\" in value or "\x00" in value
            or any(p in ("", ".", "..") for p in parts) or re.match(r"^[A-Za-z]:", value)):
        raise FieldError(field, f"{value!r} is not a safe relative file name inside the "
                         "repository (no absolute path, no '..', no '\\')")
    return value


def positive_int(value: Any, field: str, maximum: int = 10**9) -> int:
    """An int (or an integral float such as 1000.0) in [1, maximum]; bools are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"{value!r} is not a positive integer")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise FieldError(field, f"{value!r} is not a positive integer")
    if not 1 <= value <= maximum:
        raise FieldError(field, f"{value!r} is not an integer in [1, {maximum}]")
    return int(value)


def optional_size(value: Any, field: str = "size") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FieldError(field, f"{value!r} is not a byte count (an integer >= 0) or null")
    return value


def eps(value: Any, field: str = "eps") -> float:
    """ε: a finite number >= 0 (a string such as "4/255" is parsed exactly)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError(field, f"{value!r} is not a number")
    try:
        return parse_eps(value, what=field)
    except ValueError as e:
        raise FieldError(field, str(e)) from None


def channel_stats(value: Any, field: str, positive: bool = False) -> tuple[float, ...]:
    """Per-channel mean or std: three finite numbers (std > 0)."""
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       and math.isfinite(x) for x in value)):
        raise FieldError(field, f"{value!r} is not a list of 3 finite numbers (one per RGB "
                         "channel)")
    if positive and not all(x > 0 for x in value):
        raise FieldError(field, f"{value!r} has a value <= 0 (a std divides)")
    return tuple(float(x) for x in value)


def non_empty_str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, f"{value!r} is not a non-empty string")
    return value


def optional_str(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(field, f"{value!r} is not a string or null")
    return value


def optional_object(value: Any, field: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise FieldError(field, f"{value!r} is not an object or null")
    return value


def percent(value: Any, field: str) -> float:
    """An accuracy in percent: a finite number in [0, 100]."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and 0 <= value <= 100)):
        raise FieldError(field, f"{value!r} is not an accuracy in percent (a number in "
                         "[0, 100])")
    return value


# ----------------------------------------------------------------------------- entry sections

# torchvision's InterpolationMode values that Resize accepts on images (timm's names too)
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming",
                  "lanczos")
PREPROCESSING_FIELDS = ("name", "resize", "crop", "interpolation", "mean", "std", "input_range",
                        "normalize_in_model")
MAX_IMAGE_SIDE = 1 << 14
# metrics measured under an attack: their records name the threat model
ROBUST_METRICS = ("pgd_top1", "autoattack_top1")
# RobustBench's threat models, spelt as it spells them, and the entry norm each goes with
THREAT_MODELS = {"Linf": "linf", "L2": "l2", "corruptions": "none"}
# an entry's norm: an attack norm, or "none" for a model trained for no norm ball (corruptions)
ENTRY_NORMS = ("l2", "linf", "none")


def entry_norm(value: Any, field: str = "norm") -> str:
    """An entry's norm: ``"none"`` (no norm ball: a corruption-robust or standard model listed
    under RobustBench's corruptions) or an attack norm as ``naming.check_norm`` reads it."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return "none"
    try:
        return check_norm(non_empty_str(value, field))
    except FieldError:
        raise
    except ValueError:
        raise FieldError(field, f"{value!r} is not one of {', '.join(ENTRY_NORMS)}") from None


def threat_model(value: Any, field: str = "threat_model") -> str:
    """One of RobustBench's threat models (``THREAT_MODELS``), its case ignored."""
    names = {k.lower(): k for k in THREAT_MODELS}
    if not isinstance(value, str) or value.strip().lower() not in names:
        raise FieldError(field, f"{value!r} is not a threat model; valid: "
                         f"{', '.join(THREAT_MODELS)}")
    return names[value.strip().lower()]


def threat_models(value: Any, norm: str, field: str = "threat_model") -> tuple[str, ...]:
    """An entry's threat models: one name or a list of distinct names (a model on several of
    RobustBench's leaderboards); absent, the one its norm implies."""
    if value is None:
        return (next(k for k, v in THREAT_MODELS.items() if v == norm),)
    if isinstance(value, str):
        return (threat_model(value, field),)
    items = value
    if not isinstance(items, list) or not items:
        raise FieldError(field, f"{value!r} is not a threat model or a non-empty list of them")
    out = tuple(threat_model(v, f"{field}[{i}]") for i, v in enumerate(items))
    if len(set(out)) != len(out):
        raise FieldError(field, f"{value!r} names a threat model twice")
    return out


def links(value: Any, field: str = "links") -> dict[str, str]:
    """An entry's links: an object of http(s) URLs by what they point at (``paper``, ...)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, f"{value!r} is not an object of URLs")
    for k, v in value.items():
        if not isinstance(v, str) or not v.startswith(("https://", "http://")):
            raise FieldError(f"{field}.{k}", f"{v!r} is not an http(s) URL")
    return dict(value)


def names(value: Any, field: str) -> tuple[str, ...]:
    """A list of distinct non-empty names (an entry's ``aliases``); null: none."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError(field, f"{value!r} is not a list of names")
    out = tuple(model_name_text(v, f"{field}[{i}]") for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise FieldError(field, f"{value!r} names one name twice")
    return out


# A model name: what RobustBench ids and zoo names use (letters, digits, '_', '-', '.'),
# starting with a letter or '_', so that it is never read as a path or an option
_MODEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$")


def model_name_text(value: Any, field: str = "name") -> str:
    """A model name: letters, digits, '_', '-' and '.', starting with a letter or '_'."""
    if not isinstance(value, str) or not _MODEL_NAME_RE.match(value):
        raise FieldError(field, f"{value!r} is not a model name (letters, digits, '_', '-', "
                         "'.'; starting with a letter or '_')")
    return value


def preprocessing(value: Any, field: str = "preprocessing") -> dict[str, Any]:
    """An entry's eval preprocessing: only the fields ``PREPROCESSING_FIELDS``, each valid
    (sizes positive integers, an interpolation torchvision has, 3 finite mean/std values).
    ``resize`` is the shorter side or ``[height, width]``, ``crop`` a square's side; either may
    be null (that step is skipped: RobustBench's ``Crop288`` and ``Res224``), never both;
    ``name`` is a free label (RobustBench's name of the preprocessing)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, f"{value!r} is not an object")
    unknown = sorted(set(value) - set(PREPROCESSING_FIELDS), key=str)
    if unknown:
        raise FieldError(f"{field}.{unknown[0]}", "is not a preprocessing field; valid: "
                         f"{', '.join(PREPROCESSING_FIELDS)}")
    out = dict(value)
    optional_str(value.get("name"), f"{field}.name")
    if value.get("resize") is not None:
        out["resize"] = _resize(value["resize"], f"{field}.resize")
    if value.get("crop") is not None:
        out["crop"] = positive_int(value["crop"], f"{field}.crop", maximum=MAX_IMAGE_SIDE)
    elif "crop" in value and not isinstance(out.get("resize"), list):
        raise FieldError(f"{field}.crop", "is null (no crop) but resize is not [height, width]: "
                         "the input size would vary with the image")
    if "interpolation" in value and value["interpolation"] not in INTERPOLATIONS:
        raise FieldError(f"{field}.interpolation", f"{value['interpolation']!r} is not one of "
                         f"{', '.join(INTERPOLATIONS)}")
    if "mean" in value:
        channel_stats(value["mean"], f"{field}.mean")
    if "std" in value:
        channel_stats(value["std"], f"{field}.std", positive=True)
    rng = value.get("input_range", [0, 1])
    if (not isinstance(rng, list) or len(rng) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       and math.isfinite(x) for x in rng) or not rng[0] < rng[1]):
        raise FieldError(f"{field}.input_range", f"{rng!r} is not [low, high] with low < high")
    if not isinstance(value.get("normalize_in_model", True), bool):
        raise FieldError(f"{field}.normalize_in_model",
                         f"{value['normalize_in_model']!r} is not true or false")
    return out


def _resize(value: Any, field: str) -> "int | list[int]":
    """A resize: the shorter side (an integer), or ``[height, width]`` (an exact size)."""
    if isinstance(value, list):
        if len(value) != 2:
            raise FieldError(field, f"{value!r} is not [height, width]")
        return [positive_int(v, f"{field}[{i}]", maximum=MAX_IMAGE_SIDE)
                for i, v in enumerate(value)]
    return positive_int(value, field, maximum=MAX_IMAGE_SIDE)


def metric(value: Any, field: str) -> dict[str, Any]:
    """One claimed metric record: a ``name``, a ``value`` in percent and, for a metric under
    attack (``ROBUST_METRICS``, or any record naming a norm or ε), both ``norm`` and ``eps``."""
    if not isinstance(value, dict):
        raise FieldError(field, f"{value!r} is not an object")
    for k in ("name", "value"):
        if k not in value:
            raise FieldError(f"{field}.{k}", "is missing: a metric record has a 'name' and a "
                             "'value' in percent")
    out = dict(value)
    name = non_empty_str(value["name"], f"{field}.name")
    percent(value["value"], f"{field}.value")
    if name in ROBUST_METRICS or "norm" in value or "eps" in value:
        for k in ("norm", "eps"):
            if value.get(k) is None:
                raise FieldError(f"{field}.{k}", f"is missing: a {name} record names its threat "
                                 "model with both 'norm' and 'eps'")
        try:
            out["norm"] = check_norm(non_empty_str(value["norm"], f"{field}.norm"))
        except FieldError:
            raise
        except ValueError as e:
            raise FieldError(f"{field}.norm", str(e)) from None
        out["eps"] = eps(value["eps"], f"{field}.eps")
    if value.get("n_examples") is not None:
        positive_int(value["n_examples"], f"{field}.n_examples", maximum=10**12)
    optional_object(value.get("attack"), f"{field}.attack")
    for k in ("dataset", "split", "source", "robustbench_id"):
        optional_str(value.get(k), f"{field}.{k}")
    if value.get("threat_model") is not None:
        out["threat_model"] = threat_model(value["threat_model"], f"{field}.threat_model")
    if value.get("external") is not None:
        percent(value["external"], f"{field}.external")
    return out


def metrics(value: Any, field: str = "metrics") -> tuple[dict[str, Any], ...]:
    """An entry's claimed metrics: a list of ``metric`` records (null: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError(field, f"{value!r} is not a list of metric records")
    return tuple(metric(m, f"{field}[{i}]") for i, m in enumerate(value))


def recipe(value: Any, field: str = "recipe") -> dict[str, Any]:
    """An entry's training recipe: empty, or a ``robust_zoo.Recipe`` as a dict (every key a
    recipe field, every value valid for it; ``unknown``/``unconfirmed`` lists of field names,
    ``source`` a string or a mapping of field names to strings)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, f"{value!r} is not an object")
    if not value:
        return {}
    for k in ("unknown", "unconfirmed"):
        names = value.get(k) or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n in FIELD_ORDER
                                                    for n in names):
            raise FieldError(f"{field}.{k}", f"{names!r} is not a list of recipe field names")
    src = value.get("source")
    if not (src is None or isinstance(src, str) or (
            isinstance(src, dict) and all(isinstance(v, str) for v in src.values()))):
        raise FieldError(f"{field}.source", f"{src!r} is not a string, null or an object of "
                         "strings")
    for k in ("arch", "dataset"):
        if k in value:
            non_empty_str(value[k], f"{field}.{k}")
    try:
        Recipe.from_dict(value)
    except ValueError as e:    # RecipeError, or check_norm's UsageError
        raise FieldError(field, str(e)) from None
    except TypeError as e:     # a field name that is not a string
        raise FieldError(field, f"has a key that is not a recipe field ({e})") from None
    return dict(value)


def export_config(cfg: Any, ref: str) -> dict[str, Any]:
    """The ``robust_zoo`` section of an export's ``config.json``, checked field by field, as a
    manifest entry dict (``files`` not yet filled in)."""
    if not isinstance(cfg, dict):
        raise FieldError("config.json", f"{ref}: config.json holds a {type(cfg).__name__}, not "
                         "an object")
    rz = cfg.get("robust_zoo")
    if not isinstance(rz, dict) or not rz:
        raise FieldError("robust_zoo", f"{ref} has no 'robust_zoo' section in config.json: it "
                         "was not written by `robust-zoo export`")
    d = dict(rz)
    d.pop("written", None)        # what the export wrote (hub.publish), not part of the entry
    for k in ("name", "arch", "norm"):
        non_empty_str(d.get(k), f"robust_zoo.{k}")
    eps(d.get("eps"), "robust_zoo.eps")
    positive_int(d.get("num_classes", 1000), "robust_zoo.num_classes")
    preprocessing(d.get("preprocessing"), "robust_zoo.preprocessing")
    sha256_hex(d.get("sha256"), "robust_zoo.sha256")
    optional_size(d.get("size"), "robust_zoo.size")
    return d


# ----------------------------------------------------------------------------- safetensors

# Generous for any classifier (WRN-50-4: 320 tensors, a 40 kB header) yet small enough that
# a hostile header is refused before it is parsed: a header of a million entries is ~60 MB.
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 100_000

DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
          "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4),
          "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1),
          "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1)}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str            # torch dtype attribute name, e.g. "float32"
    shape: tuple[int, ...]
    begin: int            # offset in the file (header included)
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    data_start: int       # offset of the byte buffer in the file
    tensors: tuple[TensorInfo, ...]   # in file order
    metadata: dict[str, str]


def header_length(prefix: bytes, file_size: int, what: str) -> int:
    """Length N of the JSON header, from the file's first 8 bytes, bounded before any parse."""
    if len(prefix) < 8 or file_size < 8:
        raise CheckpointFormatError(f"{what} is {file_size} bytes: too short for a safetensors "
                                    "file (8-byte header length + JSON header + data)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        raise CheckpointFormatError(f"{what}: safetensors header of {n} bytes is over the "
                                    f"{MAX_HEADER_BYTES} byte limit (refused unread)")
    if n < 2 or 8 + n > file_size:
        raise CheckpointFormatError(f"{what}: safetensors header length {n} does not fit a "
                                    f"file of {file_size} bytes (truncated or not safetensors)")
    return n


def safetensors_header(header: bytes, file_size: int, what: str) -> SafetensorsHeader:
    """Parse and check the JSON header: dtypes known, shapes of non-negative ints, offsets that
    cover the byte buffer exactly with no overlap, every size equal to shape × dtype size."""
    n = len(header)
    count = header.count(b'"data_offsets"')
    if count > MAX_TENSORS:
        raise CheckpointFormatError(f"{what}: {count} tensors in the header, over the limit of "
                                    f"{MAX_TENSORS}")
    if not header.startswith(b"{"):
        raise CheckpointFormatError(f"{what}: the safetensors header is not a JSON object")
    try:
        obj = load_json(header, f"{what}: the safetensors header")
    except JSONError as e:
        raise CheckpointFormatError(str(e)) from None
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{what}: the safetensors header is not a JSON object")
    meta = obj.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise CheckpointFormatError(f"{what}: __metadata__ must map strings to strings")
    data_start = 8 + n
    tensors = []
    for name, t in obj.items():
        if not isinstance(t, dict):
            raise CheckpointFormatError(f"{what}: header entry {name!r} is not an object")
        dt, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dt not in DTYPES:
            raise CheckpointFormatError(f"{what}: tensor {name!r} has dtype {dt!r}; supported: "
                                        f"{', '.join(DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > 16
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40
                           for s in shape)):
            raise CheckpointFormatError(f"{what}: tensor {name!r} has shape {shape!r}, not a "
                                        "list of non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise CheckpointFormatError(f"{what}: tensor {name!r} has data_offsets {offs!r}")
        numel = math.prod(shape)
        torch_name, size = DTYPES[dt]
        if numel * size != offs[1] - offs[0]:
            raise CheckpointFormatError(
                f"{what}: tensor {name!r} ({dt} {shape}) needs {numel * size} bytes but its "
                f"data_offsets span {offs[1] - offs[0]}")
        tensors.append(TensorInfo(name, torch_name, tuple(shape), data_start + offs[0],
                                  data_start + offs[1]))
    tensors.sort(key=lambda t: (t.begin, t.end))
    pos = data_start
    for t in tensors:
        if t.begin != pos:
            raise CheckpointFormatError(f"{what}: tensor {t.name!r} starts at byte "
                                        f"{t.begin - data_start} of the data, expected "
                                        f"{pos - data_start} "
                                        "(holes or overlapping tensors)")
        pos = t.end
    if pos != file_size:
        raise CheckpointFormatError(f"{what}: the tensors cover {pos - data_start} bytes of data "
                                    f"but the file holds {file_size - data_start} (truncated or "
                                    "trailing bytes)")
    return SafetensorsHeader(data_start, tuple(tensors), dict(meta))


def metadata_json_list(meta: Mapping[str, str], key: str, what: str) -> tuple[float, ...] | None:
    """``mean``/``std`` stored as JSON lists in a weights file's metadata, checked."""
    if key not in meta:
        return None
    try:
        value = load_json(meta[key], f"{what}: metadata {key!r}")
    except JSONError:
        raise CheckpointFormatError(f"{what}: metadata {key!r} = {meta[key][:80]!r} is not a "
                                    "JSON list of 3 numbers") from None
    try:
        return channel_stats(value, f"metadata.{key}", positive=key == "std")
    except FieldError as e:
        raise CheckpointFormatError(f"{what}: {e}") from None
