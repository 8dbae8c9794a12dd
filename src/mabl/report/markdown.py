"""The report's Markdown: final-performance table, per-seed means, the paper alongside, footnotes."""

from __future__ import annotations

from collections.abc import Sequence

from mabl.report.paper import ALGO_TO_PAPER, PAPER_ALGOS, PAPER_TABLE1, PaperRow, paper_task
from mabl.report.runs import SkippedRun, base_algo, order_algos
from mabl.report.stats import CellStats


def _fmt_steps(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return str(value)


def _fmt_num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


METRIC_LABELS = {"win_rate": "win rate %", "arrived": "arrived %", "return": "return"}
PAPER_METRICS = {"win_rate": "win rate %", "arrived": "arrived %", "return": "reward"}
"""Our per-episode metric -> the paper's Table 1 metric it can stand beside."""


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _fmt_hours(wall_s: float | None, cpu_s: float | None) -> str:
    if wall_s is None or cpu_s is None:
        return "—"
    return f"{wall_s / 3600:.2f} / {cpu_s / 3600:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_table(stats: dict[tuple[str, str], CellStats], paper: dict[str, PaperRow] | None = PAPER_TABLE1,
                   skipped: Sequence[SkippedRun] = (), intervals: dict | None = None,
                   intervals_note: str | None = None) -> str:
    """The report as Markdown: the final-performance table (rows = tasks, columns = algorithms,
    cells ``mean ± std``), per-seed means, the IQM and mean over seeds with 95 % bootstrap intervals
    (``intervals``: :func:`mabl.report.seeds.seed_intervals`; ``intervals_note``: why there are
    none), the paper's Table 1 beside ours for tasks it has, skipped runs, and footnotes stating the
    exact rules. ``paper=None`` leaves the paper out."""
    cells = list(stats.values())
    if not cells:
        return "# MABL report\n\nNo runs.\n"
    window = cells[0].window
    tasks = sorted({c.task for c in cells})
    algos = order_algos(c.algo for c in cells)
    out = ["# MABL report", "", f"## Final performance (last {_fmt_steps(window)} env steps)", ""]
    rows = []
    for task in tasks:
        metric = next(c.metric for c in cells if c.task == task)
        row = [task, metric_label(metric)]
        for algo in algos:
            cell = stats.get((task, algo))
            row.append(cell.text() if cell else "—")
        rows.append(row)
    out += _table(["Task", "Metric", *algos], rows)
    out += ["", "Cells: mean ± std (population, ddof=0) of the per-episode values pooled over all seeds [1].", ""]

    out += ["## Per-seed means", ""]
    rows = []
    for cell in cells:
        rows.append([cell.task, cell.algo, str(cell.n_seeds),
                     ", ".join(str(s.seed) for s in cell.seeds),
                     ", ".join(_fmt_num(s.mean, cell.digits) for s in cell.seeds),
                     ", ".join(str(s.n_episodes) for s in cell.seeds),
                     ", ".join(_fmt_steps(s.final_env_step) for s in cell.seeds),
                     str(cell.n_episodes),
                     ", ".join(_fmt_hours(s.wall_s, s.cpu_s) for s in cell.seeds)])
    out += _table(["Task", "Algorithm", "Seeds", "Seed ids", "Per-seed means", "Episodes per seed",
                   "Final env step per seed", "Pooled episodes", "Wall / CPU hours per seed"], rows)
    out.append("")

    if intervals:
        out += ["## Over seeds: IQM and mean with 95 % confidence intervals", ""]
        rows = []
        for cell in cells:
            iv = intervals[(cell.task, cell.algo)]
            d = cell.digits
            rows.append([cell.task, cell.algo, metric_label(cell.metric), str(iv.n_seeds),
                         f"{_fmt_num(iv.iqm, d)} [{_fmt_num(iv.iqm_ci[0], d)}, {_fmt_num(iv.iqm_ci[1], d)}]",
                         f"{_fmt_num(iv.mean, d)} [{_fmt_num(iv.mean_ci[0], d)}, {_fmt_num(iv.mean_ci[1], d)}]",
                         cell.text()])
        out += _table(["Task", "Algorithm", "Metric", "Seeds", "IQM [95% CI]", "Mean over seeds [95% CI]",
                       "Paper metric (pooled mean ± std)"], rows)
        method = next(iter(intervals.values())).method
        out += ["", "Scores: each seed's mean over its final window (the per-seed means above). IQM: interquartile "
                "mean over seeds (rliable.metrics.aggregate_iqm; the plain mean below 4 seeds). Intervals: "
                f"{method}, 95 %. Few seeds give wide intervals.", ""]
    elif intervals_note:
        out += ["## Over seeds", "", intervals_note, ""]

    compared = [(task, paper_task(task, paper)) for task in tasks] if paper else []
    task_metric = {c.task: c.metric for c in cells}
    # the paper's column only beside the same kind of number (SMAC: win rates, Flatland: arrived %, MAMuJoCo: reward)
    compared = [(task, row) for task, row in compared if row is not None
                and paper[row].metric == PAPER_METRICS[task_metric[task]]]
    if compared:
        out += ["## Paper Table 1 alongside", ""]
        rows = []
        for task, row_name in compared:
            prow = paper[row_name]
            budgets = sorted({s.steps for (t, _), c in stats.items() if t == task for s in c.seeds})
            row = [task, prow.task, f"{prow.budget} / {', '.join(_fmt_steps(b) for b in budgets)}", prow.metric]
            for palgo in PAPER_ALGOS:
                ours = [c for (t, a), c in stats.items() if t == task and ALGO_TO_PAPER.get(base_algo(a)) == palgo]
                # each variant of the algorithm with its settings (mabl.report.variants)
                ours_text = "; ".join(c.text() + c.algo[len(base_algo(c.algo)):] for c in ours) or "—"
                row.append(f"{ours_text} (paper {prow.values.get(palgo, '—')})")
            rows.append(row)
        out += _table(["Task", "Paper task", "Budget (paper / ours)", "Paper metric", *PAPER_ALGOS], rows)
        out += ["", "Each cell: ours (paper). Ours: mabl→MABL, dreamer→Dreamer-v2, mappo→MAPPO, mamba→MAMBA, "
                "mag→MAG; mabl-sg is not in Table 1.", ""]

    if skipped:
        out += ["## Skipped runs", ""]
        out += _table(["Run directory", "Reason"], [[s.run_dir, s.reason] for s in skipped])
        out.append("")

    out += ["---", "",
            f"[1] Metric: per run, the episodes whose end step satisfies env_step > final − {window}, where final "
            "is the env_step of the run's last episode (an episode ending exactly at final − "
            f"{window} is excluded). Per-episode value: 100 × win (0 or 100) where the Metric "
            "column says win rate, 100 × the fraction of trains that arrived where it says arrived %, else the "
            "episode return. The windows' episodes of all seeds of a "
            "(task, algorithm) cell are pooled; the cell is their mean ± population std (ddof=0), so for win "
            "rates the std is that of 0/100 outcomes and seeds with more episodes weigh more. Per-seed means "
            "are each seed's mean over its own window."]
    if compared:
        out += ["", "[2] Paper: Table 1 of the MABL paper (AAMAS 2024); SMAC win rate %, Flatland the percentage of "
                "trains that arrive (the released runner logs the arrived fraction as its reward), MAMuJoCo reward; "
                "mean ± std over the last 15k steps over 3 seeds, copied as printed, at the paper's budgets."]
        if any(task.startswith("smax:") for task, _ in compared):
            out += ["", "[3] smax:<map> tasks run SMAX (JaxMARL), a stand-in for SMAC, not SMAC itself: "
                    "its units, dynamics and win conditions differ, so its returns and win rates are not "
                    "directly comparable with the paper's SMAC numbers."]
    return "\n".join(out) + "\n"
