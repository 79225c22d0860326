"""One loading path for every source and schema: local .jsonl/.csv/.parquet files, a saved folder,
prompt/completion, text and messages; the eval subset is fixed by its seed."""
import json

import pytest

from trainers.data import load_splits
from trainers.settings import DataSettings

PC = [{"prompt": f"How much is item {i}?\n\nPrice is $", "completion": f"{i}.00"} for i in range(40)]


def settings(path, **kw):
    base = dict(name_or_path=str(path), build=None, config_name=None, format="auto", columns={}, train_split="train",
                eval_split=None, eval_size=8, max_train_samples=None, seed=42)
    return DataSettings(**{**base, **kw})


def write(path, rows):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        ds.to_csv(str(path), index=False)
    elif path.suffix == ".parquet":
        ds.to_parquet(str(path))
    else:
        datasets.DatasetDict({"train": ds, "test": ds.select(range(10))}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.csv", "rows.parquet", "saved_folder"])
def test_every_source_loads_prompt_completion(name, tmp_path):
    path = write(tmp_path / name, PC)
    train, evals, fmt = load_splits(settings(path), tmp_path / "cache")
    assert fmt == "prompt_completion" and len(evals) == 8 and len(train) == 32
    assert set(train.column_names) == {"prompt", "completion"}


def test_saved_folder_eval_split(tmp_path):
    path = write(tmp_path / "saved", PC)
    train, evals, _ = load_splits(settings(path, eval_split="test", eval_size=5), tmp_path / "cache")
    assert len(train) == 40 and len(evals) == 5


def test_text_and_messages_schemas(tmp_path):
    text = write(tmp_path / "text.jsonl", [{"text": f"line {i}", "meta": i} for i in range(20)])
    assert load_splits(settings(text), tmp_path / "c")[2] == "text"
    chats = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": str(i)}]} for i in range(20)]
    assert load_splits(settings(write(tmp_path / "m.jsonl", chats)), tmp_path / "c")[2] == "messages"


def test_eval_subset_is_fixed_by_seed(tmp_path):
    path = write(tmp_path / "rows.jsonl", PC)
    first = load_splits(settings(path), tmp_path / "c")[1]["completion"]
    again = load_splits(settings(path), tmp_path / "c")[1]["completion"]
    other = load_splits(settings(path, seed=7), tmp_path / "c")[1]["completion"]
    assert list(first) == list(again) and list(first) != list(other)


def test_synthetic_data_is_labelled_and_learnable():
    from trainers.synthetic import PROMPT_PREFIX, PROMPT_SUFFIX, price_rows

    rows = price_rows(200, seed=0)
    assert all(r["prompt"].startswith(PROMPT_PREFIX) and r["prompt"].endswith(PROMPT_SUFFIX) for r in rows)
    assert all(r["completion"].endswith(".00") for r in rows)
    # The same description always has the same price: the rule is deterministic, hence learnable.
    by_title = {}
    for r in rows:
        key = r["prompt"].split("Color:")[0]
        by_title.setdefault(key, set()).add(r["completion"])
    assert all(len(prices) == 1 for prices in by_title.values())
