"""outputs/<study>/report/: the leaderboard as Markdown and CSV, Optuna's own matplotlib plots as
PNG, and one self-contained index.html with all of it. Written at the end of every sweep and by
`make report` (`python -m sweeper.results [overrides]`). Each plot says what it plots: the curves
show every trial's eval losses as it trained, pruned ones visibly cut short; the history, parallel
coordinates and slices plot the objective of the search's completed trials, the value the
leaderboard ranks by (the re-check's runs left out: a lucky seed is not a point of the search);
the importances need pruned trials too, so they use every finished trial's eval loss at the latest
step at least 5 of them reached (losses at one step compare; the sweep guarantees it), and say so."""
import base64
import csv
import html
import io
from pathlib import Path

from optuna.trial import TrialState

from sweeper.recheck import search_trials
from sweeper.results.trials import MIN_POINTS, common_step_study, compared_trials, rows, search_study
from sweeper.settings import SweepSettings

OF_COMPLETED = ("history", "parallel", "slices")  # the objective of completed trials
MIN_COMPLETED = 2  # one point is not a history, a line through one trial not a comparison


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def left_out(study) -> list[str]:
    """Why each plot the study has too few trials for is missing, in the report's words (a report
    that silently shows fewer plots reads as a bug)."""
    out = []
    complete = [t for t in search_trials(study.get_trials(deepcopy=False)) if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_COMPLETED:
        out.append(f"{', '.join(OF_COMPLETED)}: left out: they plot the objective of the search's completed trials, "
                   f"which needs at least {MIN_COMPLETED}; this study has {plural(len(complete), 'completed trial')}")
    elif not complete[0].params:
        out.append(f"parallel, slices: left out: the trials have no searched parameters")
    step, points = common_step_study(study)
    if points is None:
        finished = len(compared_trials(study))
        out.append(f"importances: left out: fANOVA compares trials at one eval step, which needs at least {MIN_POINTS} "
                   f"finished trials that reached it; this study has {plural(finished, 'finished trial')}, re-check runs aside")
    elif not points.best_trial.params:
        out.append("importances: left out: the trials have no searched parameters")
    return out


def _title(ax, text: str) -> None:
    """One title: Optuna's plots set their own, which would be drawn under ours."""
    for where in ("left", "center", "right"):
        ax.set_title("", loc=where)
    ax.set_title(text, loc="left")


def plots(study, objective: str = "eval_loss") -> dict:
    """name -> (matplotlib Figure, caption); only the plots the study has enough trials for
    (left_out says why the others are missing)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as vis

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # A parameter with one value among the completed trials (every one 4-bit, say) gives an axis of
    # zero width; matplotlib widens it itself and says so, twice per plot, in the sweep's output.
    warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
    out = {}
    curves = vis.plot_intermediate_values(study)
    curves.set_xlabel("training step")
    curves.set_ylabel("eval loss")
    _title(curves, "Eval loss of every trial as it trained (pruned trials stop early)")
    out["curves"] = (curves.figure, "Every trial's eval loss as it trained; a pruned trial's line ends where it "
                                    "was stopped.")
    searched = search_study(study)  # the re-check's runs are in the leaderboard's verdict, not here
    complete = searched.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= MIN_COMPLETED:
        what = f"{objective} of the search's {len(complete)} completed trials"
        history = vis.plot_optimization_history(searched, target_name=objective)
        _title(history, f"History: {what}")
        out["history"] = (history.figure, f"Each completed trial's {objective}, in the order they were asked, and "
                                          "the best so far, on the seed each trial ran on (the re-check's runs on "
                                          "more seeds are left out: the verdict above weighs them).")
        if complete[0].params:
            parallel = vis.plot_parallel_coordinate(searched, target_name=objective)
            _title(parallel, f"Parallel coordinates: {what}")
            out["parallel"] = (parallel.figure, f"Each line is one completed trial through its values; its colour is "
                                                f"its {objective}.")
            slices = vis.plot_slice(searched, target_name=objective)  # one Axes per parameter (an array), or one
            axes = list(slices.flat) if hasattr(slices, "flat") else [slices]
            for ax in axes:
                ax.set_title("")
            axes[0].figure.suptitle(f"Slices: {what}, against each parameter")
            out["slices"] = (axes[0].figure, f"Each completed trial's {objective} against each parameter's value.")
    step, points = common_step_study(study)
    if points is not None and points.best_trial.params:
        label = f"eval loss at step {step}"
        importance = vis.plot_param_importances(points, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                target_name=label)
        _title(importance, f"What mattered: fANOVA on the {label}, {len(points.trials)} finished trials")
        out["importances"] = (importance.figure, f"How much of the variance of the {label} each parameter explains "
                                                 f"(fANOVA), over every trial that reached step {step}, pruned ones "
                                                 "included: pruning leaves too few completed trials to say.")
    return out


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _cell(value) -> str:
    """A leaderboard cell: numbers to 4 significant digits (the CSV keeps them whole)."""
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


LONG_CELL = 40  # characters: a cell this long (a failure's reason) wraps; shorter ones (states, numbers) never break


def _td(text: str) -> str:
    return f"<td{' class=long' if len(text) > LONG_CELL else ''}>{html.escape(text)}</td>"


def write_report(study, s: SweepSettings, text: str) -> Path:
    """Writes the report folder; returns its index.html."""
    import matplotlib.pyplot as plt

    folder = s.dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    table = rows(study.get_trials(deepcopy=False), s)
    keys = list(dict.fromkeys(k for r in table for k in r))
    with (folder / "leaderboard.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(table)
    markdown = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    markdown += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in table]
    (folder / "leaderboard.md").write_text("\n".join(markdown) + "\n")
    sections = [f"<p class='missing'>{html.escape(line)}</p>" for line in left_out(study)]
    for name, (figure, caption) in plots(study, s.objective).items():
        png = _png(figure)
        plt.close(figure)
        (folder / f"{name}.png").write_bytes(png)
        sections.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(caption)}</p>"
                        f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    header = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(_td(_cell(r.get(k))) for k in keys) + "</tr>" for r in table)
    # Long lines (the rerun command, a failure's reason) wrap and a wide table scrolls in its own box,
    # so the page fits a 1280 px window (checked in headless Chromium: tests/test_report_page.py).
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(s.study_name)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "pre{white-space:pre-wrap;overflow-wrap:anywhere}.board{overflow-x:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}td{white-space:nowrap}"
            ".long{white-space:normal;min-width:24em;overflow-wrap:anywhere}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>Study {html.escape(s.study_name)}</h1><pre>{html.escape(text)}</pre><h2>leaderboard</h2>"
            f"<div class='board'><table><tr>{header}</tr>{body}</table></div>{''.join(sections)}</body></html>")
    (folder / "index.html").write_text(page)
    return folder / "index.html"
