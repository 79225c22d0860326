"""Loads a trial's dataset with `datasets.load_dataset` (hub id, local folder or file), checks its
schema and splits it into train and a fixed, seeded eval subset."""
from pathlib import Path

from trainers.paths import ARTIFACTS
from trainers.settings import ConfigError, DataSettings, first_line

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SCHEMAS = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}
SYNTHETIC_ROWS = 2000
# Written only here, like the demo model: a mistyped data path is an error, not new demo data.
SYNTHETIC_DEFAULT = ARTIFACTS / "data" / "synthetic_prices.jsonl"


def ensure_embedded_data(data: DataSettings) -> None:
    """Write the synthetic price data on first use (data.build=synthetic_prices), at its own place."""
    path = Path(data.name_or_path).expanduser().resolve()
    if data.build == "synthetic_prices" and path == SYNTHETIC_DEFAULT and not path.exists():
        from trainers.synthetic import price_rows, write_jsonl

        print(f"writing {SYNTHETIC_ROWS} SYNTHETIC price rows to {path} (data.build=synthetic_prices)", flush=True)
        write_jsonl(price_rows(SYNTHETIC_ROWS, seed=0), path)


def _load_file(path: Path, data: DataSettings, cache_dir: Path):
    """One .jsonl/.json/.csv/.parquet file; whatever is wrong with it becomes one line."""
    import datasets

    builder = FILE_BUILDERS[path.suffix]
    if path.stat().st_size == 0:  # datasets' JSON reader dies with a bare StopIteration
        raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path} (an empty file)")
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()
    datasets.logging.get_logger().setLevel(60)  # its own "Failed to load JSON" line: we say it in ours
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, cache_dir=str(cache_dir))
    except Exception as e:  # StopIteration, DatasetGenerationError (cause: ArrowInvalid...), UnicodeDecodeError
        if "corresponds to no data" in str(e):  # datasets' words for a file without rows
            raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path}") from None
        cause = e.__cause__ or e.__context__ or e
        raise ConfigError("data.name_or_path", data.name_or_path,
                          f"is not a readable {path.suffix} file ({first_line(cause)[:160]})") from None
    finally:
        datasets.logging.set_verbosity(level)


def _load(data: DataSettings, cache_dir: Path):
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(data.name_or_path).expanduser()
    key = "data.name_or_path"
    if path.suffix in FILE_BUILDERS:
        if not path.is_file():
            raise ConfigError(key, data.name_or_path, "file not found")
        return _load_file(path, data, cache_dir)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = load_from_disk(str(path))  # a folder written by save_to_disk
            return ds if isinstance(ds, DatasetDict) else DatasetDict({"train": ds})
        try:
            return load_dataset(str(path), data.config_name, cache_dir=str(cache_dir))
        except Exception as e:  # a folder with no data files, or files datasets cannot parse
            raise ConfigError(key, data.name_or_path, f"is not a dataset folder ({first_line(e)[:160]})") from None
    if data.name_or_path.startswith((".", "/", "~")) or path.suffix:
        raise ConfigError(key, data.name_or_path, "no such file or folder; allowed: a hub dataset id, "
                          "a local folder, or a .jsonl/.json/.csv/.parquet file")
    try:
        return load_dataset(data.name_or_path, data.config_name, cache_dir=str(cache_dir))
    except Exception as e:  # hub errors vary by cause (offline, gated, missing); the user needs one line
        raise ConfigError(key, data.name_or_path, f"could not be loaded from the hub: {first_line(e)}") from None


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
    train = ds[data.train_split]
    fmt = detect_format(train.column_names, data)
    if data.metric is not None and fmt != "prompt_completion":
        raise ConfigError("data.metric", data.metric, f"generates after each prompt, so it needs prompt/completion rows "
                          f"(these are {fmt}; data.response_template splits a text column)")
    keep = list(SCHEMAS[fmt])
    train = train.select_columns(keep)
    if len(train) == 0:
        raise ConfigError("data.train_split", data.train_split, f"is empty in {data.name_or_path}")
    if data.eval_split is None:
        if len(train) < 2:
            raise ConfigError("data.train_split", data.train_split, "needs at least 2 rows to hold out an eval subset")
        split = train.train_test_split(test_size=min(data.eval_size, len(train) // 2), seed=data.seed)
        train, evals = split["train"], split["test"]
    else:
        evals = ds[data.eval_split].select_columns(keep)
        if len(evals) == 0:
            raise ConfigError("data.eval_split", data.eval_split, f"is empty in {data.name_or_path}")
        evals = evals.shuffle(seed=data.seed).select(range(min(data.eval_size, len(evals))))
    if data.max_train_samples is not None:
        train = train.shuffle(seed=data.seed).select(range(min(data.max_train_samples, len(train))))
    return train, evals, fmt


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


def check_completions_fit(train, tokenizer, max_length: int, fmt: str) -> None:
    """Refuse a max_length that truncates every completion away: TRL would otherwise die
    with 'num_samples should be a positive integer value, but got num_samples=0'."""
    if fmt != "prompt_completion":
        return
    sample = train.select(range(min(len(train), 256)))
    prompt_lengths = [len(ids) for ids in tokenizer(list(sample["prompt"]))["input_ids"]]
    if min(prompt_lengths) >= max_length:
        raise ConfigError("train.max_length", max_length, f"truncates every completion away (the shortest prompt "
                          f"is {min(prompt_lengths)} tokens); allowed: more than {min(prompt_lengths)}")
