"""The study's plan: which data, fits and evaluations ``make results`` runs, as plain commands.

Every job is one ``featurenerf`` command line (or the data-preparation step), with the jobs it waits for
and the file whose presence means it is done, so a second invocation skips finished work and a killed
fit resumes from its ``last.ckpt``. Variants differ only in loss weights passed as overrides of the
category's config; seeds, steps and everything else are shared:

* ``featurenerf``: the config as it is (distillation + ``L_coord``);
* ``featurenerf_nocoord``: ``--model.coord_weight 0``;
* ``pixelnerf``: ``--model.distill_weight 0 --model.coord_weight 0`` (no distillation);
* ``featurenerf_pointwise`` (only when asked for with ``--variants``): ``--model.coord_loss pointwise``;
* ``untrained``: the ``featurenerf`` model built from the config with the first seed, evaluated without
  training (chance; one random initialisation, see :data:`UNTRAINED_SEEDS`);
* ``parts_oracle`` (the diagnostic, first seed of the first category only): the ``featurenerf`` variant
  distilling the ground-truth part maps (``--data.teacher parts_oracle``), evaluated on the part tasks. A
  teacher that *is* the answer checks the distil → render → transfer chain end to end. Planned whenever
  ``featurenerf`` is among the variants.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Variant → loss overrides of the category's config.
VARIANTS: dict[str, list[str]] = {
    "featurenerf": [],
    "featurenerf_nocoord": ["--model.coord_weight", "0"],
    "pixelnerf": ["--model.distill_weight", "0", "--model.coord_weight", "0"],
    "featurenerf_pointwise": ["--model.coord_loss", "pointwise"],
}
#: The variants the study trains unless ``--variants`` says otherwise (the issue's three).
DEFAULT_VARIANTS = ("featurenerf", "featurenerf_nocoord", "pixelnerf")
#: Evaluations by expected cost, most expensive first (featurenerf compares four methods; the untrained
#: model and the oracle skip tasks): the order they are started in once ready.
EVAL_COST_RANK = {
    "featurenerf": 0,
    "pixelnerf": 1,
    "featurenerf_nocoord": 2,
    "untrained": 3,
    "parts_oracle": 4,
}
#: Tasks every checkpoint is evaluated on, 2D before 3D: the keypoint task of a kind reuses every view
#: its part task rendered (the descriptor cache then only has to hold one kind's views at a time).
TASKS = ("novel_view", "part_seg_2d", "keypoints_2d", "part_seg_3d", "keypoints_3d")
#: Variants trained with ``L_coord``: their evaluation also measures the coordinate head
#: (``canonical_coords``: does x̂ name surface points' object-frame positions, consistently across views).
COORD_VARIANTS = ("featurenerf", "featurenerf_pointwise")
COORD_TASK = "canonical_coords"
#: The diagnostic variant: its overrides and the tasks it is evaluated on.
ORACLE = "parts_oracle"
ORACLE_OVERRIDES = ["--data.teacher", "parts_oracle"]
ORACLE_TASKS = ("part_seg_2d", "part_seg_3d")


@dataclass(frozen=True)
class Category:
    """A toy category: its ``data synth`` name, config and data root."""

    name: str
    synth: str
    config: Path
    root: Path


#: Where the study keeps its data: its own folder, so that ``make demo``'s ``data/toy_cars`` (another
#: size and ``data synth``'s default options) is never mistaken for it.
STUDY_DATA = Path("data/study")

#: The categories of the study, by name.
CATEGORIES = {
    "toy_cars": Category("toy_cars", "toycar", Path("configs/toy_cars.yaml"), STUDY_DATA / "toy_cars"),
    "toy_chairs": Category(
        "toy_chairs", "toychair", Path("configs/toy_chairs.yaml"), STUDY_DATA / "toy_chairs"
    ),
}

#: The study's ``data synth`` options: training objects each draw their own views (as SRN's do; test
#: views stay shared, so cross-instance pairs compare the same camera) and the toy car's front differs
#: from its back. On ``data synth``'s defaults (one camera set for all training objects, a nearly
#: front/back-symmetric car) the coordinate head reads a quarter of car views front-for-back and
#: ``featurenerf`` trails ``pixelnerf`` on the cars' keypoints (docs/coords.md).
STUDY_TRAIN_CAMERAS = "per_object"
STUDY_STYLES: tuple[tuple[str, str], ...] = (("toy_cars", "front_back"),)


@dataclass(frozen=True)
class Budget:
    """What the study spends: steps, seeds, pairs, data size, device and parallelism.

    Attributes:
        steps: training steps of every fit (``trainer.max_steps``; no ``max_time``).
        seeds: training seeds (``seed_everything``), each with every variant.
        pairs: evaluation pairs per kind (cross-instance, cross-view), the same for every method.
        task_pairs: ``((task, pairs), ...)``: tasks evaluated on more pairs per kind than ``pairs`` (their
            first ``pairs`` are the other tasks' pairs; ``--tasks.task_pairs``). The 3D tasks are cheap per
            pair, so they buy narrower intervals for the targets' rows.
        pair_seed: seed of the pair draw (one for all methods and training seeds).
        val_objects: held-out objects of the novel-view validation line (copy-the-input baseline).
        objects, views, size: ``data synth`` settings when the data is missing.
        train_cameras, styles: ``data synth`` options (``--train-cameras``; ``--style`` per category name,
            e.g. ``(("toy_cars", "front_back"),)``); data found made with other options is refused.
        device: ``cpu`` or ``cuda``.
        jobs: processes run at once; threads: torch threads per process.
        cache_mb: rendered-descriptor cache of each evaluation (MB; large enough for every view).
        extra: further overrides passed to every fit and evaluation (e.g. ``--model.encoder ...``).
        variants: the trained variants (names of :data:`VARIANTS`), in table order.
        oracle: also fit and evaluate the ``parts_oracle`` diagnostic (first seed, first category).
    """

    steps: int = 400
    seeds: tuple[int, ...] = (0, 1)
    pairs: int = 200
    task_pairs: tuple[tuple[str, int], ...] = ()
    pair_seed: int = 0
    val_objects: int = 4
    objects: int = 64
    views: int = 50
    size: int = 128
    train_cameras: str = "shared"
    styles: tuple[tuple[str, str], ...] = ()
    device: str = "cpu"
    jobs: int = 2
    threads: int = 1
    cache_mb: int = 5120
    extra: tuple[str, ...] = ()
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    oracle: bool = True

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(
                f"variants: unknown {unknown or 'none given'}; expected some of {', '.join(VARIANTS)}"
            )
        alien = [t for t, _ in self.task_pairs if t not in (*TASKS, COORD_TASK)]
        if alien or any(n < 1 for _, n in self.task_pairs):
            raise ValueError(f"task_pairs: expected tasks of the study with >= 1 pair, got {self.task_pairs}")

    def pairs_of(self, task: str) -> int:
        """Pairs per kind ``task`` is evaluated on."""
        return dict(self.task_pairs).get(task, self.pairs)


@dataclass
class Job:
    """One command of the plan.

    Attributes:
        name: unique id (also the log file's name); kind: ``prepare`` | ``fit`` | ``eval``.
        argv: the command, run in the repository root.
        deps: names of jobs that must be done first.
        run_dir: the run folder (fit / eval jobs).
        category, variant, seed: what it belongs to (``variant`` ``untrained`` for the chance model).
        spec: what a finished evaluation must have been run with to be reused.
        step: for the evaluation of a trained run, the training step its checkpoint must be at (a fit
            continued to more steps makes its earlier evaluation stale); None otherwise.
    """

    name: str
    kind: str
    argv: list[str]
    deps: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    category: str = ""
    variant: str = ""
    seed: int = 0
    spec: dict = field(default_factory=dict)
    step: int | None = None

    def command(self) -> str:
        """The command as one shell line (for the report; ``featurenerf`` for this interpreter's CLI)."""
        argv = list(self.argv)
        if argv[:3] == [sys.executable, "-m", "featurenerf.cli"]:
            argv = ["featurenerf", *argv[3:]]
        elif argv[:2] == [sys.executable, "-m"]:
            argv = ["python", *argv[1:]]
        return " ".join(_quote(a) for a in argv)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


def featurenerf_argv(*args: str) -> list[str]:
    """``featurenerf ARGS`` run with this interpreter (the venv's), so no PATH lookup is needed."""
    return [sys.executable, "-m", "featurenerf.cli", *args]


def _common(cat: Category, budget: Budget, seed: int) -> list[str]:
    accel = "gpu" if budget.device == "cuda" else "cpu"
    return [
        "--config",
        str(cat.config),
        "--data.root",
        str(cat.root),
        "--seed_everything",
        str(seed),
        "--trainer.accelerator",
        accel,
        "--trainer.devices",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]


def variant_tasks(variant: str) -> list[str]:
    """The tasks a variant's checkpoint is evaluated on: :data:`TASKS`; the oracle only its part tasks;
    the untrained model without novel views; variants trained with ``L_coord`` also the coordinate head."""
    if variant == ORACLE:
        return list(ORACLE_TASKS)
    # The untrained model's novel views are not a baseline anyone needs (copy_input is the trivial one).
    tasks = [t for t in TASKS if variant != "untrained" or t != "novel_view"]
    return [*tasks, COORD_TASK] if variant in COORD_VARIANTS else tasks


#: How many of the study's seeds the untrained model (the chance row) is evaluated at: the first only. It
#: is a reference, not a compared method, and a second initialisation moved its rows by at most 1.3 points
#: in 3D and 3.1 in 2D (toy cars and chairs, 700-step study of 2026-11-30) for 6 process-minutes, 3 of
#: the study's 60 wall-clock minutes.
UNTRAINED_SEEDS = 1

#: Methods whose per-pair values do not depend on the training seed (they read the data, not the model):
#: only the first seed's ``featurenerf`` evaluation computes them; the report gives the other seeds the
#: same values (:func:`featurenerf.results.report.gather`).
SEED_FREE = ("teacher_2d", "copy_input")


def eval_args(budget: Budget, variant: str, seed: int | None = None) -> list[str]:
    """The task-evaluation options of every evaluation (the same pairs for every method).

    The ``featurenerf`` run is compared with every method; the other variants only give their internal
    features (``featurenerf`` column), so their distilled head, teacher and copy baselines are not
    recomputed, nor are the seed-free baselines (:data:`SEED_FREE`) in any seed's but the first. The descriptor cache holds every rendered view of the pairs, so the part and keypoint
    tasks on the same pairs never render a view twice.
    """
    methods = {
        "featurenerf": "[featurenerf, featurenerf_v, teacher_2d, copy_input]",
        # teacher_2d is the ground-truth map itself at the teacher's resolution: the 2D ceiling.
        ORACLE: "[featurenerf, featurenerf_v, teacher_2d]",
    }.get(variant, "[featurenerf]")
    if variant == "featurenerf" and seed is not None and seed != budget.seeds[0]:
        methods = "[featurenerf, featurenerf_v]"
    tasks = variant_tasks(variant)
    own = {t: n for t, n in budget.task_pairs if t in tasks and n != budget.pairs}
    return [
        "--tasks.methods",
        methods,
        "--tasks.cache_mb",
        str(budget.cache_mb),
        "--task",
        *tasks,
        "--tasks.num_pairs",
        str(budget.pairs),
        *(["--tasks.task_pairs", "{" + ", ".join(f"{t}: {n}" for t, n in own.items()) + "}"] if own else []),
        "--tasks.seed",
        str(budget.pair_seed),
        "--tasks.split",
        "test",
        "--data.val_objects",
        str(budget.val_objects),
        "--trainer.limit_val_batches",
        "1.0",  # the toy configs cap validation batches for speed during fit; tasks need every pair
        # The oracle's miss is read part by part (which parts the field does not resolve).
        *(["--tasks.per_part", "true"] if variant == ORACLE else []),
    ]


def _prepare_job(cat: Category, budget: Budget, out: Path) -> Job:
    """The data-preparation job of ``cat`` (``prepare-<category>``; every fit and evaluation of it waits)."""
    style = dict(budget.styles).get(cat.name)
    # Non-default options join the done marker's spec (so a study asking for other data prepares again,
    # and is refused there if the data differs); default ones leave earlier studies' markers valid.
    options = {"train_cameras": budget.train_cameras} if budget.train_cameras != "shared" else {}
    options |= {"style": style} if style else {}
    return Job(
        f"prepare-{cat.name}",
        "prepare",
        [
            sys.executable,
            "-m",
            "featurenerf.results.prepare",
            "--config",
            str(cat.config),
            "--category",
            cat.synth,
            "--root",
            str(cat.root),
            "--objects",
            str(budget.objects),
            "--views",
            str(budget.views),
            "--size",
            str(budget.size),
            "--train-cameras",
            budget.train_cameras,
            *(["--style", style] if style else []),
            "--device",
            budget.device,
            *budget.extra,
        ],
        category=cat.name,
        run_dir=out / "prepared" / cat.name,
        spec={"config": str(cat.config), "root": str(cat.root), "extra": list(budget.extra), **options},
    )


def _fit_job(cat: Category, budget: Budget, seed: int, variant: str, overrides: list[str], run: Path) -> Job:
    """The training of one variant, seed and category into the run folder ``run`` (under ``<out>/runs``)."""
    return Job(
        f"fit-{run.name}",
        "fit",
        featurenerf_argv(
            "fit",
            *_common(cat, budget, seed),
            # The study's extra overrides first: a variant's own (pixelnerf's zero distillation weight)
            # must win over them, or `--model.distill_weight 1.0` would make the baseline distil.
            *budget.extra,
            *overrides,
            "--trainer.max_steps",
            str(budget.steps),
            "--trainer.max_time",
            "null",
            "--trainer.limit_val_batches",
            "0",  # no validation during fit: the evaluation below measures everything
            "--trainer.default_root_dir",
            str(run.parent),
            "--run_name",
            run.name,
        ),
        deps=[f"prepare-{cat.name}"],
        run_dir=run,
        category=cat.name,
        variant=variant,
        seed=seed,
        spec={"steps": budget.steps},
    )


def _eval_job(fit: Job, run: Path, budget: Budget, spec: dict) -> Job:
    """The task evaluation of the checkpoint ``fit`` leaves in its run folder ``run`` (its ``last.ckpt``)."""
    return Job(
        f"eval-{run.name}",
        "eval",
        featurenerf_argv(
            "validate",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--trainer.accelerator",
            "gpu" if budget.device == "cuda" else "cpu",
            *eval_args(budget, fit.variant, fit.seed),
        ),
        deps=[fit.name],
        run_dir=run,
        category=fit.category,
        variant=fit.variant,
        seed=fit.seed,
        spec={
            **spec,
            "tasks": variant_tasks(fit.variant),
            **({"per_part": True} if fit.variant == ORACLE else {}),
        },
        step=budget.steps,
    )


def _untrained_eval_job(cat: Category, budget: Budget, seed: int, runs: Path, spec: dict) -> Job:
    """The evaluation of the model built from the config with ``seed`` and never trained (chance line)."""
    chance = runs / f"{cat.name}-untrained-s{seed}"
    return Job(
        f"eval-{chance.name}",
        "eval",
        featurenerf_argv(
            "validate",
            *_common(cat, budget, seed),
            "--trainer.default_root_dir",
            str(chance),
            *eval_args(budget, "untrained"),
            *budget.extra,
        ),
        deps=[f"prepare-{cat.name}"],
        run_dir=chance / "eval",
        category=cat.name,
        variant="untrained",
        seed=seed,
        spec=spec,
    )


def make_plan(categories: list[Category], budget: Budget, out: Path) -> list[Job]:
    """Every job of the study, in the order they are started when ready.

    Run folders: ``<out>/runs/<category>-<variant>-s<seed>/``; the untrained model's evaluation writes
    into ``<out>/runs/<category>-untrained-s<seed>/eval/``.
    """
    runs = out / "runs"
    jobs = [_prepare_job(cat, budget, out) for cat in categories]
    evals: list[Job] = []
    spec = {"pairs": budget.pairs, "pair_seed": budget.pair_seed, "tasks": list(TASKS)}
    # Only when set, so evaluations of earlier studies (one count for all tasks) stay reusable.
    own = {t: n for t, n in budget.task_pairs if n != budget.pairs}
    spec |= {"task_pairs": own} if own else {}
    for seed in budget.seeds:
        for cat in categories:
            variants = {v: VARIANTS[v] for v in budget.variants}
            first = seed == budget.seeds[0] and cat == categories[0]
            if budget.oracle and first and "featurenerf" in variants:
                variants[ORACLE] = ORACLE_OVERRIDES
            for variant, overrides in variants.items():
                run = runs / f"{cat.name}-{variant}-s{seed}"
                fit = _fit_job(cat, budget, seed, variant, overrides, run)
                jobs.append(fit)
                evals.append(_eval_job(fit, run, budget, spec))
            if seed in budget.seeds[:UNTRAINED_SEEDS]:
                evals.append(_untrained_eval_job(cat, budget, seed, runs, spec))
    # Longest first: the evaluations run after the fits, two at a time, and the study ends with its last
    # one; short ones last leave the other process idle for less (~75 s of a 60 min study).
    evals.sort(key=lambda j: EVAL_COST_RANK.get(j.variant, 2))
    return jobs + evals
