"""Wall-clock marks of one trial's phases (config, data, model load, W&B, trainer setup, training,
save), saved in its metrics.json: what bench/overhead.py splits a trial's fixed cost into. One
trial per process, so the marks are the process's own."""
import time

_marks: list[list] = []


def mark(name: str) -> None:
    _marks.append([name, time.time()])


def take() -> list[list]:
    """The marks so far, [name, unix time] each; the next trial in this process starts afresh."""
    taken = list(_marks)
    _marks.clear()
    return taken
