"""What a person watching the sweep sees: one line per trial start, per evaluation and per end,
with the study's tally (sweep.quiet: ends only). On a terminal, a block below them shows every
running trial (slot, values, what it is doing: loading, the step and last eval loss, saving),
redrawn in place."""
import sys
from pathlib import Path


def format_values(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


PHASES = {"starting": "starting", "loading": "loading data and model", "saving": "saving"}


class LiveView:
    def __init__(self, n_trials: int, stream=None, quiet: bool = False):
        self.n_trials = n_trials
        self.quiet = quiet  # no start or eval lines: a long sweep's log keeps its ends, notes and report
        self.stream = stream or sys.stdout  # the stdout of now, not of when this module was imported
        self.tty = self.stream.isatty()
        self.trials: dict[int, dict] = {}  # running: slot, values, step, max_steps, eval_loss
        self.block = 0                      # lines of the running block now on screen
        self.last_tally = ""

    def _erase_block(self) -> str:
        return "\033[1A\033[2K" * self.block

    def _block_lines(self) -> list[str]:
        lines = []
        for number, t in sorted(self.trials.items()):
            loss = "" if t["eval_loss"] is None else f"  eval_loss {t['eval_loss']:.4f}"
            doing = f"step {t['step']}/{t['max_steps']}{loss}" if t["phase"] == "training" else \
                PHASES.get(t["phase"], t["phase"])
            lines.append(f"  ▸ trial {number} [{t['slot']}] {doing}  {format_values(t['values'])}")
        if lines:
            lines.append(f"  {self.last_tally}")
        return lines

    def _print(self, text: str | None) -> None:
        """An event line (kept), then the running block redrawn on a terminal."""
        if not self.tty:
            if text is not None:
                self.stream.write(text + "\n")
            self.stream.flush()
            return
        out = self._erase_block() + ("" if text is None else text + "\n")
        lines = self._block_lines()
        self.stream.write(out + "".join(line + "\n" for line in lines))
        self.block = len(lines)
        self.stream.flush()

    def start(self, number: int, values: dict, tally: dict, retry_of: int | None = None,
              resume_from: Path | None = None, slot: str = "cpu", recheck: tuple[int, int] | None = None,
              continues: int | None = None) -> None:
        """recheck: (the trial whose values it repeats, the seed) for a re-check run; continues: the
        paused trial an asha continuation goes on from."""
        again = f" (re-check of trial {recheck[0]}, seed {recheck[1]})" if recheck is not None else ""
        again += f" (continues trial {continues})" if continues is not None else ""
        again += f" (retry of trial {retry_of})" if retry_of is not None else ""
        if resume_from is not None:
            again += f", resuming from {resume_from.name}"
        self.trials[number] = {"slot": slot, "values": values, "step": 0, "max_steps": "?", "eval_loss": None,
                               "phase": "starting"}
        self.last_tally = self.tally(tally)
        where = f" [{slot}]" if slot != "cpu" else ""
        self._print(None if self.quiet else f"trial {number}{where} ▸ {format_values(values)}{again}   "
                                            f"[{self.last_tally}]")

    def progress(self, number: int, p: dict | None) -> None:
        """A running trial's progress.json, as its executor read it."""
        t = self.trials.get(number)
        if t is None or p is None or (p["step"], p["eval_loss"], p.get("phase")) == (t["step"], t["eval_loss"], t["phase"]):
            return
        new_eval = p["eval_loss"] is not None and p["eval_loss"] != t["eval_loss"]
        t.update(step=p["step"], max_steps=p["max_steps"] or "?", eval_loss=p["eval_loss"], phase=p.get("phase", t["phase"]))
        if new_eval and not self.quiet:
            self._print(f"trial {number}   step {p['step']}/{p['max_steps']}  eval_loss {p['eval_loss']:.4f}")
        elif self.tty:
            self._print(None)

    def end(self, number: int, state: str, value, steps: int, seconds: float, tally: dict, reason: str = "") -> None:
        self.trials.pop(number, None)
        self.last_tally = self.tally(tally)
        loss = f" eval_loss {value:.4f}" if isinstance(value, float) else ""
        why = f" — {reason}" if reason else ""
        self._print(f"trial {number} {state}{loss} after {steps} steps, {seconds:.0f} s{why}   [{self.last_tally}]")

    def tally(self, c: dict) -> str:
        to_go = max(0, self.n_trials - c["finished"])
        running = f" · running {c['running']}" if c.get("running") else ""
        paused = f" · paused {c['paused']}" if c.get("paused") else ""
        return f"done {c['complete']} · pruned {c['pruned']}{paused} · failed {c['failed']}{running} · to go {to_go}"

    def note(self, text: str) -> None:
        self._print(text)
