"""Shows each repeated library notice once (bitsandbytes' 8-bit cast message fires on every
matmul) and hides per-map progress bars, so a trial's output is its progress and losses."""
import logging
import warnings
from contextlib import contextmanager


class _Once(logging.Filter):
    """Passes the first record of each message template, drops the repeats."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def install() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    warnings.simplefilter("once")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # libraries' notes to each other, not to users
    warnings.filterwarnings("ignore", category=ResourceWarning)
    # Filters on a handler see every record that reaches it, from child loggers too.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    transformers.logging.get_logger()  # creates transformers' own handler before we filter it
    once = _Once()
    for name in (None, "transformers"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(once)


@contextmanager
def hub_retries_hidden():
    """huggingface_hub logs each retry against an unreachable hub (an offline machine: ten lines of
    "Retrying in 8s [Retry 4/5]" over ~25 s); the one line the caller prints says why it failed."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)
