"""Run the plan's jobs as parallel processes, resumably.

A job is *done* when its marker says so: ``<run>/done.json`` (fit: the steps it reached),
``<run>/tasks/eval.json`` (evaluation: the pairs it used), ``<out>/prepared/<category>/done.json``
(data and teacher cache, for that config, root and overrides). Finished jobs are skipped, so a second invocation does no training; a fit
with a ``last.ckpt`` but no marker (killed) resumes from it with ``--ckpt_path``. Each job's output goes
to ``<out>/logs/<job>.log`` and its wall time to ``<out>/timings.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from featurenerf.errors import ConfigError
from featurenerf.io import atomic_write_json

from .plan import Budget, Job, variant_tasks

FIT_MARKER = "done.json"
EVAL_MARKER = Path("tasks") / "eval.json"


class PlanError(ConfigError):
    """A finished run disagrees with the requested budget (one line says which and what to do)."""


def fit_state(job: Job) -> str:
    """``done`` | ``resume`` | ``fresh`` for a fit job (see the module docstring)."""
    marker = job.run_dir / FIT_MARKER
    if marker.exists():
        steps = json.loads(marker.read_text()).get("steps")
        want = job.spec["steps"]
        if steps == want:
            return "done"
        if steps > want:
            raise PlanError(
                f"{job.run_dir}: trained for {steps} steps but --steps is {want}; "
                "use the same --steps or another --out"
            )
    if (job.run_dir / "checkpoints" / "last.ckpt").exists():
        return "resume"
    return "fresh"


def is_done(job: Job) -> bool:
    """Whether the job's result is already there (with the same spec).

    An evaluation also needs its per-pair values of every task it ran: any later ``validate`` of the same
    run writes into the same ``tasks/`` folder, and its results must not pass for the study's. And it must
    have measured the checkpoint at the fit's steps: a fit continued with a larger ``--steps`` makes the
    evaluation of its earlier checkpoint stale.
    """
    if job.kind == "fit":
        return fit_state(job) == "done"
    marker = job.run_dir / (EVAL_MARKER if job.kind == "eval" else FIT_MARKER)
    if not marker.exists() or json.loads(marker.read_text()).get("spec") != job.spec:
        return False
    if job.kind != "eval":
        return True
    per_pair = job.run_dir / "tasks" / "per_pair.json"
    try:
        written = json.loads(per_pair.read_text())
    except (OSError, ValueError):
        return False
    if job.step is not None and written.get("step") != job.step:
        return False
    return set(variant_tasks(job.variant)) <= set(written.get("tasks", {}))


def launch_argv(job: Job) -> list[str]:
    """The command to start now: a killed fit resumes from its last checkpoint; a fit that never saved
    one starts over in a clean folder (``fit`` would otherwise pick a new folder name)."""
    if job.kind != "fit":
        return job.argv
    state = fit_state(job)
    if state == "resume":
        return [*job.argv, "--ckpt_path", str(job.run_dir / "checkpoints" / "last.ckpt")]
    if job.run_dir.exists():
        shutil.rmtree(job.run_dir)
    return job.argv


def finish(job: Job, seconds: float) -> None:
    """Write the job's done marker."""
    if job.kind == "fit":
        marker = job.run_dir / FIT_MARKER
        before = json.loads(marker.read_text()).get("wall_s", 0.0) if marker.exists() else 0.0
        atomic_write_json(marker, {"steps": job.spec["steps"], "wall_s": before + seconds})
    else:
        marker = job.run_dir / (EVAL_MARKER if job.kind == "eval" else FIT_MARKER)
        atomic_write_json(marker, {"spec": job.spec, "wall_s": seconds})


def job_env(budget: Budget) -> dict[str, str]:
    """The environment of every job: ``threads`` torch/BLAS threads, offline logging."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(budget.threads)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("FEATURENERF_RUN_DIR", None)
    return env


def _record(timings: Path, job: Job, seconds: float, rc: int, threads: int) -> None:
    data = json.loads(timings.read_text()) if timings.exists() else {}
    data.setdefault(job.name, []).append(
        {"wall_s": round(seconds, 2), "rc": rc, "threads": threads, "end": time.strftime("%Y-%m-%d %H:%M:%S")}
    )
    atomic_write_json(timings, data)


def run_jobs(jobs: list[Job], budget: Budget, out: Path, log=print) -> dict[str, str]:
    """Run every job not yet done, ``budget.jobs`` at a time, each after its dependencies.

    Returns:
        job name → ``done`` (finished now), ``skipped`` (done before), ``failed`` or ``blocked`` (a
        dependency failed).
    """
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings = out / "timings.json"
    status: dict[str, str] = {}
    for job in jobs:
        if is_done(job):
            status[job.name] = "skipped"
    pending = [j for j in jobs if j.name not in status]
    running: dict[str, tuple[Job, subprocess.Popen, float, object]] = {}
    env = job_env(budget)
    try:
        _loop(pending, running, status, budget, logs, timings, env, log)
    except BaseException:
        interrupt([proc for _, proc, _, _ in running.values()])  # our own children, each by its id
        raise
    return status


def _loop(pending, running, status, budget, logs, timings, env, log) -> None:
    """Start ready jobs up to ``budget.jobs`` at a time and collect finished ones until none is left."""
    while pending or running:
        for job in list(pending):
            if len(running) >= max(1, budget.jobs):
                break
            states = [status.get(d) for d in job.deps]
            if any(s in ("failed", "blocked") for s in states):
                status[job.name] = "blocked"
                pending.remove(job)
                log(f"results: {job.name} blocked (a job it needs failed)")
                continue
            if not all(s in ("done", "skipped") for s in states):
                continue
            argv = launch_argv(job)
            fh = open(logs / f"{job.name}.log", "a")  # noqa: SIM115 - closed when the process ends
            fh.write(f"$ {' '.join(argv)}\n")
            fh.flush()
            log(f"results: start {job.name}")
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
            running[job.name] = (job, proc, time.time(), fh)
            pending.remove(job)
        time.sleep(0.2)
        for name, (job, proc, start, fh) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            fh.close()
            seconds = time.time() - start
            _record(timings, job, seconds, rc, budget.threads)
            del running[name]
            if rc == 0:
                finish(job, seconds)
                status[name] = "done"
                log(f"results: {name} done in {seconds:.0f} s")
            else:
                status[name] = "failed"
                log(f"results: {name} FAILED (exit {rc}); see {logs / (name + '.log')}")
        if (
            pending
            and not running
            and not any(all(status.get(d) in ("done", "skipped") for d in j.deps) for j in pending)
        ):
            for job in pending:
                status[job.name] = "blocked"
            pending.clear()


def interrupt(running_procs: list[subprocess.Popen]) -> None:
    """Terminate the given child processes (on Ctrl-C), each by its own id."""
    for proc in running_procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in running_procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    sys.stdout.flush()
