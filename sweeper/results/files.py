"""outputs/<study>/report/: the leaderboard as Markdown and CSV, Optuna's own matplotlib plots as
PNG, and one self-contained index.html with all of it. Written at the end of every sweep and by
`make report` (`python -m sweeper.results [overrides]`). Pruned trials count: the history,
importances, parallel coordinates and slices plot every finished trial's eval loss at the latest
step at least 5 of them reached (losses at one step compare; the sweep guarantees it), and the
curves plot shows each trial's eval losses, pruned ones visibly cut short."""
import base64
import csv
import html
import io
from pathlib import Path

from sweeper.results.trials import FINISHED, MIN_POINTS, common_step_study, rows
from sweeper.settings import SweepSettings

AT_A_STEP = ("history", "importances", "parallel", "slices")  # plots of the loss at one common step


def left_out(study) -> list[str]:
    """Why each plot the study has too few trials for is missing, in the report's words (a report
    that silently shows fewer plots reads as a bug)."""
    step, points = common_step_study(study)
    if points is None:
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        return [f"{', '.join(AT_A_STEP)}: left out: they compare trials at one eval step, which needs at least "
                f"{MIN_POINTS} finished trials that reached it; this study has {finished} finished "
                f"trial{'s' if finished != 1 else ''}"]
    if len(points.best_trial.params) == 0:
        return [f"{', '.join(AT_A_STEP[1:])}: left out: the trials have no searched parameters"]
    return []


def _title(ax, text: str) -> None:
    """One title: Optuna's own plots put theirs on the left."""
    for where in ("left", "right"):
        ax.set_title("", loc=where)
    ax.set_title(text, loc="left")


def plots(study) -> dict:
    """name -> (matplotlib Figure, caption); only the plots the study has enough trials for
    (left_out says why the others are missing)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as vis

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out = {}
    curves = vis.plot_intermediate_values(study)
    curves.set_xlabel("training step")
    curves.set_ylabel("eval loss")
    _title(curves, "Eval loss of every trial (pruned trials stop early)")
    out["curves"] = (curves.figure, "Every trial's eval loss as it trained; a pruned trial's line ends where it "
                                    "was stopped.")
    step, points = common_step_study(study)
    if points is None:
        return out
    label = f"eval loss at step {step}"
    history = vis.plot_optimization_history(points, target_name=label)
    _title(history, f"Optimization history ({label}, every finished trial)")
    out["history"] = (history.figure, f"Each finished trial's {label}, in the order they were asked, and the best so far.")
    if len(points.best_trial.params) > 0:
        importance = vis.plot_param_importances(points, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                target_name=label)
        _title(importance, f"What mattered: fANOVA importance for the {label}")
        out["importances"] = (importance.figure, "How much of the loss's variance each parameter explains (fANOVA).")
        parallel = vis.plot_parallel_coordinate(points, target_name=label)
        _title(parallel, f"Parallel coordinates ({label})")
        out["parallel"] = (parallel.figure, "Each line is one trial through its values; its colour is its loss.")
        slices = vis.plot_slice(points, target_name=label)  # one Axes per parameter (an array), or one
        first = slices.flat[0] if hasattr(slices, "flat") else slices
        first.figure.suptitle(f"{label} against each parameter")
        out["slices"] = (first.figure, f"The {label} against each parameter's value, one point per trial.")
    return out


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


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
    markdown += ["| " + " | ".join("" if r.get(k) is None else f"{r[k]:.4g}" if isinstance(r.get(k), float)
                                   else str(r[k]) for k in keys) + " |" for r in table]
    (folder / "leaderboard.md").write_text("\n".join(markdown) + "\n")
    sections = [f"<p class='missing'>{html.escape(line)}</p>" for line in left_out(study)]
    for name, (figure, caption) in plots(study).items():
        png = _png(figure)
        plt.close(figure)
        (folder / f"{name}.png").write_bytes(png)
        sections.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(caption)}</p>"
                        f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    header = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(k) is None else str(r[k]))}</td>" for k in keys)
                   + "</tr>" for r in table)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(s.study_name)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style></head><body>"
            f"<h1>Study {html.escape(s.study_name)}</h1><pre>{html.escape(text)}</pre>"
            f"<h2>leaderboard</h2><table><tr>{header}</tr>{body}</table>{''.join(sections)}</body></html>")
    (folder / "index.html").write_text(page)
    return folder / "index.html"
