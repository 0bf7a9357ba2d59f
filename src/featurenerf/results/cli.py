"""``make results`` / ``featurenerf results``: train, evaluate and report the study in one command.

Default budget (2 CPU cores): toy cars and toy chairs, seeds 0 and 1, {cpu_steps} steps per fit,
{cpu_pairs} pairs per kind (the protocol's minimum; evaluation is about half of the time; the whole
study took 57 min on 2 cores of an AVX-512 BF16 CPU, about three times as long on older ones: see the README). ``--device cuda`` runs on a GPU with a longer default
budget ({gpu_steps} steps, {gpu_pairs} pairs). Anything not recognised here is passed to every fit and evaluation as a config override, e.g.
``--model.encoder efficientnet_lite0`` (a variant's own overrides still win: ``pixelnerf`` keeps its zero
distillation weight under ``--model.distill_weight 0.25``). Rerunning is cheap: finished fits and evaluations are reused.
The study makes its data in ``data/study/`` with per-object training views and the front/back toy car
(``--train-cameras shared --style toy_cars=box`` gives ``data synth``'s defaults).
``featurenerf results compare A/results.json B/results.json`` compares two studies pair by pair.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from featurenerf.data.synth_options import TRAIN_CAMERAS

CPU_STEPS = 700
#: ``<out>/last_run.json``: command and wall time of the last invocation that ran jobs (the report cites it).
LAST_RUN = "last_run.json"
GPU_STEPS = 5000
CPU_PAIRS = 200
GPU_PAIRS = 200
#: Tasks evaluated on more pairs than ``--pairs`` by default: the targets' 3D rows. A 3D pair costs little
#: next to a 2D one (no image render), so more of them narrow those rows' intervals for ~4 of 60 minutes.
TASK_PAIRS = (("part_seg_3d", 300), ("keypoints_3d", 600))
TASK_PAIRS_HELP = (
    "pairs per kind for these tasks instead of --pairs (default "
    + " ".join(f"{t}={n}" for t, n in TASK_PAIRS)
    + "); TASK=0 drops one, none drops the defaults"
)


def _parser() -> argparse.ArgumentParser:
    from .plan import CATEGORIES, DEFAULT_VARIANTS, STUDY_DATA, STUDY_STYLES, STUDY_TRAIN_CAMERAS, VARIANTS

    p = argparse.ArgumentParser(
        prog="featurenerf results",
        description=(__doc__ or "")
        .format(cpu_steps=CPU_STEPS, gpu_steps=GPU_STEPS, cpu_pairs=CPU_PAIRS, gpu_pairs=GPU_PAIRS)
        .split("\n\n")[0],
        epilog="featurenerf results compare A/results.json B/results.json: two studies on the same test "
        "pairs, pair by pair (A minus B per variant, with bootstrap intervals).",
    )
    p.add_argument("--out", type=Path, default=Path("outputs/results"), help="runs, logs and timings")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="where results.md/.json and images go")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (>= 2 for the study)")
    p.add_argument(
        "--steps", type=int, default=None, help=f"steps per fit (cpu {CPU_STEPS}, cuda {GPU_STEPS})"
    )
    p.add_argument(
        "--pairs", type=int, default=None, help=f"pairs per kind (cpu {CPU_PAIRS}, cuda {GPU_PAIRS})"
    )
    p.add_argument("--task-pairs", nargs="+", default=None, metavar="TASK=N", help=TASK_PAIRS_HELP)
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=list(VARIANTS),
        help="variants to train (default: featurenerf featurenerf_nocoord pixelnerf)",
    )
    p.add_argument(
        "--no-oracle",
        dest="oracle",
        action="store_false",
        help="skip the parts_oracle diagnostic (one more fit and evaluation)",
    )
    p.add_argument("--pair-seed", type=int, default=0)
    p.add_argument("--val-objects", type=int, default=4, help="held-out objects of the validation line")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--jobs", type=int, default=2, help="processes at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--objects", type=int, default=64, help="data synth objects, when the data is missing (its default)"
    )
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument(
        "--train-cameras",
        choices=TRAIN_CAMERAS,
        default=STUDY_TRAIN_CAMERAS,
        help=f"data synth --train-cameras for the data made (default {STUDY_TRAIN_CAMERAS}; data found made "
        "otherwise is refused)",
    )
    p.add_argument(
        "--style",
        nargs="+",
        default=[],
        metavar="CATEGORY=STYLE",
        help="data synth --style per category (default "
        + (" ".join(f"{c}={s}" for c, s in STUDY_STYLES) or "none")
        + "; the others their own), e.g. toy_cars=box",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where the categories' data lives (default {STUDY_DATA}/)",
    )
    p.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="where toy_cars.yaml / toy_chairs.yaml live (default configs/)",
    )
    p.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from finished evaluations")
    p.add_argument("--dry-run", action="store_true", help="print the plan's commands and exit")
    return p


def _styles(pairs: list[str]) -> tuple[tuple[str, str], ...] | str:
    """``CATEGORY=STYLE`` arguments checked against the categories and their styles, over the study's
    defaults (:data:`~featurenerf.results.plan.STUDY_STYLES`), or why not (one line)."""
    from featurenerf.data.synth.shapes import resolve_style

    from .plan import CATEGORIES, STUDY_STYLES

    out: dict[str, str] = dict(STUDY_STYLES)
    for pair in pairs:
        name, _, style = pair.partition("=")
        if name not in CATEGORIES or not style:
            return f"{pair!r}: expected CATEGORY=STYLE with CATEGORY one of {', '.join(CATEGORIES)}"
        try:
            out[name] = resolve_style(CATEGORIES[name].synth, style)
        except ValueError as err:
            return f"{pair!r}: {err}"
    return tuple(out.items())


def _task_pairs(items: list[str] | None) -> tuple[tuple[str, int], ...] | str:
    """``TASK=N`` arguments over the defaults (:data:`TASK_PAIRS`; ``none`` clears them, ``N`` 0 drops
    one), or why not (one line)."""
    from .plan import COORD_TASK, TASKS

    out = dict(TASK_PAIRS)
    for item in items or []:
        if item == "none":
            out.clear()
            continue
        task, _, count = item.partition("=")
        if task not in (*TASKS, COORD_TASK) or not count.isdigit():
            return f"{item!r}: expected TASK=N with TASK one of {', '.join((*TASKS, COORD_TASK))}"
        out[task] = int(count)
    return tuple((t, n) for t, n in out.items() if n > 0)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _budget(args: argparse.Namespace, extra: list[str]):
    """The study's :class:`~featurenerf.results.plan.Budget` from the parsed arguments, or why not (one
    line). ``extra``: the arguments not recognised here, passed on as config overrides."""
    from .plan import Budget

    bad = [a for a in extra if a.startswith("--") and not a.startswith(("--model.", "--data.", "--trainer."))]
    if bad:
        return f"unknown option {bad[0]} (overrides start with --model., --data. or --trainer.)"
    pairs = args.pairs if args.pairs is not None else (GPU_PAIRS if args.device == "cuda" else CPU_PAIRS)
    if pairs < 1 or not args.seeds or args.jobs < 1 or args.threads < 1:
        return "--pairs, --jobs and --threads must be >= 1 and --seeds non-empty"
    styles = _styles(args.style)
    if isinstance(styles, str):
        return f"--style {styles}"
    task_pairs = _task_pairs(args.task_pairs)
    if isinstance(task_pairs, str):
        return f"--task-pairs {task_pairs}"
    return Budget(
        steps=args.steps or (GPU_STEPS if args.device == "cuda" else CPU_STEPS),
        seeds=tuple(dict.fromkeys(args.seeds)),
        pairs=pairs,
        task_pairs=task_pairs,
        pair_seed=args.pair_seed,
        val_objects=args.val_objects,
        objects=args.objects,
        views=args.views,
        size=args.size,
        train_cameras=args.train_cameras,
        styles=styles,
        device=args.device,
        jobs=args.jobs,
        threads=args.threads,
        extra=tuple(extra),
        variants=tuple(dict.fromkeys(args.variants)),
        oracle=args.oracle,
    )


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace

    from featurenerf.io import atomic_write_json

    from .plan import CATEGORIES, make_plan
    from .report import write_report
    from .runner import PlanError, run_jobs

    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = _parser().parse_known_args(argv)
    budget = _budget(args, extra)
    if isinstance(budget, str):
        print(f"featurenerf results: error: {budget}", file=sys.stderr)
        return 2
    cats = [CATEGORIES[c] for c in args.categories]
    if args.data_dir is not None:
        cats = [replace(c, root=args.data_dir / c.root.name) for c in cats]
    if args.config_dir is not None:
        cats = [replace(c, config=args.config_dir / c.config.name) for c in cats]
    missing = [c.config for c in cats if not c.config.is_file()]
    if missing:
        print(f"featurenerf results: error: {missing[0]}: config missing", file=sys.stderr)
        return 2
    jobs = make_plan(cats, budget, args.out)
    command = "featurenerf results " + " ".join(shlex.quote(a) for a in argv)
    if args.dry_run:
        for job in jobs:
            print(job.command())
        return 0
    start = time.time()
    status: dict[str, str] = {}
    # A terminated run (kill, CI timeout) stops its own child processes, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminate)
    if not args.report_only:
        try:
            status = run_jobs(jobs, budget, args.out)
        except PlanError as err:
            print(f"featurenerf results: error: {err}", file=sys.stderr)
            return 2
    record = args.out / LAST_RUN
    ran = any(s != "skipped" for s in status.values())
    if ran:  # this invocation ran jobs: it is the one to cite
        atomic_write_json(record, {"command": command.strip(), "wall_s": round(time.time() - start, 1)})
    last_run = json.loads(record.read_text()) if record.is_file() else None
    # A rewrite (or a rerun with nothing left to do) gives the invocation that ran the jobs to reproduce it.
    rerun = last_run["command"] if last_run and not ran else None
    md = write_report(
        jobs, budget, args.out, args.docs, command.strip(), last_run, args.replicates, rerun=rerun
    )
    failed = [n for n, s in status.items() if s in ("failed", "blocked")]
    print(f"results: {md} ({len(failed)} job(s) failed or blocked)" if failed else f"results: {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
