"""The benchmark's readable report (``markdown``); its headline numbers come from ``bench_summary``."""

from __future__ import annotations

import occupancy_bench
from bench_summary import TARGETS, gpu_summary, summary


def _f(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _mb(x) -> str:
    return "–" if x is None else f"{x / 2**20:.0f}"


def _fraction(x) -> str:
    """A matmul fraction; one above 1 is flagged where it stands (it is a measurement error)."""
    return f"{_f(x)} ⚠ > 1" if isinstance(x, (int, float)) and x > 1 else _f(x)


def _table(columns: list[str], rows: list[list]) -> list[str]:
    """A Markdown table: the header, its separator, one line per row of cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown(r: dict) -> str:
    """The whole readable report of a benchmark result (``bench.md``)."""
    lines = title_lines(r) + headlines(r) + gpu_block(r)
    for cfg, t in r.get("train_step", {}).items():
        lines += train_step_block(cfg, t)
    for cfg, t in r.get("render", {}).items():
        lines += render_block(cfg, t, r.get("render_device"))
    lines += trained_render_block(r.get("psnr"))
    lines += occupancy_bench.markdown(r.get("occupancy"))
    lines += cache_block(r.get("cache"))
    lines += data_block(r.get("data"))
    lines += scaling_block(r.get("scaling"))
    if r.get("skipped"):
        lines += ["## Skipped sections", ""] + [f"- {k}: {v}" for k, v in r["skipped"].items()] + [""]
    if r.get("errors"):
        lines += ["## Errors", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()] + [""]
    return "\n".join(lines)


def title_lines(r: dict) -> list[str]:
    """Title, machine line (and GPU line), methods, partial-result and load warnings."""
    env = r.get("environment", {})
    lines = [
        "# featurenerf benchmarks",
        "",
        f"{env.get('cpu')} · {env.get('threads')} threads · torch {env.get('torch')} · "
        f"load average at start {env.get('load_average_at_start')} · mode {r.get('mode')} · "
        f"total {_f(r.get('total_s'), 0)} s",
        "",
        f"FLOPs: {r.get('flops_method')}. Timing: {r.get('timing_method')}.",
        "",
    ]
    if r.get("device") == "cuda":
        lines[2:2] = [
            f"GPU: {env.get('cuda')} · CUDA {env.get('cuda_version')} · fp32 matmul precision "
            f"{env.get('float32_matmul_precision')} · train section on cuda",
            "",
        ]
    if r.get("partial"):
        lines += [f"**Partial result** ({r['partial']}); the run has not finished.", ""]
    if r.get("warning"):
        lines += [f"**Warning:** {r['warning']}.", ""]
    return lines


def _flop_unit(t: dict) -> tuple[str, float]:
    """(unit, divisor of GFLOP/s) for a training-step section: TFLOP/s on a GPU."""
    return ("TFLOP/s", 1e3) if t.get("device") == "cuda" else ("GFLOP/s", 1)


def train_step_block(cfg: str, t: dict) -> list[str]:
    """One training-step config: sizes, baseline, the row table, fast-alone, compile and profile notes."""
    sz = t["sizes"]
    on_cuda = t.get("device") == "cuda"
    unit, scale = _flop_unit(t)
    bases = "; ".join(
        f"{dt} {v['gflops_per_s'] / scale:.1f} {unit}" for dt, v in t["matmul_baseline"].items()
    )
    shape = next(iter(t["matmul_baseline"].values()))["shape"]
    where = f" on {t.get('device_name') or 'cuda'}" if on_cuda else ""
    lines = [
        f"## Training step — {cfg}{where} ({sz['objects']}×{sz['rays_per_object']} rays, {sz['image_size']} px, "
        f"{sz['source_views']} source view, samples {sz['samples']}, d_hidden {sz['d_hidden']}, D {sz['feature_dim']})",
        "",
        f"Same-process matmul baseline: {bases} ({shape}); each row's fraction is against its own dtype.",
        "",
    ]
    lines += train_table(t["rows"], on_cuda)
    lines += fast_alone_lines(t)
    lines += compile_lines(t["rows"].get("fast_compile"))
    lines += profile_lines(t.get("profile"))
    return lines + [""]


def train_table(rows: dict, on_cuda: bool) -> list[str]:
    """The per-row training-step table (GPU columns on CUDA); a failed row shows its error."""
    if on_cuda:
        lines = [
            "| row | step s | steps/s | × naive | rays/s | samples/s | GFLOP/step | GFLOP/s | matmul fraction "
            "| CUDA peak MB (first / timed steps) | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines = [
            "| row | step s | × naive | rays/s | samples/s | GFLOP/step | GFLOP/s | matmul fraction | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for k, v in rows.items():
        if "error" in v:
            msg = v["error"][:200].replace("|", "/").replace("\n", " ")
            lines.append(f"| {k} | failed: {msg} |" + " |" * (9 if on_cuda else 7))
        elif on_cuda:
            lines.append(
                f"| {k} | {_f(v['step_s'], 4)} | {_f(v['steps_per_s'], 1)} | {_f(v['step_ratio_vs_naive'])} | "
                f"{_f(v['rays_per_s'], 0)} | {_f(v['samples_per_s'], 0)} | {_f(v['flops'] / 1e9, 1)} | "
                f"{_f(v['gflops_per_s'], 1)} | {_fraction(v['matmul_fraction'])} | "
                f"{_mb(v.get('cuda_peak_bytes'))} / {_mb(v.get('cuda_peak_bytes_timed'))} | "
                f"{_mb(v['peak_rss_bytes'])} |"
            )
        else:
            lines.append(
                f"| {k} | {_f(v['step_s'])} | {_f(v['step_ratio_vs_naive'])} | {_f(v['rays_per_s'], 0)} | "
                f"{_f(v['samples_per_s'], 0)} | {_f(v['flops'] / 1e9, 1)} | {_f(v['gflops_per_s'], 1)} | "
                f"{_fraction(v['matmul_fraction'])} | {_mb(v['peak_rss_bytes'])} |"
            )
    return lines


def fast_alone_lines(t: dict) -> list[str]:
    """The ``fast`` step measured alone (as a training run sees it), if it was."""
    alone = t.get("fast_alone")
    if not alone:
        return []
    unit, scale = _flop_unit(t)
    return [
        "",
        f"`fast` step alone (as a training run sees it; after the interleaved rounds, free pages handed "
        f"back, two warm-up steps, then alternating with the baseline GEMMs only): "
        f"{_f(alone['step_s'], 4 if t.get('device') == 'cuda' else 2)} s, "
        f"{_f(alone['gflops_per_s'] / scale, 1)} {unit} against "
        f"{_f(alone['matmul_baseline_gflops_per_s'] / scale, 1)} → matmul fraction "
        f"**{_fraction(alone['matmul_fraction'])}** (steps {', '.join(_f(x, 2) for x in alone['step_s_all'])} s).",
    ]


def compile_lines(comp: dict | None) -> list[str]:
    """The compile row's first step (its compilation), or its failure."""
    if comp and "error" in comp:
        return ["", f"`fast_compile` failed after {_f(comp.get('first_step_s'), 1)} s: {comp['error']}"]
    if comp:
        return ["", f"`fast_compile`: first step (compilation) {_f(comp.get('first_step_s'), 1)} s."]
    return []


def profile_lines(prof: dict | None) -> list[str]:
    """Where the ``fast`` step's time goes, by category (GPU kernel time on a GPU)."""
    if prof and "error" in prof:
        return ["", f"Profile of the `fast` step failed: {prof['error']}"]
    if not prof:
        return []
    if prof.get("measure") == "gpu":
        head = (
            f"Where the `fast` step's GPU time goes (torch.profiler kernel time by launching op, "
            f"{_f(prof['device_s_total'] * 1e3, 1)} ms GPU; host {_f(prof['cpu_s_total'] * 1e3, 1)} ms CPU):"
        )
    else:
        head = f"Where the `fast` step's CPU time goes (torch.profiler, {_f(prof['cpu_s_total'], 1)} s CPU):"
    lines = ["", head, "", "| category | share |", "|---|---|"]
    return lines + [f"| {k} | {v * 100:.0f} % |" for k, v in prof["fraction"].items()]


def render_block(cfg: str, t: dict, render_device: str | None) -> list[str]:
    """One untrained full-image render config: seconds per image, × naive, samples per ray."""
    on_cpu = " — on the CPU (no GPU path)" if render_device == "cpu" else ""
    lines = [
        f"## Full-image render — {cfg}, {t['image_size']}² ({t['weights']}){on_cpu}",
        "",
        f"Rendered at {t['rendered_at']}²" + (f"; {t['extrapolation']}." if t.get("extrapolation") else "."),
        "",
    ]
    cells = [
        [
            k,
            _f(v["render_s_full_image"]),
            _f(v["ratio_vs_naive"]),
            _f(v["samples_per_ray"], 1),
            _mb(v["peak_rss_bytes"]),
        ]
        for k, v in t["rows"].items()
    ]
    return lines + _table(["row", "s per full image", "× naive", "samples/ray", "peak RSS MB"], cells) + [""]


def trained_render_block(psnr: dict | None) -> list[str]:
    """Render time and PSNR cost of skipping on a trained toy model (or why it was skipped)."""
    if not psnr:
        return []
    lines = ["## Trained toy model: render time and PSNR cost of skipping (held-out views)", ""]
    if "rows" not in psnr:
        return lines + [psnr.get("skipped", ""), ""]
    d = psnr["data"]
    lines += [
        f"{psnr['checkpoint']}; {d['objects']} {d['split']} objects × {d['views_per_object']} views, "
        f"{psnr['image_size']} px; bounds {psnr['bound']}; stop_transmittance {psnr['stop_transmittance']}",
        "",
    ]
    columns = ["row", "render s", "× naive", "samples/ray", "PSNR", "Δ PSNR vs exhaustive (mean / max abs)"]
    cells = [
        [
            k,
            _f(v["render_s"], 3),
            _f(v["ratio_vs_naive"]),
            _f(v["samples_per_ray"], 1),
            _f(v["psnr"]),
            f"{_f(v['psnr_delta_vs_exhaustive_mean'], 4)} / {_f(v['psnr_delta_vs_exhaustive_max_abs'], 4)}",
        ]
        for k, v in psnr["rows"].items()
    ]
    return lines + _table(columns, cells) + [""]


def cache_block(cache: dict | None) -> list[str]:
    """Teacher cache vs recomputing the teacher maps, one sentence."""
    if not cache:
        return []
    return [
        "## Teacher cache",
        "",
        f"{cache['teacher']} at {cache['image_size']} px, {cache['items_per_epoch']} objects per epoch "
        f"({cache['batches_per_epoch']} batches, {cache['rays_per_object']} rays each): epoch "
        f"{_f(cache['epoch_s_cached'])} s with the cache vs {_f(cache['epoch_s_on_the_fly'])} s on the fly "
        f"→ ratio **{_f(cache['ratio_cached_vs_on_the_fly'], 3)}** (cache built once in "
        f"{_f(cache['cache_build_s'], 1)} s).",
        "",
    ]


def data_block(d: dict | None) -> list[str]:
    """Data loading against the step: the in-process breakdown and the wait with the loader's workers."""
    if not d or "wait" not in d:
        return []
    b, w = d["breakdown_num_workers_0"], d["wait"]
    return [
        "## Data loading",
        "",
        f"Toy config, teacher {d['teacher']}: one batch made in one process takes {_f(b['batch_s'], 3)} s "
        f"(image decoding {_f(b['decode_s'], 3)}, teacher cache {_f(b['teacher_cache_s'], 3)}, rays and "
        f"collation {_f(b['rays_and_collate_s'], 3)}). With {w['num_workers']} loader worker(s) feeding "
        f"`fast` steps on {w.get('device', 'cpu')}: wait {_f(w['wait_s'], 4)} s per step of "
        f"{_f(w['step_s'], 4)} s → **{_f(w['wait_fraction_of_step'], 3)}** of the step"
        + (f" (target {TARGETS['gpu_data_wait_fraction']} on a GPU)." if w.get("device") == "cuda" else "."),
        "",
    ]


def scaling_block(sc: dict | None) -> list[str]:
    """Step time vs rays per batch (with its least-squares line) and vs source views."""
    if not sc:
        return []
    lines = [f"## Scaling — {sc['config']}, `fast` row", ""]
    rays = [[e["rays_per_batch"], _f(e["step_s"]), _f(e["s_per_1k_rays"])] for e in sc["rays"]]
    lines += _table(["rays per batch", "step s", "s per 1k rays"], rays)
    fit = sc["rays_fit"]
    lines += [
        "",
        f"Least-squares line: {_f(fit['fixed_s'])} s fixed + {_f(fit['s_per_1k_rays_marginal'])} s per 1k rays "
        f"(largest deviation {_f(fit['max_relative_residual'] * 100, 0)} % of a point's time).",
        "",
    ]
    views = [
        [
            e["source_views"],
            e["rays_per_batch"],
            _f(e["step_s"]),
            _f(sc["views_ratio"][str(e["source_views"])]),
        ]
        for e in sc["views"]
    ]
    return lines + _table(["source views", "rays", "step s", "× 1 view"], views) + [""]


def gpu_block(r: dict) -> list[str]:
    """fp32 vs bf16 autocast on the GPU, one line per config (nothing without CUDA rows)."""
    g = (r.get("summary") or {}).get("gpu") or gpu_summary(r)
    if not g:
        return []
    out = [
        f"## GPU — {g['device']} (CUDA {g.get('cuda_version')}, fp32 matmul precision "
        f"{g.get('float32_matmul_precision')})",
        "",
        '`fast` row in fp32 vs under `torch.autocast("cuda", torch.bfloat16)` (Lightning\'s bf16-mixed); matmul '
        "fraction = step FLOP/s ÷ same-process GEMM FLOP/s in the row's dtype; CUDA peak = "
        "`torch.cuda.max_memory_allocated` over the row's timed steps (reset before each; parameters, Adam "
        "state and batch included).",
        "",
        "| config | rays/step | fp32 step s | bf16 step s | bf16 ÷ fp32 | fp32 steps/s | bf16 steps/s "
        "| matmul fraction fp32 / bf16 | GEMM TFLOP/s fp32 / bf16 | CUDA peak MB fp32 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg, e in g["configs"].items():
        frac, base = e["matmul_fraction"], e["matmul_baseline_gflops_per_s"]
        peak = e["cuda_peak_mb_timed"]
        tflops = [None if base.get(dt) is None else base[dt] / 1e3 for dt in ("float32", "bfloat16")]
        out.append(
            f"| {cfg} | {e['rays_per_step']} | {_f(e['fp32_step_s'], 4)} | {_f(e['bf16_step_s'], 4)} | "
            f"{_f(e.get('bf16_vs_fp32'))} | {_f(e['fp32_steps_per_s'], 1)} | {_f(e['bf16_steps_per_s'], 1)} | "
            f"{_f(frac['float32'])} / {_f(frac['bfloat16'])} | {_f(tflops[0], 1)} / {_f(tflops[1], 1)} | "
            f"{_f(peak.get('fast'), 0)} / {_f(peak.get('fast_bf16'), 0)} |"
        )
    notes = []
    for cfg, e in g["configs"].items():
        for key, row in (("compile", "fast_compile"), ("graph", "fast_graph")):
            comp = e.get(key)
            if comp and "error" in comp:
                notes.append(f"- {cfg}: `{row}` failed: {comp['error'][:300]}".replace("\n", " "))
            elif comp:
                notes.append(
                    f"- {cfg}: `{row}` step {_f(comp['step_s'], 4)} s "
                    f"(× eager fp32 {_f(comp['step_s'] / e['fp32_step_s'] if e['fp32_step_s'] else None)}), "
                    f"compilation {_f(comp.get('compile_s'), 0)} s"
                )
        if "graph_vs_fast" in e:
            notes.append(
                f"- {cfg}: whole-step graph ÷ today's fp32 `fast` step **{_f(e['graph_vs_fast'], 3)}** "
                f"(target ≤ 0.5); ÷ `naive` {_f(e.get('graph_vs_naive'), 3)}; `fast` ÷ `naive` "
                f"{_f(e.get('fast_vs_naive'), 3)} (target ≤ 0.5)"
            )
        if e.get("kernel_fraction"):
            fracs = ", ".join(f"{k} {_f(v, 2)}" for k, v in e["kernel_fraction"].items())
            notes.append(f"- {cfg}: GPU kernel time ÷ wall time (one profiled step): {fracs}")
    return out + ([""] + notes if notes else []) + [""]


def fraction_headlines(t: dict) -> list[tuple[str, str, str]]:
    """Headline rows of a config's summary: the baseline GEMM spread, and each fraction > 1 flagged."""
    out = []
    for dt, sp in t.get("matmul_baseline_spread", {}).items():
        if sp.get("n"):
            out.append(
                (
                    f"… baseline GEMM {dt}, min / median / max over {sp['n']} timings",
                    f"{_f(sp['min'], 1)} / {_f(sp['median'], 1)} / {_f(sp['max'], 1)} GFLOP/s",
                    "",
                )
            )
    for k, note in t.get("fraction_errors", {}).items():
        out.append((f"**measurement error** ({k})", note, "fraction ≤ 1"))
    return out


def headlines(r: dict) -> list[str]:
    """The issue's targets next to the measured figures (what is missing is left out)."""
    s = r.get("summary") or summary(r)
    cfg = "srn_cars" if "srn_cars" in s["train_step"] else next(iter(s["train_step"]), None)
    rows = train_headlines(r, cfg, s["train_step"][cfg]) if cfg else []
    for other, t in s["train_step"].items():  # impossible fractions of every other config, too
        if other != cfg:
            rows += [(f"{a} ({other})", b, c) for a, b, c in fraction_headlines(t) if "error" in a]
    rows += render_headlines(s)
    rows += occupancy_bench.headlines(r.get("occupancy"))
    if "cache_ratio" in s:
        rows.append(
            (
                "training epoch with teacher cache ÷ recomputing teacher maps",
                _f(s["cache_ratio"], 3),
                TARGETS["cache_ratio"],
            )
        )
    rows += gpu_headlines(s)
    if not rows:
        return []
    out = ["## Headlines", "", "| figure | measured | target |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def gpu_headlines(s: dict) -> list[tuple[str, str, str]]:
    """The GPU targets: whole-step graph ÷ fp32 ``fast``, ``fast`` ÷ ``naive`` at the paper batch, bf16 ÷ fp32
    at 4× rays, and the data wait on the GPU (rows that were not measured are left out)."""
    rows = []
    configs = (s.get("gpu") or {}).get("configs", {})
    for cfg, e in configs.items():
        if "graph_vs_fast" in e:
            kernel = e.get("kernel_fraction", {}).get("fast_graph")
            rows.append(
                (
                    f"GPU whole-step graph ÷ fp32 `fast` step, same run ({cfg}; kernel ÷ wall {_f(kernel)})",
                    _f(e["graph_vs_fast"], 3),
                    TARGETS["gpu_graph_vs_fast"],
                )
            )
    ratios = (  # (config, ratio, label, target key)
        (
            "srn_cars",
            "fast_vs_naive",
            "GPU `fast` step ÷ `naive` (srn_cars, paper batch)",
            "gpu_fast_vs_naive",
        ),
        (
            "srn_cars_x4rays",
            "bf16_vs_fp32",
            "GPU bf16 step ÷ fp32 step (srn_cars, 4× rays)",
            "gpu_bf16_vs_fp32_x4rays",
        ),
    )
    for cfg, ratio, label, target in ratios:
        value = (configs.get(cfg) or {}).get(ratio)
        if value is not None:
            rows.append((label, _f(value, 3), TARGETS[target]))
    wait = s.get("data_wait")
    if wait:
        on_gpu = wait["device"] == "cuda"
        rows.append(
            (
                f"data wait ÷ step (toy, {wait['num_workers']} loader workers, {wait['device']})",
                _f(wait["wait_fraction_of_step"], 3),
                TARGETS["gpu_data_wait_fraction"] if on_gpu else "",
            )
        )
    return rows


def train_headlines(r: dict, cfg: str, t: dict) -> list[tuple[str, str, str]]:
    """Headline rows of the headline config's training step: fraction, × naive, bf16 and compile ratios."""
    on_cuda = r.get("train_step", {}).get(cfg, {}).get("device") == "cuda"
    # The targets are CPU targets; on a GPU the rows are reported, not judged.
    rows = matmul_headlines(cfg, t, on_cuda)
    ratio = t["step_ratio_vs_naive"]
    rows.append(
        (
            f"training step time ÷ naive ({cfg}, fast)",
            _f(ratio.get("fast")),
            "" if on_cuda else TARGETS["step_ratio_vs_naive"],
        )
    )
    if "reuse" in ratio:
        rows.append((f"… fine reuse alone ({cfg})", _f(ratio["reuse"]), ""))
    if "bf16_step_vs_fp32" in t:
        env = r.get("environment", {})
        hw = (
            f"GPU: {env.get('cuda')}"
            if on_cuda
            else "this CPU has bf16 units"
            if env.get("bf16_hardware")
            else "no bf16 units"
        )
        rows.append((f"bf16 autocast step ÷ fp32 step ({cfg}; {hw})", _f(t["bf16_step_vs_fp32"]), ""))
    if "compile_step_vs_eager" in t:
        rows.append(
            (
                f"compiled step ÷ eager step ({cfg}); compile time {_f(t.get('compile_s'), 0)} s",
                _f(t["compile_step_vs_eager"]),
                "opt-in",
            )
        )
    return rows


def matmul_headlines(cfg: str, t: dict, on_cuda: bool) -> list[tuple[str, str, str]]:
    """The matmul fraction headline (fast step alone when measured, else the fast row), naive's, the spread."""
    frac = t["matmul_fraction"]
    gpu = ", GPU" if on_cuda else ""
    target = "" if on_cuda else TARGETS["matmul_fraction"]
    if "fast_alone_matmul_fraction" in t:
        rows = [
            (
                f"training step FLOP/s ÷ same-process matmul FLOP/s ({cfg}, fast step alone as training "
                f"runs it, fp32{gpu})",
                _f(t["fast_alone_matmul_fraction"]),
                target,
            ),
            ("… same, fast row in the rounds interleaved with the other rows", _f(frac.get("fast")), ""),
        ]
    else:
        rows = [
            (
                f"training step FLOP/s ÷ same-process matmul FLOP/s ({cfg}, fast, fp32{gpu})",
                _f(frac.get("fast")),
                target,
            )
        ]
    rows.append(("… same, naive (pixelNeRF's way)", _f(frac.get("naive")), ""))
    return rows + fraction_headlines(t)


def render_headlines(s: dict) -> list[tuple[str, str, str]]:
    """Render ÷ naive and PSNR cost of skipping (trained toy), render ÷ naive of the untrained configs."""
    rows = []
    trained = s.get("trained_toy_render") or {}
    for k in ("skip", "skip_box", "grid"):
        if k in trained:
            v = trained[k]
            rows.append(
                (
                    f"full-image render ÷ naive (trained toy, {k})",
                    _f(v["ratio_vs_naive"]),
                    TARGETS["render_ratio_vs_naive"],
                )
            )
            rows.append(
                (
                    f"… PSNR change vs exhaustive render, mean / max abs over views ({k})",
                    f"{v['psnr_delta_vs_exhaustive_mean']:+.4f} / {v['psnr_delta_vs_exhaustive_max_abs']:.4f} dB",
                    TARGETS["psnr_delta_db"],
                )
            )
    for name, rend in s.get("render", {}).items():
        if "skip" in rend:
            rows.append(
                (
                    f"full-image render ÷ naive ({name}, untrained weights, skip)",
                    _f(rend["skip"]["ratio_vs_naive"]),
                    "",
                )
            )
    return rows
