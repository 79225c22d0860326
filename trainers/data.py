"""Loads a trial's dataset with `datasets.load_dataset` (hub id, local folder or file), checks its
schema and splits it into train and a fixed, seeded eval subset."""
import json
from pathlib import Path

from trainers.paths import ARTIFACTS
from trainers.settings import ConfigError, DataSettings, first_line

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SCHEMAS = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}
SYNTHETIC_ROWS = 2000
# Written only here, like the demo model: a mistyped data path is an error, not new demo data.
# data.build -> the file it writes on first use and the rows it writes there.
EMBEDDED = {"synthetic_prices": ARTIFACTS / "data" / "synthetic_prices.jsonl",   # the default task
            "synthetic_tiers": ARTIFACTS / "data" / "synthetic_tiers.jsonl"}     # a second, chat-format task
SYNTHETIC_DEFAULT = EMBEDDED["synthetic_prices"]


def ensure_embedded_data(data: DataSettings) -> None:
    """Write a demo task's synthetic data on first use (data.build=...), at its own place."""
    path = Path(data.name_or_path).expanduser().resolve()
    if data.build in EMBEDDED and path == EMBEDDED[data.build] and not path.exists():
        from trainers import synthetic

        rows = {"synthetic_prices": synthetic.price_rows, "synthetic_tiers": synthetic.tier_rows}[data.build]
        print(f"writing {SYNTHETIC_ROWS} SYNTHETIC rows to {path} (data.build={data.build})", flush=True)
        synthetic.write_jsonl(rows(SYNTHETIC_ROWS, seed=0), path)


def _load_file(path: Path, data: DataSettings, cache_dir: Path):
    """One .jsonl/.json/.csv/.parquet file; whatever is wrong with it becomes one line."""
    import datasets

    builder = FILE_BUILDERS[path.suffix]
    if path.stat().st_size == 0:  # datasets' JSON reader dies with a bare StopIteration
        raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path} (an empty file)")
    if path.suffix in (".jsonl", ".json", ".csv") and (bad := first_non_utf8_line(path)):
        # Arrow's JSON reader keeps such bytes and fails only when a row is read, deep in a check.
        raise ConfigError("data.name_or_path", data.name_or_path, f"is not a readable {path.suffix} file: {bad}")
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()
    datasets.logging.get_logger().setLevel(60)  # its own "Failed to load JSON" line: we say it in ours
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, cache_dir=str(cache_dir))
    except Exception as e:  # StopIteration, DatasetGenerationError (cause: ArrowInvalid...), UnicodeDecodeError
        if "corresponds to no data" in str(e):  # datasets' words for a file without rows
            raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path}") from None
        cause = e.__cause__ or e.__context__ or e
        bad_line = first_bad_json_line(path) if path.suffix == ".jsonl" else None
        raise ConfigError("data.name_or_path", data.name_or_path, f"is not a readable {path.suffix} file: {bad_line}"
                          if bad_line else f"is not a readable {path.suffix} file ({first_line(cause)[:160]})") from None
    finally:
        datasets.logging.set_verbosity(level)


