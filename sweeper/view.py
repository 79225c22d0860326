"""What a person watching the sweep sees: one line per trial start, per evaluation and per end,
with the study's tally; on a terminal, a line that follows the current step."""
import json
import sys
from pathlib import Path


def format_values(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class LiveView:
    def __init__(self, n_trials: int, stream=sys.stdout):
        self.n_trials = n_trials
        self.stream = stream
        self.tty = stream.isatty()
        self.number = None
        self.seen: tuple | None = None
        self.evals = 0

    def _print(self, text: str, transient: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("" if transient else "\n"))
        elif not transient:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, number: int, values: dict, tally: dict, retry_of: int | None = None,
              resume_from: Path | None = None) -> None:
        self.number, self.seen, self.evals = number, None, 0
        again = f" (retry of trial {retry_of})" if retry_of is not None else ""
        if resume_from is not None:
            again += f", resuming from {resume_from.name}"
        self._print(f"trial {number} ▸ {format_values(values)}{again}   [{self.tally(tally)}]")

    def progress(self, path: Path) -> None:
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        key = (p["step"], p["eval_loss"])
        if key == self.seen:
            return
        new_eval = self.seen is None or p["eval_loss"] != self.seen[1]
        self.seen = key
        loss = "" if p["eval_loss"] is None else f"  eval_loss {p['eval_loss']:.4f}"
        line = f"trial {self.number}   step {p['step']}/{p['max_steps']}{loss}"
        self._print(line, transient=not (new_eval and p["eval_loss"] is not None))

    def end(self, number: int, state: str, value, steps: int, seconds: float, tally: dict, reason: str = "") -> None:
        loss = f" eval_loss {value:.4f}" if isinstance(value, float) else ""
        why = f" — {reason}" if reason else ""
        self._print(f"trial {number} {state}{loss} after {steps} steps, {seconds:.0f} s{why}   [{self.tally(tally)}]")

    def tally(self, c: dict) -> str:
        to_go = max(0, self.n_trials - c["finished"])
        return f"done {c['complete']} · pruned {c['pruned']} · failed {c['failed']} · to go {to_go}"

    def note(self, text: str) -> None:
        self._print(text)
