"""Checkpoint files: atomic writes, safe loading and damage detection.

A checkpoint file is a ``torch.save`` archive holding a small envelope::

    {
        "format": 1,                      # FORMAT, the envelope's layout
        "sha256": "<64 hex digits>",      # SHA-256 of the payload bytes
        "nbytes": <int>,                  # length of the payload
        "payload": <uint8 tensor>,        # torch.save(state) as bytes
    }

Both the envelope and the payload load with ``torch.load(weights_only=True)``, so loading
never runs code from the file: the state must be plain (dicts, lists, tuples, sets, str,
bytes, numbers, bool, None, tensors, ``torch.Size``/``dtype``/``device``, or a type added
with ``torch.serialization.add_safe_globals``). :func:`save_checkpoint` refuses anything
else before writing, naming where it is in the state.

Every checkpoint records the :func:`~fedlightning.environment.environment` it was written
in under the state's ``"environment"`` key (a state that already has one keeps it), and
:func:`load_checkpoint` logs a warning naming the differences when it is loaded in another
one (CPU kernels, versions, thread count): whatever continues from it can then differ from
an uninterrupted run in float round-off.

Writes go to a temporary file in the destination's folder, which is flushed, ``fsync``-ed
and renamed over the destination (``os.replace``), then the folder is ``fsync``-ed: a crash
leaves either the previous file or the new one, never a part of one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = save_checkpoint(folder / "round_0001.ckpt", {"round": 1, "w": torch.ones(2)})
    >>> load_checkpoint(path)["round"]
    1
    >>> newest_valid(folder).name
    'round_0001.ckpt'
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import secrets
import shutil
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from fedlightning.environment import environment, environment_differences

__all__ = [
    "atomic_write",
    "FORMAT",
    "CheckpointError",
    "copy_checkpoint",
    "load_checkpoint",
    "newest_valid",
    "round_checkpoints",
    "save_checkpoint",
]

FORMAT = 1
"""Layout of the checkpoint envelope; files of another format are refused."""

ROUND_FILE = re.compile(r"^round_(\d+)\.ckpt$")
"""Names of the per-round checkpoints that :func:`newest_valid` considers."""

_CHUNK = 1 << 20

ENVIRONMENT_KEY = "environment"
"""State key under which :func:`save_checkpoint` records the writing environment."""

log = logging.getLogger(__name__)

_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")

_PLAIN_LEAVES: tuple[type, ...] = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    type(None),
    torch.Tensor,
    torch.nn.Parameter,
    torch.Size,
    torch.dtype,
    torch.device,
)
_CONTAINERS: tuple[type, ...] = (dict, OrderedDict, Counter, list, tuple, set)


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, not trusted, or a state cannot be saved.

    The message is one line: the file, what is wrong with it and, for a file that does not
    load, the newest valid ``round_NNNN.ckpt`` in the same folder (or that none is).

    Attributes:
        path: The checkpoint file.
        reason: What is wrong, without the file name.
        newest: The newest valid round checkpoint next to ``path``; ``None`` when there is
            none or when it was not looked for.
    """

    def __init__(self, path: Path, reason: str, newest: Path | None = None, hint: str = "") -> None:
        self.path = path
        self.reason = reason
        self.newest = newest
        super().__init__(f"checkpoint {path} {reason}{hint}")


