"""Read W&B offline runs (``run-<id>.wandb`` files) back without a network or the W&B server.

The framework's own append-and-flush ``metrics.jsonl`` is the source of truth for every run; W&B is only a mirror for
dashboards. On clusters without network access runs are logged with ``mode="offline"``, and in wandb 0.31 the ``.wandb``
transaction log is then the *only* record of config, history and summary: no ``wandb-summary.json`` or ``config.yaml`` is
written, the SDK's Python datastore reader is gone from the wheel and ``wandb sync``'s inspection options were removed.
This module reads those files so offline runs can be inspected, and checked against ``metrics.jsonl``, before syncing.

File format (LevelDB-style log, as written by wandb 0.31's core service):

* a 7-byte file header: ``b":W&B"``, little-endian uint16 magic ``0xBEE1``, version byte ``0``;
* the file is cut into 32 KiB blocks counted from offset 0 (the file header sits in the first block). Each chunk has a
  7-byte header: little-endian uint32 CRC, uint16 payload length, uint8 type (FULL=1, FIRST=2, MIDDLE=3, LAST=4). The CRC
  is plain ``zlib.crc32`` (unmasked) over the type byte followed by the payload. A record that does not fit in the rest of a
  block is split into FIRST, MIDDLE..., LAST chunks; a block tail shorter than a chunk header is zero padding; an all-zero
  chunk header marks the end of written data;
* each reassembled payload is a serialized ``wandb.proto.wandb_internal_pb2.Record``. A crashed run ends in a torn or
  CRC-failing chunk: reading stops quietly there and the run is reported with ``complete=False``.

Values are JSON strings (``NaN`` and ``Infinity`` spelled as JavaScript does, which ``json.loads`` accepts). Nested keys
arrive as key paths and are joined with ``"/"``. wandb 0.31 writes config values unwrapped (``{"model": {"steps": 3}}``);
the ``{"value": ...}`` wrapping seen elsewhere belongs to ``config.yaml`` and the public API, not to this log.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

__all__ = ["OfflineRun", "find_offline_runs", "read_offline_runs", "read_wandb_file"]


@dataclass
class OfflineRun:
    """Everything an offline run recorded: identity, config, history rows, summary and how it ended."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    complete: bool = False


def _iter_payloads(data: bytes, status: dict[str, bool]) -> Iterator[bytes]:
    """Yield reassembled record payloads; set ``status["clean"]`` False on a torn or corrupt tail and stop there."""
    pos = len(FILE_HEADER)
    pending: list[bytes] | None = None
    while True:
        block_left = BLOCK_SIZE - pos % BLOCK_SIZE
        if block_left < CHUNK_HEADER.size:  # zero padding up to the next block
            pos += block_left
            continue
        if pos >= len(data):
            break
        header = data[pos : pos + CHUNK_HEADER.size]
        if not any(header):  # all-zero header (or zero tail): end of written data
            break
        if len(header) < CHUNK_HEADER.size:
            status["clean"] = False
            return
        crc, length, kind = CHUNK_HEADER.unpack(header)
        start = pos + CHUNK_HEADER.size
        payload = data[start : start + length]
        if (
            length > block_left - CHUNK_HEADER.size
            or len(payload) < length
            or zlib.crc32(bytes([kind]) + payload) != crc
            or kind not in (FULL, FIRST, MIDDLE, LAST)
            or (kind in (FULL, FIRST)) != (pending is None)
        ):
            status["clean"] = False
            return
        pos = start + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = [payload]
        else:
            pending.append(payload)
            if kind == LAST:
                yield b"".join(pending)
                pending = None
    if pending is not None:  # the file ends inside a split record
        status["clean"] = False


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None  # typed history encoding
    if kind is None or kind == "none":
        return None
    return json.loads(item.json) if kind == "json" else getattr(item, kind)


def _apply_config(config: dict[str, Any], record: Any) -> None:
    for item in record.update:
        if item.nested_key:
            node = config
            for part in item.nested_key[:-1]:
                node = node.setdefault(part, {})
            node[item.nested_key[-1]] = _value(item)
        else:
            config[item.key] = _value(item)
    for item in record.remove:
        node, path = config, list(item.nested_key) or [item.key]
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    config.pop("_wandb", None)


def read_wandb_file(path: str | Path) -> OfflineRun:
    """Parse one ``run-<id>.wandb`` file. Raises ``ValueError`` if it is not a W&B transaction log."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb  # imported lazily: wandb is slow to import

    path = Path(path)
    data = path.read_bytes()
    if len(data) < len(FILE_HEADER) or data[:6] != FILE_HEADER[:6]:
        raise ValueError(
            f"{path} is not a W&B offline run log: expected the 7-byte header {FILE_HEADER!r}, got {data[:7]!r}"
        )
    if data[6] != FILE_HEADER[6]:
        raise ValueError(f"{path}: unsupported W&B log version {data[6]} (this reader knows version {FILE_HEADER[6]})")
    run = OfflineRun(path=path)
    status = {"clean": True}
    for payload in _iter_payloads(data, status):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:  # a CRC-valid but unparsable record: treat like corruption
            status["clean"] = False
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.exit_code = None  # a (re)started segment: an earlier exit record no longer ends the run
            run.run_id, run.project = r.run_id or run.run_id, r.project or run.project
            run.name, run.group = r.display_name or run.name, r.run_group or run.group
            run.job_type, run.tags = r.job_type or run.job_type, list(r.tags) or run.tags
            _apply_config(run.config, r.config)
        elif kind == "config":
            _apply_config(run.config, record.config)
        elif kind == "history":
            run.history.append({_key(item): _value(item) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = _value(item)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.summary = {k: v for k, v in run.summary.items() if k != "_wandb" and not k.startswith("_wandb/")}
    run.complete = status["clean"] and run.exit_code is not None
    return run


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every ``run-*.wandb`` file under ``root`` (recursively), sorted."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if p.is_file())


def read_offline_runs(root: str | Path) -> list[OfflineRun]:
    """Read every offline run under ``root``, in the order of :func:`find_offline_runs`."""
    return [read_wandb_file(p) for p in find_offline_runs(root)]
