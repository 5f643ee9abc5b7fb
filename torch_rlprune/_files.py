"""Files that a crash never leaves half written, and checkpoints read with a clear error."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Union

import torch

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    path = Path(path)
    # Not mkstemp, which makes the file private: created with mode 0o666, the file gets what the umask allows, as
    # with open().
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checked(path: PathLike, what: str, caller: str, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``; any failure but a missing file becomes a ``ValueError`` naming ``what``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{caller}: {path} is not a readable {what} ({type(exc).__name__}: {exc}).") from exc


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: PathLike, data: Any) -> None:
    """``data`` as indented JSON (anything else as its ``str``), written through :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, default=str) + "\n").encode()))
