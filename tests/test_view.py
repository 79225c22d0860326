"""The live view: what it says per trial, sweep.quiet, and the running block on a terminal saying
what a trial is doing before its first step (loading) and after its last (saving)."""
import io

from sweeper.view import LiveView

TALLY = {"complete": 0, "pruned": 0, "failed": 0, "running": 1, "finished": 0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress(phase: str, step: int = 0, eval_loss=None) -> dict:
    return {"phase": phase, "step": step, "max_steps": 40 if step else 0, "eval_loss": eval_loss}


def run(view: LiveView) -> None:
    view.start(3, {"lora_r": 8}, TALLY, slot="cpu.1")
    view.progress(3, progress("loading"))
    view.progress(3, progress("training", 10, 2.5))
    view.progress(3, progress("saving", 40, 1.5))
    view.end(3, "complete", 1.5, 40, 12.0, {**TALLY, "running": 0, "complete": 1})


def test_each_start_eval_and_end_is_a_line():
    out = io.StringIO()
    run(LiveView(8, stream=out))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trial 3 [cpu.1] ▸ lora_r=8")
    assert lines[1:3] == ["trial 3   step 10/40  eval_loss 2.5000", "trial 3   step 40/40  eval_loss 1.5000"]
    assert lines[3].startswith("trial 3 complete eval_loss 1.5000 after 40 steps, 12 s") and len(lines) == 4


def test_quiet_says_ends_only():
    out = io.StringIO()
    view = LiveView(8, stream=out, quiet=True)
    run(view)
    view.note("a note")
    assert [line.split(" eval_loss")[0] for line in out.getvalue().splitlines()] == ["trial 3 complete", "a note"]


def test_the_running_block_says_what_a_trial_is_doing():
    term = Terminal()
    view = LiveView(8, stream=term)
    view.start(3, {"lora_r": 8}, TALLY, slot="cpu.1")
    assert "▸ trial 3 [cpu.1] starting  lora_r=8" in term.getvalue()
    view.progress(3, progress("loading"))
    assert "▸ trial 3 [cpu.1] loading data and model  lora_r=8" in term.getvalue()
    view.progress(3, progress("training", 10, 2.5))
    assert "▸ trial 3 [cpu.1] step 10/40  eval_loss 2.5000  lora_r=8" in term.getvalue()
    view.progress(3, progress("saving", 40, 1.5))
    assert term.getvalue().rstrip().splitlines()[-2] == "  ▸ trial 3 [cpu.1] saving  lora_r=8"
