"""Round-trip tests for the offline ``.wandb`` reader: real offline runs written by the installed wandb, plus damaged copies."""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from experiments.wandb_offline import (
    BLOCK_SIZE,
    FILE_HEADER,
    FIRST,
    FULL,
    LAST,
    MIDDLE,
    OfflineRun,
    find_offline_runs,
    read_offline_runs,
    read_wandb_file,
)

wandb = pytest.importorskip("wandb")

N_ROWS, BIG_ROW, MARK_ROW, N_BIG_KEYS = 50, 20, 35, 3000
STEPS = [10 + 2 * i for i in range(N_ROWS)]  # explicit, non-contiguous steps
META_KEYS = {"_step", "_runtime", "_timestamp"}


def _row(i: int) -> dict[str, Any]:
    """The dict logged at row ``i`` (nested dicts as given to ``wandb.log``)."""
    row: dict[str, Any] = {"loss": 1.0 / (i + 1), "acc": i / N_ROWS, "epoch": i // 10, "phase": "train"}
    if i == 7:
        row["loss"] = float("nan")
    if i % 5 == 0:
        row["val"] = {"loss": i * 0.5, "top1": i}
    if i == BIG_ROW:  # ~100 KB record: must be split over several 32 KiB blocks
        row.update({f"k{j:04d}": j * 0.25 for j in range(N_BIG_KEYS)})
    if i == MARK_ROW:
        row["marker_row"] = 1
    return row


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _assert_history_prefix(run: OfflineRun, n: int) -> None:
    """``run.history`` is exactly the first ``n`` logged rows, values and steps included."""
    assert len(run.history) == n
    for i, got in enumerate(run.history):
        assert got["_step"] == STEPS[i]
        assert isinstance(got["_runtime"], (int, float)) and isinstance(got["_timestamp"], (int, float))
        expected = _flat(_row(i))
        assert set(got) - META_KEYS == set(expected)
        for key, value in expected.items():
            assert _same(got[key], value), (i, key, got[key], value)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two offline runs written by the real SDK (one init costs well under a second here)."""
    root = tmp_path_factory.mktemp("wandb_offline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(root / "home" / var.lower()))
        run = wandb.init(
            mode="offline",
            dir=root,
            project="p",
            group="g",
            job_type="train",
            tags=["a", "b"],
            config={"model": {"steps": 3}, "lr": 0.1},
            reinit="finish_previous",
        )
        for i, step in enumerate(STEPS):
            run.log(_row(i), step=step)
        run.finish()
        main = Path(run.dir).parent / f"run-{run.id}.wandb"

        run = wandb.init(
            mode="offline", dir=root, project="p", name="second", config={"a": 1}, reinit="finish_previous"
        )
        run.config.update({"b": {"c": "x"}})
        run.log({"x": 1}, step=0)
        run.summary["best"] = 0.5
        run.finish(exit_code=3)
        second = Path(run.dir).parent / f"run-{run.id}.wandb"
        # wandb 0.31's finish() can return before its service process has flushed the file: shut the service down
        # (it writes what it holds) and wait for the exit record, so the reader is not tested on a half-written file
        wandb.teardown()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(read_wandb_file(p).complete for p in (main, second)):
            time.sleep(0.05)
    return {"root": root, "main": main, "second": second}


def test_roundtrip(runs: dict[str, Path]) -> None:
    path = runs["main"]
    assert path.stat().st_size > 2 * BLOCK_SIZE  # the big row (and its summary) span blocks
    run = read_wandb_file(path)
    assert run.complete and run.exit_code == 0
    assert run.run_id and path.name == f"run-{run.run_id}.wandb"
    assert (run.project, run.group, run.job_type, run.tags) == ("p", "g", "train", ["a", "b"])
    assert run.config == {"model": {"steps": 3}, "lr": 0.1}
    _assert_history_prefix(run, N_ROWS)
    assert math.isnan(run.history[7]["loss"])
    assert run.history[BIG_ROW]["k2999"] == 2999 * 0.25
    assert run.summary["loss"] == 1.0 / N_ROWS and run.summary["_step"] == STEPS[-1]
    assert run.summary["val/top1"] == 45 and run.summary["k0001"] == 0.25
    assert not any(k.startswith("_wandb") for k in run.summary)


def test_second_run_and_directory_scan(runs: dict[str, Path]) -> None:
    run = read_wandb_file(runs["second"])
    assert run.complete and run.exit_code == 3 and run.name == "second"
    assert run.config == {"a": 1, "b": {"c": "x"}}
    assert [{k: v for k, v in row.items() if k not in META_KEYS} for row in run.history] == [{"x": 1}]
    assert run.summary["best"] == 0.5 and run.summary["x"] == 1

    paths = find_offline_runs(runs["root"])  # the latest-run symlink must not produce duplicates
    assert paths == sorted([runs["main"], runs["second"]])
    assert [r.run_id for r in read_offline_runs(runs["root"])] == [read_wandb_file(p).run_id for p in paths]


@pytest.mark.parametrize(("needle", "n_rows"), [(b"k1500", BIG_ROW), (b"marker_row", MARK_ROW)])
def test_truncated_copy(runs: dict[str, Path], tmp_path: Path, needle: bytes, n_rows: int) -> None:
    """Cut inside a block-spanning record, or inside a small one: a clean prefix, no exception."""
    data = runs["main"].read_bytes()
    cut = data.index(needle) + 3  # first occurrence: inside the summary or history record of that row
    path = tmp_path / "run-cut.wandb"
    path.write_bytes(data[:cut])
    run = read_wandb_file(path)
    assert not run.complete and run.exit_code is None
    assert run.config == {"model": {"steps": 3}, "lr": 0.1}
    _assert_history_prefix(run, n_rows)


def test_corrupted_byte_stops_at_that_record(runs: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(runs["main"].read_bytes())
    data[data.index(b"marker_row") + 2] ^= 0x20  # flip one payload byte: the CRC no longer matches
    path = tmp_path / "run-bad.wandb"
    path.write_bytes(bytes(data))
    run = read_wandb_file(path)
    assert not run.complete and run.exit_code is None
    _assert_history_prefix(run, MARK_ROW)


def test_not_a_wandb_file(tmp_path: Path) -> None:
    for name, content in [("run-x.wandb", b'{"loss": 1.0}\n'), ("run-empty.wandb", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a W&B offline run log"):
            read_wandb_file(path)


def _write_log(payloads: list[bytes]) -> bytearray:
    """Minimal log writer (test-only) that splits records and pads block tails like the SDK."""
    out = bytearray(FILE_HEADER)
    for payload in payloads:
        first = True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < 7:
                out += bytes(left)
                continue
            chunk, payload = payload[: left - 7], payload[left - 7 :]
            kind = (FULL if not payload else FIRST) if first else (LAST if not payload else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + chunk), len(chunk), kind) + chunk
            first = False
            if not payload:
                break
    return out


def test_block_padding_and_zero_end_marker(tmp_path: Path) -> None:
    """Synthetic log whose first record leaves a 3-byte block tail, then rows, exit and an all-zero end marker."""
    from wandb.proto import wandb_internal_pb2 as pb

    def history(step: int, text: str) -> bytes:
        rec = pb.Record()
        rec.history.item.add(key="_step", value_json=json.dumps(step))
        rec.history.item.add(key="text", value_json=json.dumps(text))
        return rec.SerializeToString()

    target = BLOCK_SIZE - len(FILE_HEADER) - 7 - 3  # payload size that leaves 3 bytes of the first block
    filler = next(p for n in range(target - 40, target) if len(p := history(0, "a" * n)) == target)
    exit_rec = pb.Record()
    exit_rec.exit.exit_code = 2
    payloads = [filler, history(1, "b" * 40000), history(2, "c"), exit_rec.SerializeToString()]
    data = _write_log(payloads)
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == bytes(3)
    path = tmp_path / "run-synthetic.wandb"
    path.write_bytes(bytes(data) + bytes(64))  # zeros after the data: end marker, not corruption
    run = read_wandb_file(path)
    assert run.complete and run.exit_code == 2
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    assert run.history[1]["text"] == "b" * 40000

    path.write_bytes(bytes(_write_log(payloads[:2])[:-100]))  # ends inside a split record
    run = read_wandb_file(path)
    assert not run.complete and [row["_step"] for row in run.history] == [0]
