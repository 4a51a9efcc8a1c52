"""`config.toml`: read with tomllib, written by a small writer of our own.

The writer covers what Shoal's config holds (tables of strings, ints,
floats, bools, lists of those, nested tables); a dependency (tomli-w) for
that would be one more package to vet for a forty-line job. Comments a user
adds by hand are lost only when Shoal itself rewrites the file, which it
does at `init` and never behind the user's back.

Reading merges the file over `DEFAULTS`, so a key a newer Shoal adds has a
value in an older repo, and a user may override any single key (e.g. one
energy coefficient) without copying the whole table.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from shoal.store.errors import RepoError
from shoal.store.persist.durable import write_durably

__all__ = ["DEFAULT_LISTEN", "DEFAULT_API", "DEFAULTS", "default_config", "load_config", "save_config", "dumps", "merge"]

# Fixed ports, so a restarted node keeps the address its peers saved; loopback,
# so a node is reachable from other machines only when the user says so
# (`shoal init --listen /ip4/0.0.0.0/tcp/4101` or an edit of config.toml).
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/4101"
DEFAULT_API = "127.0.0.1:5101"

DEFAULTS: dict[str, Any] = {
    "store": {
        # The profile a put uses when it names none (Repo.default_profile).
        # No chunker here: `shoal put --chunker` decides per put (default auto).
        "profile": "unixfs-v1-2025",
    },
    "node": {
        "listen": [DEFAULT_LISTEN],
        "bootstrap": [],
        "api": DEFAULT_API,
    },
    "replication": {
        "replicas": 1,
    },
    "energy": {},
}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def default_config() -> dict[str, Any]:
    """A fresh, mutable copy of the defaults."""
    return copy.deepcopy(DEFAULTS)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` onto a copy of `base` (tables merge, values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: Path) -> dict[str, Any]:
    """The file's settings over the defaults; RepoError if it is not valid TOML."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return default_config()
    except tomllib.TOMLDecodeError as exc:
        raise RepoError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise RepoError(f"cannot read {path}: {exc.strerror}") from exc
    return merge(DEFAULTS, data)


def save_config(path: Path, config: dict[str, Any]) -> None:
    """Write durably (persist.durable), so a crash leaves old or new, never half."""
    text = dumps(config)
    try:
        write_durably(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise RepoError(f"cannot write {path}: {exc.strerror}") from exc


def dumps(config: dict[str, Any]) -> str:
    """Serialize a dict as TOML (scalars first, then sub-tables, in key order given)."""
    lines: list[str] = []
    _emit_table(lines, [], config)
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit_table(lines: list[str], prefix: list[str], table: dict[str, Any]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if prefix and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
    for key, value in scalars:
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        _emit_table(lines, prefix + [key], value)


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, not {type(key).__name__}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
