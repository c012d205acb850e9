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

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from experiments.config import ConfigError, apply_overrides
from experiments.sweep import Cell, RunSpec, run_one, run_sweep, summarize_outcomes

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


def run_processes(cells: list[Cell], *, workers: int, retry_failed: bool = False, progress: bool = True,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the grid on ``workers`` local processes; returns the sweep summary (see :func:`run_sweep`)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    runs = [r for c in cells for r in c.runs]
    # per-run bars from several processes would garble the terminal: the parent shows one bar for the sweep
    runs = [RunSpec(r.cell, r.variant, r.seed, apply_overrides(r.cfg, {"log.progress": False}), r.run_dir)
            for r in runs]
    threads = max(1, (os.cpu_count() or 1) // workers)
    outcomes: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc=f"sweep ({workers} workers)", dynamic_ncols=True, unit="run")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads,))
    previous = signal.getsignal(signal.SIGTERM)

    def forward_term(signum: int, frame: Any) -> None:  # pass SIGTERM on to the workers, then wait for them
        for p in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(p.pid, signum)
            except ProcessLookupError:
                pass
        raise KeyboardInterrupt

    code = 0
    try:
        signal.signal(signal.SIGTERM, forward_term)
        futures = [pool.submit(_worker, spec, retry_failed) for spec in runs]
        for fut in as_completed(futures):
            try:
                out = fut.result()
            except Exception as e:  # the worker process died (killed, out of memory)
                out = {"label": "?", "status": "failed", "error": f"worker died: {type(e).__name__}: {e}"}
            if out["status"] == "interrupted":
                code = code or int(out.get("code") or 130)
                for f in futures:
                    f.cancel()
            outcomes.append(out)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        code = code or 128 + signal.SIGINT
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
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
