"""Device profiles: the JSON schema, its validator, and where profiles are found.

A profile describes one device for the planner (``edge-rt plan``): memory, memory read bandwidth, flash
read bandwidth at the engine's request size and depth, per-thread matmul throughput for each weight type
and ISA, and the NPU. ``edge-rt profile`` measures the local machine; ``devices/profiles/`` ships profiles
of other devices written from published specifications. The schema is documented field by field in
docs/device_profile.md; :data:`SCHEMA` below is that page's table in code, and :func:`validate` checks a
profile against it, naming the first field that is wrong (``memory.read_bandwidth.all_threads: ...``).

No third-party validator: the schema is a small tree of typed fields, checked here in a few lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from edge_rt.errors import InvalidArgumentError

__all__ = ["SCHEMA_ID", "SCHEMA", "ProfileError", "validate", "load_profile", "shipped_profiles",
           "default_profile_path", "WEIGHT_TYPES", "ISAS"]

SCHEMA_ID = "edge_rt.device_profile/1"
#: Weight types a ``dot`` table may list (the engine's compute types).
WEIGHT_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
#: ISAs a ``dot`` table may list (the kernel variants of native/src/kernels).
ISAS = ("scalar", "avx2", "avx512vnni", "neon", "neon_dotprod", "neon_i8mm")
#: NPU backends a profile may name: edge_rt's backend names (the NPU stage's ``npu=``) plus the
#: accelerators of devices edge_rt cannot drive yet (named so the profile can say what is there).
NPU_BACKENDS = ("qnn-htp", "cpu-ep", "int-ref", "tensorrt", "cuda", "nnapi", "hailo")


class ProfileError(InvalidArgumentError):
    """A device profile that does not follow the schema; the message names the field."""


# ---- the schema ---------------------------------------------------------------------------------------
# A field spec is (kind, required, doc) where kind is a checker name or a nested dict of fields. The
# checkers return an error text or None.

def _positive_number(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
        return f"must be a positive number, got {v!r}"
    return None


def _positive_int(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        return f"must be a positive integer, got {v!r}"
    return None


def _string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and v.strip() else f"must be a non-empty string, got {v!r}"


def _bool(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"
    return check


def _list_of(choices: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, list):
            return f"must be a list, got {v!r}"
        for i, x in enumerate(v):
            if x not in choices:
                return f"[{i}] must be one of {', '.join(choices)}; got {x!r}"
        return None
    return check


Field = Tuple[Union[str, Callable[[Any], Optional[str]], Dict[str, Any]], bool, str]

SCHEMA: Dict[str, Field] = {
    "schema": (_one_of(SCHEMA_ID), True, f'"{SCHEMA_ID}"'),
    "name": (_string, True, "short device name"),
    "description": (_string, False, "one line about the device"),
    "origin": (_one_of("measured", "published"), True,
               "measured by `edge-rt profile` on the device, or written from published specifications"),
    "measured_at": (_string, False, "UTC time of the measurement (measured profiles)"),
    "sources": ("sources", False, "list of {what, url}: where each published value comes from (required "
                                  "when origin is published)"),
    "estimated": ("estimated", False, "map of dotted field name -> why that value is an estimate"),
    "cpu": ({
        "model": (_string, True, "CPU model"),
        "arch": (_one_of("x86_64", "aarch64"), True, "instruction set architecture"),
        "cores": (_positive_int, True, "cores the engine may use (threads by default)"),
        "isa": (_one_of(*ISAS), True, "the kernel ISA the engine runs on this device"),
    }, True, "the CPU"),
    "memory": ({
        "ram_bytes": (_positive_int, True, "installed RAM"),
        "usable_bytes": (_positive_int, True, "RAM an app may plan to use (the planner's default budget)"),
        "read_bandwidth": ({
            "single_thread": (_positive_number, True, "bytes/s one thread reads"),
            "all_threads": (_positive_number, True, "bytes/s `cores` threads read together"),
        }, True, "sequential memory read bandwidth"),
    }, True, "main memory"),
    "flash": ({
        "read_bandwidth": (_positive_number, True, "bytes/s of O_DIRECT reads at this size and depth"),
        "request_bytes": (_positive_int, True, "read size (the engine's chunk: 4 MiB)"),
        "queue_depth": (_positive_int, True, "reads in flight (the engine's I/O threads: 4)"),
    }, True, "the storage models are read from"),
    "dot": ("dot", True, "per ISA, per weight type: {decode, prefill, decode_ram} weight elements/s on one thread, "
                         "{repack} bytes/s"),
    "npu": ({
        "backends": (_list_of(NPU_BACKENDS), True, "accelerator backends present ([] for none)"),
        "kind": (_string, False, "what the accelerator is"),
        "memory_bytes": (_positive_int, False, "memory the accelerator may use"),
        "shares_ram": (_bool, False, "whether that memory is the CPU's RAM (counts against the budget)"),
        "int8_tops": (_positive_number, False, "dense INT8 tera-operations/s"),
        "chunk_latency_s": ("chunk_latency", False, "per backend: seconds per prefill chunk, measured"),
    }, True, "NPU or other accelerator (the NPU stage's planning input)"),
}

_DOT_RATE: Dict[str, Field] = {
    "decode": (_positive_number, True, "weight elements/s, one activation row, matrix in L2 (arithmetic)"),
    "prefill": (_positive_number, True, "weight elements/s x 8 activation rows, matrix in L2"),
    "decode_ram": (_positive_number, False, "weight elements/s, one activation row, matrix streamed from RAM"),
    "repack": (_positive_number, False, "bytes/s a streamed slot of this type is repacked into groups of 8 rows "
                                        "(absent: the engine does not repack this type on this ISA)"),
}


def _check_special(kind: str, value: Any, where: str, profile: Dict[str, Any]) -> None:
    if kind == "sources":
        if not isinstance(value, list) or not value:
            _fail(where, f"must be a non-empty list of {{what, url}}, got {value!r}")
        for i, s in enumerate(value):
            _check_fields({"what": (_string, True, ""), "url": (_string, True, "")}, s, f"{where}[{i}]", profile)
    elif kind == "estimated":
        if not isinstance(value, dict):
            _fail(where, f"must be an object of field -> reason, got {value!r}")
        for k, why in value.items():  # the fields named are checked once the rest is valid (validate)
            if err := _string(why):
                _fail(f"{where}.{k}", err)
    elif kind == "dot":
        if not isinstance(value, dict) or not value:
            _fail(where, f"must be a non-empty object of ISA -> weight type -> rates, got {value!r}")
        for isa, table in value.items():
            if isa not in ISAS:
                _fail(f"{where}.{isa}", f"is not an ISA (one of {', '.join(ISAS)})")
            if not isinstance(table, dict) or not table:
                _fail(f"{where}.{isa}", f"must be a non-empty object of weight type -> rates, got {table!r}")
            for wtype, rate in table.items():
                if wtype not in WEIGHT_TYPES:
                    _fail(f"{where}.{isa}.{wtype}", f"is not a weight type (one of {', '.join(WEIGHT_TYPES)})")
                _check_fields(_DOT_RATE, rate, f"{where}.{isa}.{wtype}", profile)
        isa = (profile.get("cpu") or {}).get("isa")
        if isa not in value:
            _fail(where, f"has no table for cpu.isa {isa!r}")
    elif kind == "chunk_latency":
        if not isinstance(value, dict):
            _fail(where, f"must be an object of backend -> seconds, got {value!r}")
        for k, v in value.items():
            if k not in NPU_BACKENDS:
                _fail(f"{where}.{k}", f"is not a backend (one of {', '.join(NPU_BACKENDS)})")
            if err := _positive_number(v):
                _fail(f"{where}.{k}", err)


_MISSING = object()


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _fail(where: str, what: str) -> None:
    raise ProfileError(f"[profile] {where}: {what}")


def _check_fields(fields: Dict[str, Field], value: Any, where: str, profile: Dict[str, Any]) -> None:
    if not isinstance(value, dict):
        _fail(where or "profile", f"must be a JSON object, got {type(value).__name__}")
    for key in value:
        if key not in fields:
            _fail(f"{where}.{key}" if where else key, f"is not a field of the schema (expected: {', '.join(fields)})")
    for key, (kind, required, _doc) in fields.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            if required:
                _fail(name, "is missing")
            continue
        v = value[key]
        if isinstance(kind, dict):
            _check_fields(kind, v, name, profile)
        elif isinstance(kind, str):
            _check_special(kind, v, name, profile)
        elif err := kind(v):
            _fail(name, err)


def validate(profile: Any) -> Dict[str, Any]:
    """Check ``profile`` (a parsed JSON object) against :data:`SCHEMA`; returns it unchanged.

    Raises ProfileError (an InvalidArgumentError) naming the first wrong field: a missing required field,
    an unknown field, a value of the wrong type or range, a ``dot`` table without the profile's own ISA,
    a published profile without ``sources``, usable memory above installed memory, or an ``estimated``
    entry naming a field the profile does not have.
    """
    _check_fields(SCHEMA, profile, "", profile)
    if profile["origin"] == "published" and "sources" not in profile:
        _fail("sources", "is missing (a published profile names where its values come from)")
    if profile["memory"]["usable_bytes"] > profile["memory"]["ram_bytes"]:
        _fail("memory.usable_bytes", "is larger than memory.ram_bytes")
    for k in profile.get("estimated", {}):
        if _lookup(profile, k) is _MISSING:
            _fail(f"estimated.{k}", "names a field the profile does not have")
    return profile


# ---- finding and reading profiles -----------------------------------------------------------------------

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


def shipped_profiles() -> Dict[str, Path]:
    """Profiles shipped in devices/profiles/, by name (the file name without ``.json``)."""
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.json"))}


def default_profile_path() -> Path:
    """Where ``edge-rt profile`` writes by default and the planner looks first:
    ``$EDGE_RT_CACHE/device_profile.json``, else ``~/.cache/edge_rt/device_profile.json``."""
    root = os.environ.get("EDGE_RT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "edge_rt") / "device_profile.json"


def load_profile(profile: Union[None, str, "os.PathLike[str]", Dict[str, Any]] = None) -> Dict[str, Any]:
    """A validated profile from a dict, a JSON file, a shipped profile's name (``raspberry-pi-5``), or
    ``None``/``"local"``: the local machine's profile at :func:`default_profile_path`.

    Raises ProfileError for an invalid profile (the field named), a file that is not JSON, an unknown name
    (the shipped names listed) or a missing local profile (how to make one).
    """
    if isinstance(profile, dict):
        return validate(profile)
    shipped = shipped_profiles()
    if profile is None or (isinstance(profile, str) and profile == "local"):
        path = default_profile_path()
        if not path.is_file():
            raise ProfileError(f"[profile] no profile of this machine at {path}: run `edge-rt profile` first, "
                               f"or name one ({', '.join(shipped)}) or a JSON file")
    elif isinstance(profile, str) and profile in shipped:
        path = shipped[profile]
    else:
        path = Path(os.fspath(profile)).expanduser()
        if not path.is_file():
            raise ProfileError(f"[profile] {profile!r} is neither a profile file nor a shipped profile "
                               f"(shipped: {', '.join(shipped)}; the local one: `edge-rt profile`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"[profile] cannot read {path}: {e}") from e
    try:
        return validate(data)
    except ProfileError as e:
        raise ProfileError(f"{e} (in {path})") from None

