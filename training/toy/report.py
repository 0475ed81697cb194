"""Write the toy-world report (``vdot toy report``): ``report.json``, a Markdown table and an SVG plot.

The plot is plain SVG written here (no plotting library is a dependency of the pack): one panel per
metric, one bar per model, the teacher's value as a dashed line and a ±10 % band around it (the
"within 10 % of the teacher" target).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from vdot_nodes.core.atomic import atomic_path, atomic_write_text

# (key, title, better) — the metrics shown in the table and the plot.
METRICS = (
    ("fd", "Fréchet distance ↓", "lower"),
    ("object_iou", "object IoU ↑", "higher"),
    ("colour_iou", "colour-bound IoU ↑", "higher"),
    ("flow_epe", "flow EPE (px) ↓", "lower"),
    ("kept_psnr", "kept-region PSNR (dB) ↑", "higher"),
    ("no_object", "videos without an object ↓", "lower"),
    ("diversity", "seed diversity", "neither"),
)


def _fmt(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


CEILING = "VAE round trip of the truth (ceiling)"
TRUTH_ROWS = "the held-out rows' own truth (an exact model on these clips)"


def markdown_table(report: dict) -> str:
    models = report["models"]
    teacher = next((r for r in models.values() if r["steps"] != 4), None)
    head = ("| model | transformer evals / video | s / video | " + " | ".join(t for _, t, _ in METRICS)
            + " | OTD plan diag. mass | ‖g_OT − g_DMD‖ / ‖g_DMD‖ |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in models.items():
        cells = []
        for key, _, better in METRICS:
            cell = _fmt(r.get(key))
            if teacher is not None and r is not teacher and better != "neither":
                t, v = teacher.get(key), r.get(key)
                if t and v is not None and not math.isnan(v) and not math.isnan(t):
                    cell += f" ({100 * (v - t) / abs(t):+.0f} %)"
            cells.append(cell)
        diag, rel = _fmt(r.get("otd_plan_diag_mass")), _fmt(r.get("otd_rel_diff_dmd"))
        lines.append(f"| {name} | {r['transformer_evals']} | {r['seconds_per_video']:.2f} | " + " | ".join(cells)
                     + f" | {diag} | {rel} |")
    blanks = " |" * (len(METRICS) + 1)  # the metrics after FD and the two OTD columns
    lines.append(f"| real vs real (noise floor) | | | {_fmt(report['fd_real_vs_real'])} |" + blanks)
    if "fd_truth_rows" in report:  # reports written before the row existed have none
        lines.append(f"| {TRUTH_ROWS} | | | {_fmt(report['fd_truth_rows'])} |" + blanks)
    ceiling = report.get("vae_round_trip")
    if ceiling:  # reports written before the row existed have none
        lines.append(f"| {CEILING} | | | " + " | ".join(_fmt(ceiling.get(key)) if better != "neither" else ""
                                                   for key, _, better in METRICS) + " | | |")
    return "\n".join(lines)


# The seed table's columns: the main table's metrics that vary by training seed, with their labels, and the
# OTD diagnostics.
SEED_KEYS = tuple((key, label) for key, label, _ in METRICS if key in ("fd", "object_iou", "colour_iou", "kept_psnr")) + (
    ("otd_plan_diag_mass", "OTD plan diag. mass"), ("otd_rel_diff_dmd", "‖g_OT − g_DMD‖ / ‖g_DMD‖"))


def seed_table(report: dict) -> str | None:
    """Per student variant trained with several seeds: mean ± standard deviation over its training seeds
    (and the range), so a difference between variants can be read against the seed-to-seed spread."""
    groups: dict[str, list[dict]] = {}
    for r in report["models"].values():
        if "variant" in r:
            groups.setdefault(r["variant"], []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return None
    lines = ["| variant | training seeds | " + " | ".join(t for _, t in SEED_KEYS) + " |",
             "|" + "---|" * (len(SEED_KEYS) + 2)]
    for name, runs in groups.items():
        cells = []
        for key, _ in SEED_KEYS:
            vals = [r[key] for r in runs if isinstance(r.get(key), float) and not math.isnan(r[key])]
            if not vals:
                cells.append("–")
                continue
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1))
            cells.append(f"{mean:.3f} ± {std:.3f} ({min(vals):.3f}–{max(vals):.3f})")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_table(report: dict, key: str = "object_iou") -> str:
    models = report["models"]
    tasks = sorted({t for r in models.values() for t, m in r["tasks"].items() if key in m})
    lines = ["| model | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    rows = [*models.items(), *([(CEILING, report["vae_round_trip"])] if report.get("vae_round_trip") else [])]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(r["tasks"].get(t, {}).get(key)) for t in tasks) + " |")
    return "\n".join(lines)


def svg_plot(report: dict) -> str:
    """One panel per metric; bars per model; the teacher's value dashed with a ±10 % band."""
    models = list(report["models"].items())
    panel_w, panel_h, top, bottom, left = 230, 200, 30, 60, 40
    colors = ["#555555", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    width = left + panel_w * len(METRICS) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + panel_h + bottom + 40}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    teacher = next((r for _, r in models if r["steps"] != 4), None)
    for p, (key, title, _) in enumerate(METRICS):
        x0 = left + p * panel_w
        vals = [r.get(key) for _, r in models]
        finite = [v for v in vals if v is not None and not math.isnan(v)]
        vmax = max(finite) * 1.15 if finite and max(finite) > 0 else 1.0
        out.append(f'<text x="{x0 + panel_w / 2 - 10}" y="{top - 10}" text-anchor="middle" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{top + panel_h}" x2="{x0 + panel_w - 20}" y2="{top + panel_h}" stroke="black"/>')
        bar_w = (panel_w - 30) / max(len(models), 1)
        if teacher is not None and teacher.get(key) is not None and not math.isnan(teacher[key]):
            ty = top + panel_h * (1 - teacher[key] / vmax)
            band = panel_h * 0.1 * abs(teacher[key]) / vmax
            out.append(f'<rect x="{x0}" y="{ty - band}" width="{panel_w - 20}" height="{2 * band}" fill="#cccccc" opacity="0.4"/>')
            out.append(f'<line x1="{x0}" y1="{ty}" x2="{x0 + panel_w - 20}" y2="{ty}" stroke="#555" stroke-dasharray="4 3"/>')
        for i, v in enumerate(vals):
            if v is None or math.isnan(v):
                continue
            h = panel_h * max(v, 0) / vmax
            x = x0 + 5 + i * bar_w
            out.append(f'<rect x="{x:.1f}" y="{top + panel_h - h:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" '
                       f'fill="{colors[i % len(colors)]}"/>')
            out.append(f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{top + panel_h - h - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:.2f}</text>')
    for i, (name, _) in enumerate(models):
        x = left + i * 150
        y = top + panel_h + bottom
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colors[i % len(colors)]}"/>')
        out.append(f'<text x="{x + 14}" y="{y}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def contact_sheet(sheet: dict[str, dict], path: Path, scale: int = 1) -> None:
    """PNG: one row per task, one column group per video (truth first, then each model), frames first /
    middle / last; ``sheet[task][name]`` = ``[F, H, W, 3]`` 0..1."""
    import cv2
    import numpy as np

    rows = []
    for videos in sheet.values():
        groups = []
        for v in videos.values():
            n = v.shape[0]
            groups.append(np.concatenate([v[t].numpy() for t in (0, n // 2, n - 1)], axis=1))
            groups.append(np.ones((v.shape[1], 4, 3), np.float32))  # white gap between videos
        rows.append(np.concatenate(groups, axis=1))
    img = (np.concatenate(rows, axis=0) * 255).clip(0, 255).astype(np.uint8)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    with atomic_path(path, overwrite=True) as tmp:
        cv2.imwrite(str(tmp), img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _other_guidance(report: dict) -> str:
    """The intro's note on teacher rows sampled at another CFG than the reference teacher's (none: "")."""
    others = [f"{r['cfg']:g}" for r in report["models"].values()
              if r["steps"] != 4 and r.get("cfg", report["cfg_scale"]) != report["cfg_scale"]]
    start, end = report.get("cfg_interval", (0.0, 1.0))
    interval = (f", guided only from {start:g} to {end:g} of the denoising (a guidance interval; the later steps "
                "run the conditional model alone)") if (start, end) != (0.0, 1.0) else ""
    return (f" (and, in the rows so named, at CFG {', '.join(others)})" if others else "") + interval


def write_report(report: dict, out_dir: str | os.PathLike, sheet: dict | None = None) -> Path:
    """Write ``report.json``, ``REPORT.md``, ``report.svg`` (and ``samples.png`` from ``sheet``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sheet:
        contact_sheet(sheet, out / "samples.png")
    atomic_write_text(out / "report.json", json.dumps(report, indent=1), overwrite=True)
    atomic_write_text(out / "report.svg", svg_plot(report), overwrite=True)
    world = report["world"]
    seeds = seed_table(report)
    text = [
        "# Toy-world report",
        "",
        f"Held-out toy clips ({report['clips']} per task, tasks {', '.join(report['tasks'])}), "
        f"{report['seeds']} seeds each, {world['num_frames']}×{world['height']}×{world['width']}; the teacher samples "
        f"with Euler and CFG {report['cfg_scale']:g}{_other_guidance(report)}, the students with the 4-step VDOT sampler "
        "and no CFG. "
        "Metrics: `training/toy/metrics.py` (object IoU and flow EPE over the spatially controlled tasks; "
        "kept-region PSNR over inpaint/outpaint; videos without an object: mean over the tasks; percentages are "
        "relative to the teacher).",
        "",
        markdown_table(report),
        "",
        *(["Students trained with several seeds (mean ± standard deviation over training seeds, range):", "",
           seeds, ""] if seeds else []),
        "Object IoU per task:",
        "",
        task_table(report, "object_iou"),
        "",
        *(["Colour-bound IoU per task (each object's pixels in its own colour, mean over the objects; object IoU "
           "counts any object colour):", "", task_table(report, "colour_iou"), ""]
          if any("colour_iou" in m for r in report["models"].values() for m in r["tasks"].values()) else []),
        *(["Videos without an object per task (the share with a frame that holds almost no object pixel; every "
           "real clip's frames hold some, and each such video weighs heavily on the Fréchet distance):", "",
           task_table(report, "no_object"), ""]
          if any("no_object" in m for r in report["models"].values() for m in r["tasks"].values()) else []),
        "![toy report](report.svg)",
        "",
    ]
    if sheet:
        names = next(iter(sheet.values())).keys()
        text += [f"Samples (first held-out clip per task, seed 0; frames first / middle / last; columns: "
                 f"{', '.join(names)}; rows: {', '.join(sheet)}):", "", "![samples](samples.png)", ""]
    atomic_write_text(out / "REPORT.md", "\n".join(text), overwrite=True)
    return out
