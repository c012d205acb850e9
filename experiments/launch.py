"""Sweep backends: where the runs of a grid execute.

- ``local`` (default; ``feedback run``): one after the other in this process (:func:`experiments.sweep.run_sweep`).
- ``processes``: ``workers`` local worker processes (spawned, so CUDA and threads start clean), each taking the
  next unclaimed run. Each worker gets ``cpu_count // workers`` torch threads unless ``train.threads`` is set.
  SIGINT/SIGTERM reach the workers, which checkpoint and stop; the sweep then exits with ``128 + signum``.
- ``submitit``: one SLURM job array (``executor.map_array``) of one run per job, through submitit
  (``pip install submitit``; imported only here). ``cluster="local"`` runs the jobs as local subprocesses and
  ``cluster="debug"`` in this process, which is how the backend is tested without SLURM. The job callable is
  checkpointable: on preemption or timeout submitit requeues it, and the requeued job resumes the run from its last
  checkpoint (set ``train.checkpoint_every`` so that little is lost). Logs and pickles go to
  ``<runs_dir>/<experiment>/.submitit/<job id>/``, which must be on storage the nodes share.

Every backend goes through :func:`experiments.sweep.run_one`, so the rules are the same everywhere: done runs are
skipped, failed ones are retried only with ``retry_failed``, unfinished ones resume from their checkpoint, and
the lock files keep two sweeps (or two array jobs) from running one cell twice.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from experiments.config import ConfigError, apply_overrides
from experiments.sweep import Cell, RunSpec, lock_path, run_one, run_sweep, summarize_outcomes

__all__ = ["BACKENDS", "CellJob", "run_processes", "run_submitit", "sweep"]

BACKENDS = ("local", "processes", "submitit")


def _train_run(*args: Any, **kwargs: Any) -> Any:
    from experiments.train import train_run

    return train_run(*args, **kwargs)


# --------------------------------------------------------------------------------------------------- processes


def _worker_init(threads: int) -> None:
    import torch

    os.environ.setdefault("WANDB_SILENT", "true")
    if threads > 0:
        torch.set_num_threads(threads)


def _worker(spec: RunSpec, retry_failed: bool) -> dict[str, Any]:
    try:
        return run_one(spec, _train_run, retry_failed=retry_failed, echo=lambda s: print(f"feedback: {s}"))
    except SystemExit as e:  # a signal: the run checkpointed and stopped
        return {"label": spec.label, "status": "interrupted", "error": f"exit {e.code}", "code": e.code}


def _child(spec: RunSpec, retry_failed: bool, threads: int, conn: Any) -> None:
    """One run in a fresh (spawned) process; its outcome goes back through ``conn``."""
    _worker_init(threads)
    conn.send(_worker(spec, retry_failed))
    conn.close()


def _record_death(spec: RunSpec, exitcode: int | None, pid: int) -> dict[str, Any]:
    """A worker that died without reporting (SIGKILL, the out-of-memory killer): FAILED with the cause, and its lock
    (held by the dead process) removed so that ``--retry-failed`` can claim the run at once."""
    how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    msg = f"WorkerDied: the worker process running it died ({how}); rerun with --retry-failed to resume it"
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "FAILED").write_text(msg + "\n")
    (spec.run_dir / "error.txt").write_text(msg + "\n")
    lock = lock_path(spec)
    try:
        if lock.is_file() and json.loads(lock.read_text() or "{}").get("pid") == pid:
            lock.unlink()
    except (OSError, ValueError):
        pass
    return {"label": spec.label, "status": "failed", "error": msg}


def run_processes(cells: list[Cell], *, workers: int, retry_failed: bool = False, progress: bool = True,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the grid on ``workers`` local processes; returns the sweep summary (see :func:`run_sweep`).

    Every run gets its own spawned process (clean CUDA and thread state), at most ``workers`` at a time. A worker
    that dies without reporting (SIGKILL, out of memory) fails its own run, recorded as ``FAILED`` with the cause;
    the other runs go on. SIGTERM/SIGINT are passed on to the workers, which checkpoint and stop.
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    runs = [r for c in cells for r in c.runs]
    # per-run bars from several processes would garble the terminal: the parent shows one bar for the sweep
    pending = [RunSpec(r.cell, r.variant, r.seed, apply_overrides(r.cfg, {"log.progress": False}), r.run_dir)
               for r in runs]
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    outcomes: list[dict[str, Any]] = []
    running: dict[Any, tuple[RunSpec, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc=f"sweep ({workers} workers)", dynamic_ncols=True, unit="run")
    previous = signal.getsignal(signal.SIGTERM)
    stopping = {"signum": 0}

    def forward(signum: int, frame: Any) -> None:  # pass the signal on to the workers, then wait for them
        stopping["signum"] = signum
        pending.clear()
        for proc in running:
            try:
                os.kill(proc.pid, signum)
            except ProcessLookupError:
                pass

    code = 0
    try:
        signal.signal(signal.SIGTERM, forward)
        while pending or running:
            while pending and len(running) < workers:
                spec = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(spec, retry_failed, threads, send))
                proc.start()
                send.close()
                running[proc] = (spec, recv)
            try:
                wait([proc.sentinel for proc in running], timeout=1.0)
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
                continue
            for proc in [p for p in running if not p.is_alive()]:
                spec, recv = running.pop(proc)
                proc.join()
                try:
                    out = recv.recv() if recv.poll() else None
                except (EOFError, OSError):
                    out = None
                recv.close()
                out = out or _record_death(spec, proc.exitcode, proc.pid)
                if out["status"] == "interrupted":
                    code = code or int(out.get("code") or 130)
                    pending.clear()
                outcomes.append(out)
                if bar is not None:
                    bar.update(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
    code = code or (128 + stopping["signum"] if stopping["signum"] else 0)
    if code:
        raise SystemExit(code)
    return summarize_outcomes(outcomes)


# --------------------------------------------------------------------------------------------------- submitit


class CellJob:
    """The job submitit runs for one run; checkpointable, so a preempted or timed-out job is requeued and resumes."""

    def __init__(self, retry_failed: bool = False) -> None:
        self.retry_failed = retry_failed

    def __call__(self, spec: RunSpec) -> dict[str, Any]:
        os.environ.setdefault("WANDB_SILENT", "true")
        return run_one(spec, _train_run, retry_failed=self.retry_failed)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        # the run checkpoints itself (train.checkpoint_every, epoch ends); requeueing the same call resumes it
        return submitit.helpers.DelayedSubmission(CellJob(self.retry_failed), *args, **kwargs)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--backend submitit needs the submitit package: pip install submitit") from None
    return submitit


def run_submitit(cells: list[Cell], *, retry_failed: bool = False, cluster: str | None = None,
                 folder: Path | None = None, timeout_min: int = 60, partition: str | None = None,
                 gpus_per_node: int = 0, cpus_per_task: int = 2, mem_gb: float | None = None,
                 array_parallelism: int = 64, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit one job per run as a job array and wait for them; returns the sweep summary."""
    submitit = _submitit()
    runs = [r for c in cells for r in c.runs]
    runs = [RunSpec(r.cell, r.variant, r.seed, apply_overrides(r.cfg, {"log.progress": False}), r.run_dir)
            for r in runs]
    root = Path(runs[0].cfg.runs_dir) / runs[0].cfg.name
    folder = Path(folder) if folder is not None else root / ".submitit" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": f"feedback-{runs[0].cfg.name}"}
    if executor.cluster == "slurm":
        params.update(slurm_array_parallelism=array_parallelism, cpus_per_task=cpus_per_task, tasks_per_node=1,
                      nodes=1)
        if gpus_per_node:
            params["gpus_per_node"] = gpus_per_node
        if partition:
            params["slurm_partition"] = partition
        if mem_gb:
            params["mem_gb"] = mem_gb
    executor.update_parameters(**params)
    jobs = executor.map_array(CellJob(retry_failed), runs)
    echo(f"submitted {len(jobs)} job(s) to {executor.cluster} (logs under {folder})")
    outcomes = []
    for spec, job in zip(runs, jobs):
        try:
            outcomes.append(job.result())
        except Exception as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            outcomes.append({"label": spec.label, "status": "failed", "error": f"job {job.job_id}: {first}"})
    return summarize_outcomes(outcomes)


def sweep(cells: list[Cell], *, backend: str = "local", workers: int = 2, retry_failed: bool = False,
          progress: bool = True, echo: Callable[[str], None] = print, **submitit_kw: Any) -> dict[str, Any]:
    """Run a grid on ``backend`` (one of :data:`BACKENDS`)."""
    if backend in ("local", "inprocess"):
        return run_sweep(cells, _train_run, progress=progress, echo=echo, retry_failed=retry_failed)
    if backend == "processes":
        return run_processes(cells, workers=workers, retry_failed=retry_failed, progress=progress, echo=echo)
    if backend == "submitit":
        return run_submitit(cells, retry_failed=retry_failed, echo=echo, **submitit_kw)
    raise ConfigError(f"unknown backend '{backend}'; choose from: {', '.join(BACKENDS)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `feedback sweep <experiment> --backend ...`")