# ---------------------------------------------------------------------------- writing


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically, with a SHA-256 of its bytes.

    Args:
        path: File to write; its folder is created if needed. An existing file is replaced
            only once the new one is complete and on disk.
        state: What to save; plain data and tensors only (see the module docstring). The
            file also records this process's :func:`~fedlightning.environment.environment`
            under ``"environment"`` unless ``state`` has that key already; ``state`` itself
            is not changed.

    Returns:
        The path written.

    Raises:
        CheckpointError: If ``state`` holds a value that ``torch.load(weights_only=True)``
            would refuse (the message names where it is); nothing is written then.
    """
    path = Path(path)
    if ENVIRONMENT_KEY not in state:
        state = {**state, ENVIRONMENT_KEY: environment()}
    _check_plain(path, state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()  # no copy: the envelope's tensor shares these bytes
    envelope = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "nbytes": len(payload),
        "payload": torch.frombuffer(payload, dtype=torch.uint8),
    }
    atomic_write(path, lambda f: torch.save(envelope, f))
    return path


def copy_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``dst`` atomically (e.g. a round's checkpoint to ``last.ckpt``).

    Args:
        src: The file to copy.
        dst: The destination; replaced only once the copy is complete and on disk.

    Returns:
        ``dst``.

    Raises:
        OSError: If ``src`` cannot be read or ``dst`` cannot be written; ``dst`` is then
            unchanged.
    """
    src, dst = Path(src), Path(dst)
    with src.open("rb") as source:
        atomic_write(dst, lambda f: shutil.copyfileobj(source, f, _CHUNK))
    return dst


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Run ``write`` on a temporary file next to ``path``, then move it over ``path``.

    The temporary file is flushed and ``fsync``-ed before the rename and the folder after
    it; on any failure the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0o666 under the umask, like an ordinary new file (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_plain(path: Path, state: Any) -> None:
    """Raise :class:`CheckpointError` naming the first value that would not load safely."""
    for where, value in _unsafe_values(state):
        raise CheckpointError(
            path,
            f"cannot be saved: state{where} is a {type(value).__module__}."
            f"{type(value).__qualname__}, which torch.load(weights_only=True) refuses; "
            "convert it to dicts/lists/tuples/str/int/float/bool/None/tensors in the "
            "state_dict() that returns it, or register its type with "
            "torch.serialization.add_safe_globals",
        )


def _unsafe_values(state: Any) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` of every value in ``state`` that is not plain or allowlisted."""
    allowed = _safe_global_types()
    stack: list[tuple[str, Any]] = [("", state)]
    seen: set[int] = set()
    while stack:
        where, value = stack.pop()
        kind = type(value)
        if kind in _PLAIN_LEAVES or kind in allowed:
            continue
        if kind not in _CONTAINERS:
            yield where, value
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((f"{where}[{key!r}]", item))
                stack.append((f"{where} key {key!r}", key))
        else:
            items = sorted(value, key=repr) if isinstance(value, set) else list(value)
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(items))))


def _safe_global_types() -> set[type]:
    """Types registered with ``torch.serialization.add_safe_globals``."""
    out: set[type] = set()
    for entry in torch.serialization.get_safe_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        if isinstance(obj, type):
            out.add(obj)
    return out


# ---------------------------------------------------------------------------- reading


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`, on the CPU.

    Nothing in the file is executed: both the envelope and the state load with
    ``torch.load(weights_only=True)``. A file written in another environment (its
    ``"environment"`` differs from this process's) is loaded all the same, with a warning
    that names the file and what differs.

    Args:
        path: The checkpoint file.

    Returns:
        The saved state.

    Raises:
        CheckpointError: If the file is missing, empty, truncated or otherwise damaged, its
            SHA-256 does not match, it is not a checkpoint of this format, or it holds
            something that would need code to run to load. The message names the file,
            what is wrong and the newest valid ``round_NNNN.ckpt`` in its folder.
    """
    path = Path(path)
    try:
        state = _read(path)
    except CheckpointError as exc:
        newest = newest_valid(path.parent, exclude=path)
        if newest is not None:
            hint = f"; the newest valid checkpoint there is {newest}"
        else:
            hint = f"; no valid round_NNNN.ckpt in {path.parent}"
        raise CheckpointError(path, exc.reason, newest, hint) from exc.__cause__
    saved = state.get(ENVIRONMENT_KEY)
    if isinstance(saved, dict) and (changed := environment_differences(saved, environment())):
        log.warning(
            "checkpoint %s was written in another environment (%s); what continues from it "
            "can differ from an uninterrupted run in float round-off",
            path,
            "; ".join(changed),
        )
    return state


def newest_valid(
    directory: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> Path | None:
    """The newest ``round_NNNN.ckpt`` in ``directory`` that loads and verifies.

    Round files are tried from the highest round down, each one fully loaded and checked.

    Args:
        directory: The checkpoint folder.
        exclude: A file not to try (e.g. one already known to be damaged).

    Returns:
        The file, or ``None`` when none is valid (or the folder does not exist).
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    for candidate in round_checkpoints(directory):
        if skip is not None and candidate.resolve() == skip:
            continue
        try:
            _read(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def round_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``round_NNNN.ckpt`` files in ``directory``, newest (highest round) first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = ROUND_FILE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


def _read(path: Path) -> dict[str, Any]:
    """Load, verify and unpack ``path``; :class:`CheckpointError` (reason only) if not."""
    if not path.exists():
        raise CheckpointError(path, "does not exist")
    if not path.is_file():
        raise CheckpointError(path, "is not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read: {_describe(exc)}") from exc
    if size == 0:
        raise CheckpointError(path, "is empty (0 bytes): the write that made it did not finish")
    envelope = _torch_load(path, path, "the file")
    payload = _unpack(path, envelope)
    state = _torch_load(path, io.BytesIO(payload), "the saved state")
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a state dict")
    return state


def _torch_load(path: Path, source: Path | IO[bytes], what: str) -> Any:
    """``torch.load(source, map_location="cpu", weights_only=True)``; errors name ``path``."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _weights_only_detail(exc)
        refused = _REFUSED_GLOBAL.search(detail or "")
        if refused is not None:
            raise CheckpointError(
                path,
                f"is refused: loading {what} would call {refused.group(1)}, which "
                "torch.load(weights_only=True) does not allow (it could run code); it was not "
                "written by fedlightning.checkpoint from a plain state, or was tampered with",
            ) from exc
        problem = detail if detail else _describe(exc)
        raise CheckpointError(path, f"is damaged: {what} does not unpickle ({problem})") from exc
    except Exception as exc:
        raise CheckpointError(
            path, f"is damaged or truncated: {what} does not load ({_describe(exc)})"
        ) from exc


def _unpack(path: Path, envelope: Any) -> bytes:
    """The verified payload bytes of a loaded envelope."""
    if not isinstance(envelope, dict) or "payload" not in envelope or "sha256" not in envelope:
        raise CheckpointError(
            path,
            "is not a fedlightning checkpoint with a checksum (a bare torch.save file, or one "
            "written before checkpoints had one)",
        )
    if envelope.get("format") != FORMAT:
        raise CheckpointError(
            path, f"has checkpoint format {envelope.get('format')!r}; this version reads {FORMAT}"
        )
    tensor = envelope["payload"]
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 or tensor.ndim != 1:
        raise CheckpointError(path, "is damaged: its payload is not a byte tensor")
    payload = tensor.contiguous().numpy().tobytes()
    if len(payload) != envelope.get("nbytes"):
        raise CheckpointError(
            path,
            f"is damaged: its payload has {len(payload)} bytes, {envelope.get('nbytes')} "
            "were saved",
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != envelope["sha256"]:
        raise CheckpointError(
            path,
            f"is damaged: SHA-256 mismatch (stored {str(envelope['sha256'])[:12]}..., "
            f"contents {digest[:12]}...)",
        )
    return payload


def _weights_only_detail(exc: pickle.UnpicklingError) -> str | None:
    """What the ``weights_only`` unpickler objected to, on one line; ``None`` if not it."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return None
    detail = text.split("WeightsUnpickler error:", 1)[1]
    detail = detail.split("Check the documentation of torch.load", 1)[0]
    detail = detail.split(". Please use", 1)[0]
    return " ".join(detail.split()).rstrip(".") or None


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for a one-line error."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > 120 and ". " in first:  # e.g. miniz's advice after the error itself
        first = first.split(". ", 1)[0]
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