def first_non_utf8_line(path: Path) -> str | None:
    """The first line that is not UTF-8 text (a file saved as Latin-1 or Windows-1252, say)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"line {number} is not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1}); "
                        f"save the file as UTF-8")
    return None


def first_bad_json_line(path: Path) -> str | None:
    """Where a JSON Lines file breaks, by the line number an editor shows (datasets counts parsed
    rows, so a blank or broken line earlier shifts its number)."""
    import json

    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except ValueError as e:
                return f"line {number} is not JSON ({e.msg} at column {e.colno})"
            if not isinstance(row, dict):
                return f"line {number} is not a JSON object (one row per line: {{\"prompt\": ..., ...}})"
    return None


def _source_files(data: DataSettings) -> list[tuple[str, Path]] | None:
    """The local file, or a folder's files by their path in it (hidden ones left out, as `datasets`
    leaves them); None for a hub dataset."""
    path = Path(data.name_or_path).expanduser()
    if path.is_file():
        return [(path.name, path)]
    if path.is_dir():
        return sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file()
                      and not any(part.startswith(".") for part in f.relative_to(path).parts))
    return None


def source_digest(data: DataSettings) -> str | None:
    """sha256 of the local file or folder the rows come from (its files' paths and bytes); None for
    a hub dataset, whose rows are the hub's to change. By content, not modification time: a file
    touched or copied back is the same data."""
    import hashlib

    files = _source_files(data)
    if files is None:
        return None
    size = sum(f.stat().st_size for _, f in files)
    if size > 2**31:  # ~2 s per GiB on a 2-core box: said, so a pause before the study opens is not a hang
        print(f"data: reading {size / 2**30:.1f} GiB of {data.name_or_path} once to check the study's rows are "
              "unchanged (sha256)", flush=True)
    digest = hashlib.sha256()
    for name, f in files:
        digest.update(name.encode() + b"\0")
        with f.open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


class SourceWatch:
    """Whether the rows changed since `digest` was taken, asked before each trial starts: a look at
    the files' names, sizes and modification times, and the digest again only when those moved."""

    def __init__(self, data: DataSettings, digest: str | None):
        self.data, self.digest = data, digest
        self.seen = self._stat()

    def _stat(self) -> list | None:
        files = _source_files(self.data)
        return None if files is None else [(name, f.stat().st_size, f.stat().st_mtime_ns) for name, f in files]

    def changed(self) -> str | None:
        """The rows' new digest if their contents changed, else None (a file gone: the trial says so)."""
        if self.digest is None or (now := self._stat()) == self.seen:
            return None
        self.seen = now
        current = source_digest(self.data)
        return current if current not in (None, self.digest) else None


def _no_config_name(data: DataSettings, what: str) -> None:
    """A configuration names one of a hub dataset's subsets; here it was ignored without a word."""
    if data.config_name is not None:
        raise ConfigError("data.config_name", data.config_name, f"names a subset of a hub dataset or dataset folder; "
                          f"{data.name_or_path} is {what}, which has none: set null")


def _load(data: DataSettings, cache_dir: Path):
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(data.name_or_path).expanduser()
    key = "data.name_or_path"
    if path.suffix in FILE_BUILDERS:
        if not path.is_file():
            raise ConfigError(key, data.name_or_path, "file not found")
        _no_config_name(data, "a data file")
        return _load_file(path, data, cache_dir)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            _no_config_name(data, "a folder written by save_to_disk")
            ds = load_from_disk(str(path))  # a folder written by save_to_disk
            return ds if isinstance(ds, DatasetDict) else DatasetDict({"train": ds})
        try:
            return load_dataset(str(path), data.config_name, cache_dir=str(cache_dir))
        except Exception as e:  # a folder with no data files, or files datasets cannot parse
            raise ConfigError(key, data.name_or_path, f"is not a dataset folder ({first_line(e)[:160]})") from None
    if path.is_file():  # a file, but not one of the formats the name says
        what = f"is a {path.suffix!r} file" if path.suffix else "is a file without an extension"
        raise ConfigError(key, data.name_or_path, f"{what}; allowed: a .jsonl/.json/.csv/.parquet file, a local "
                          "folder or a hub dataset id")
    if data.name_or_path.startswith((".", "/", "~")) or path.suffix:
        raise ConfigError(key, data.name_or_path, "no such file or folder; allowed: a hub dataset id, "
                          "a local folder, or a .jsonl/.json/.csv/.parquet file")
    from trainers.quiet import hub_retries_hidden

    try:
        with hub_retries_hidden():
            return load_dataset(data.name_or_path, data.config_name, cache_dir=str(cache_dir))
    except Exception as e:  # hub errors vary by cause (offline, gated, missing); the user needs one line
        raise ConfigError(key, data.name_or_path, f"could not be loaded from the hub: {first_line(e)}") from None


# ShareGPT's roles (the format of many chat datasets on the hub: a `conversations` column of
# {from, value} turns, "human" and "gpt"), as chat templates name them; others are kept as they are.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def _sharegpt(turns) -> bool:
    return isinstance(turns, list) and any(isinstance(t, dict) and "from" in t and "value" in t for t in turns)


def sharegpt_as_messages(ds, train_split: str):
    """ShareGPT rows read as chat messages: `conversations` becomes `messages` (TRL's own
    conversion does that much, inside each trial, but keeps "human" and "gpt", which chat templates
    do not know), each turn {role, content} with ShareGPT's roles renamed; said once."""
    train = ds[train_split]
    column = next((c for c in ("messages", "conversations") if c in train.column_names), None)
    if column is None or not any(map(_sharegpt, train.select(range(min(8, len(train))))[column])):
        return ds

    def convert(row):
        return {"messages": [{"role": SHAREGPT_ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")}
                             if isinstance(t, dict) and "from" in t else t for t in (row[column] or [])]}

    print(f"data: ShareGPT turns ({column}: from/value) read as messages (role/content; human -> user, "
          "gpt -> assistant)", flush=True)
    return ds.map(convert, remove_columns=[column])


def _text_part(part) -> bool:
    """{"type": "text", "text": ...}; Arrow gives every part the keys of all parts, the rest null."""
    return (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            and all(v is None for k, v in part.items() if k not in ("type", "text")))


def _with_parts(split, column: str) -> bool:
    """A column of chat turns whose content is a list of parts. Arrow gives a column one type, so
    this is read from the features: either every turn's content is a list or none is."""
    from datasets import LargeList, List

    return chat_turns(split, column) and isinstance(split.features[column].feature.get("content"), (List, LargeList))


def _refuse_non_text_parts(ds, data: DataSettings, columns: list[str]) -> None:
    for split in dict.fromkeys(s for s in (data.train_split, data.eval_split) if s is not None):
        for column in columns:
            for i, turns in enumerate(ds[split][column]):
                for turn in turns or []:
                    content = turn.get("content") if isinstance(turn, dict) else None  # a null turn: check_rows says
                    part = next((p for p in content or [] if not _text_part(p)), None)
                    if part is None:
                        continue
                    shown = {k: v for k, v in part.items() if v is not None} if isinstance(part, dict) else part
                    where = _row_at(i, data) if split == data.train_split else f"row {i}"
                    raise ConfigError("data.name_or_path", data.name_or_path, f"has a chat turn with a part that is "
                                      f"not text in '{split}' ({where}: {json.dumps(shown)[:60]}); these trials train "
                                      "text models: allowed: {\"type\": \"text\", \"text\": ...} parts or a string")


def text_parts_as_strings(ds, data: DataSettings):
    """Chat turns whose content is a list of parts (OpenAI's and multimodal datasets' form) read as
    one string, the text parts joined as the templates that take parts join them: most chat
    templates print a list as its Python repr, which trials then learned. A part that is not text
    (an image) is refused: these trials train text models. Rows are read only when the features say
    there are parts: this runs in every trial."""
    train = ds[data.train_split]
    columns = [c for c in ("messages", "prompt", "completion") if c in train.column_names and _with_parts(train, c)]
    if not columns:
        return ds
    _refuse_non_text_parts(ds, data, columns)

    def joined(turns):
        return [{**t, "content": "".join(p["text"] for p in t["content"] or [])} if isinstance(t, dict) else t
                for t in turns or []]

    print("data: chat turns whose content is a list of text parts read as one string each", flush=True)
    return ds.map(lambda row: {c: joined(row[c]) for c in columns})


def detect_format(columns: list[str], data: DataSettings) -> str:
    if data.format != "auto":
        needed = SCHEMAS[data.format]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ConfigError("data.format", data.format, f"needs column(s) {', '.join(needed)}; the dataset has "
                              f"{', '.join(columns)} (rename with data.columns={{{missing[0]}: <column>}})")
        return data.format
    for fmt, needed in SCHEMAS.items():
        if all(c in columns for c in needed):
            return fmt
    raise ConfigError("data.name_or_path", data.name_or_path, f"has columns {', '.join(columns)}; needs prompt+completion, "
                      "messages, or text (rename with data.columns={prompt: <column>, ...})")


def load_splits(data: DataSettings, cache_dir: Path):
    """(train, eval, format): eval is a fixed, seeded subset of data.eval_split, or held out of train."""
    ds = _load(data, cache_dir)
    if data.train_split not in ds:
        raise ConfigError("data.train_split", data.train_split, f"allowed: {', '.join(ds)}")
    if data.eval_split is not None and data.eval_split not in ds:
        raise ConfigError("data.eval_split", data.eval_split, f"allowed: {', '.join(ds)} or null")
    if data.columns:
        have = ds[data.train_split].column_names
        lacking = {dst: src for dst, src in data.columns.items() if src not in have}
        if lacking:
            dst, src = next(iter(lacking.items()))
            raise ConfigError(f"data.columns.{dst}", src, f"no such column in {data.name_or_path}; "
                              f"it has: {', '.join(have)}")
        ds = ds.rename_columns({src: dst for dst, src in data.columns.items()})
    if data.response_template is not None:
        ds = split_at_template(ds, data)
    ds = text_parts_as_strings(sharegpt_as_messages(ds, data.train_split), data)
    train = ds[data.train_split]
    fmt = detect_format(train.column_names, data)
    if data.metric is not None and (fmt != "prompt_completion" or chat_turns(train, "prompt")):
        these = "prompt/completion chat turns" if fmt == "prompt_completion" else fmt
        raise ConfigError("data.metric", data.metric, f"generates after each prompt, so it needs text prompt/completion "
                          f"rows (these are {these}; data.response_template splits a text column)")
    keep = list(SCHEMAS[fmt])
    ds = numbers_as_text(ds, keep)
    train = ds[data.train_split].select_columns(keep)
    if len(train) == 0:
        raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path}")
    check_rows(train, fmt, data.train_split, data)
    if data.eval_split is not None:
        check_rows(ds[data.eval_split].select_columns(keep), fmt, data.eval_split, data)
    if data.eval_split is None:
        if len(train) < 2:
            raise ConfigError("data.train_split", data.train_split, "needs at least 2 rows to hold out an eval subset")
        held_out = min(data.eval_size, len(train) // 2)
        if held_out < data.eval_size:  # the rest must stay to train on; said, as the eval loss is over fewer rows
            print(f"data.eval_size={data.eval_size}: {held_out} of the {len(train)} rows in '{data.train_split}' held "
                  f"out for eval (at most half; data.eval_split names a split of its own)", flush=True)
        split = train.train_test_split(test_size=held_out, seed=data.seed)
        train, evals = split["train"], split["test"]
    else:
        evals = ds[data.eval_split].select_columns(keep)
        if len(evals) == 0:
            raise ConfigError("data.eval_split", data.eval_split, f"is empty in {data.name_or_path}")
        evals = evals.shuffle(seed=data.seed).select(range(min(data.eval_size, len(evals))))
    check_metric_rows(evals, data)
    if data.max_train_samples is not None:
        train = train.shuffle(seed=data.seed).select(range(min(data.max_train_samples, len(train))))
    note = eval_rows_in_train(train, evals, keep, data)
    if note:
        print(note, flush=True)
    return train, evals, fmt


# Real data repeats some rows (the demo's synthetic products: 2 of its 64 eval rows); a share
# this large is a split made wrong (a validation split copied from train shares all of them).
OVERLAP_SAID = 0.1


def eval_rows_in_train(train, evals, columns: list[str], data: DataSettings) -> str | None:
    """A note when eval rows are also train rows (a validation split copied from train, or rows
    repeated in the one split held out from): the eval loss then rewards memorising them, and
    the sweep ranks the trials that overfit first."""
    import json

    def key(value) -> str:  # text as it is, chat turns as JSON
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def row_key(values) -> str:
        return json.dumps([key(v) for v in values])

    eval_keys = [row_key(values) for values in zip(*(evals[c] for c in columns))]
    firsts = {key(v) for v in evals[columns[0]]}
    in_train = set()
    for batch in train.iter(batch_size=10_000):  # the first column alone first: a set lookup
        for values in zip(*(batch[c] for c in columns)):
            if key(values[0]) in firsts:
                in_train.add(row_key(values))
    shared = sum(k in in_train for k in eval_keys)
    if shared < OVERLAP_SAID * len(evals):
        return None
    where = (f"data.eval_split={data.eval_split!r}" if data.eval_split is not None
             else f"the rows held out of {data.train_split!r}, which repeats them")
    return (f"note: {shared} of the {len(evals)} eval rows are also train rows ({where}): the eval loss rewards "
            "memorising them, so the sweep would rank trials that overfit first; drop the copies from the data")


def numbers_as_text(ds, columns: list[str]):
    """A column of numbers where text belongs, as a CSV file of prices gives its completions (datasets
    types "12.00" as 12.0), becomes text: the tokenizer takes strings only, and died on them mid-trial."""
    from datasets import DatasetDict, Value

    def as_text(split):
        for column in columns:
            feature = split.features.get(column)
            if isinstance(feature, Value) and feature.dtype not in ("string", "large_string"):
                split = split.cast_column(column, Value("string"))
        return split

    return DatasetDict({name: as_text(split) for name, split in ds.items()})


def check_metric_rows(evals, data: DataSettings) -> None:
    """The task metric judges the eval rows it generates on after training: with none it can judge,
    the trial died there (ZeroDivisionError), its training spent. data.metric=price, the demo data's,
    stays set when only data.name_or_path changes."""
    if data.metric != "price":
        return
    from trainers.metrics import parse_price

    rows = evals.select(range(min(data.metric_rows, len(evals))))
    if not any(parse_price(c) is not None for c in rows["completion"]):
        raise ConfigError("data.metric", data.metric, f"judges the number in each eval row's completion, and none of "
                          f"the {len(rows)} it would use in {data.name_or_path} holds one; allowed: null "
                          "(data.metric=null: eval loss only) or rows whose completion is a price")


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _row_at(index: int, data: DataSettings) -> str:
    """A row as its file shows it: a .jsonl file's line number (blank lines are no rows), else its
    index. The train split is the file's rows in order until the eval subset is held out."""
    path = Path(data.name_or_path).expanduser()
    if path.suffix == ".jsonl" and path.is_file():
        with path.open(encoding="utf-8", errors="replace") as f:
            rows = (number for number, line in enumerate(f, start=1) if line.strip())
            for number in rows:
                if index == 0:
                    return f"line {number}"
                index -= 1
    return f"row {index}, counting from 0"


def _not_a_turn(turn) -> bool:
    return not isinstance(turn, dict) or "role" not in turn or "content" not in turn


def chat_turns(split, column: str) -> bool:
    """A column of chat turns, as TRL's conversational prompt-completion rows give prompt and
    completion ([{"role": "user", "content": ...}]), rather than text."""
    from datasets import LargeList, List

    feature = split.features.get(column)
    return isinstance(feature, (List, LargeList)) and isinstance(feature.feature, dict)


def is_chat(split, fmt: str) -> bool:
    """Rows rendered by the tokenizer's chat template: messages, or prompt/completion as turns."""
    return fmt == "messages" or (fmt == "prompt_completion" and chat_turns(split, "prompt"))


def _check_turns(key: str, name: str, column: str, values: list, data: DataSettings) -> None:
    flat = [i for i, m in enumerate(values) if not isinstance(m, list)]
    if flat:  # JSON written into a CSV cell is text: its characters were read as turns
        raise ConfigError(key, name, f"has {len(flat)} row(s) whose {column} is not a list of chat turns in "
                          f"{data.name_or_path} (the first: {_row_at(flat[0], data)}: {json.dumps(values[flat[0]])[:40]})"
                          + ("; a CSV cell holds text: write the rows as JSON Lines" if data.name_or_path.endswith(".csv")
                             else "") + f"; each {column} is a list of {{\"role\": ..., \"content\": ...}} turns")
    odd = [i for i, m in enumerate(values) if m and any(map(_not_a_turn, m))]
    if odd:  # the chat template's KeyError or a blank turn, mid-trial
        turn = next(filter(_not_a_turn, values[odd[0]]))
        verb = "have" if column == "messages" else "has"
        raise ConfigError(key, name, f"has {len(odd)} row(s) whose {column} {verb} a turn without role and content in "
                          f"{data.name_or_path} (the first: {_row_at(odd[0], data)}: {json.dumps(turn)[:60]}); "
                          "each turn is {\"role\": ..., \"content\": ...}")


def check_rows(split, fmt: str, name: str, data: DataSettings) -> None:
    """Rows TRL cannot train on, found before any trial: a null value (its tokenizer call dies with
    AttributeError inside a trial), or no row with anything to learn (a ZeroDivisionError there).
    Rows are counted from 0, as datasets counts them."""
    key = "data.eval_split" if name == data.eval_split and name != data.train_split else "data.train_split"
    learned = {"prompt_completion": "completion", "text": "text", "messages": "messages"}[fmt]
    values = split[learned]
    turns = fmt == "prompt_completion" and chat_turns(split, "prompt")  # then completion must be turns too
    for column in SCHEMAS[fmt]:
        column_values = split[column] if column != learned else values
        nulls = [i for i, v in enumerate(column_values) if v is None]
        if nulls:
            raise ConfigError(key, name, f"has {len(nulls)} row(s) whose {column} is null in {data.name_or_path} "
                              f"(the first: {_row_at(nulls[0], data)}); fill or drop them")
        if turns and not chat_turns(split, column):
            raise ConfigError(key, name, f"has prompts that are chat turns and a {column} that is not in "
                              f"{data.name_or_path}; allowed: both text, or both lists of chat turns")
        if column == "messages" or turns:
            _check_turns(key, name, column, column_values, data)
            continue
        other = [i for i, v in enumerate(column_values) if not isinstance(v, str)]
        if other:  # a list or a mapping where text belongs: the tokenizer's ValueError, mid-trial
            both = ", or make every prompt and completion a list of chat turns" if fmt == "prompt_completion" else ""
            raise ConfigError(key, name, f"has {len(other)} row(s) whose {column} is not text in "
                              f"{data.name_or_path} (the first: {_row_at(other[0], data)}: "
                              f"{json.dumps(column_values[other[0]])[:40]}); make it a string{both}")
    if fmt == "messages" or turns:
        empty = [i for i, m in enumerate(values) if not m or all(_blank(turn.get("content")) for turn in m)]
    else:
        empty = [i for i, v in enumerate(values) if _blank(v)]
    if len(empty) == len(values):
        raise ConfigError(key, name, f"has no row with a non-empty {learned} in {data.name_or_path}: nothing to learn")


def split_at_template(ds, data: DataSettings):
    """A `text` column holding prompt and answer together (the seed course's price data: answer
    after 'Price is $') becomes prompt/completion, so the loss is on the answer only."""
    template = data.response_template
    if "text" not in ds[data.train_split].column_names:
        raise ConfigError("data.response_template", template, f"splits a text column; the dataset has "
                          f"{', '.join(ds[data.train_split].column_names)}")
    for split in ds:
        lacking = sum(template not in text for text in ds[split]["text"])
        if lacking:
            raise ConfigError("data.response_template", template, f"not found in {lacking} of {len(ds[split])} rows "
                              f"of split {split!r}")

    def split_row(row):
        at = row["text"].index(template) + len(template)
        return {"prompt": row["text"][:at], "completion": row["text"][at:]}

    return ds.map(split_row, remove_columns=["text"])


def check_completions_fit(train, tokenizer, max_length: int, fmt: str) -> str | None:
    """Refuse a max_length that truncates every completion away: TRL would otherwise die
    with 'num_samples should be a positive integer value, but got num_samples=0'. A note when it
    truncates some away: those rows train nothing, and the trials learn from fewer than it seems."""
    if fmt != "prompt_completion":
        return None
    sample = train.select(range(min(len(train), 256)))
    prompts = list(sample["prompt"])
    if chat_turns(train, "prompt"):  # as TRL renders them: the template, with its generation prompt
        prompts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    prompt_lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    if min(prompt_lengths) >= max_length:
        raise ConfigError("train.max_length", max_length, f"truncates every completion away (the shortest prompt "
                          f"is {min(prompt_lengths)} tokens); allowed: more than {min(prompt_lengths)}")
    cut = sum(n >= max_length for n in prompt_lengths)
    if cut:
        return (f"note: train.max_length={max_length} truncates the completion away in {cut} of the first "
                f"{len(prompt_lengths)} rows (their prompts are {max_length}+ tokens), which then train nothing; "
                f"the longest prompt there is {max(prompt_lengths)} tokens")
    return None
