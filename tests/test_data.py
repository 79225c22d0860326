"""One loading path for every source and schema: local .jsonl/.csv/.parquet files, a saved folder,
prompt/completion, text and messages; the eval subset is fixed by its seed."""
import json

import pytest

from trainers.data import load_splits
from trainers.settings import ConfigError, DataSettings

PC = [{"prompt": f"How much is item {i}?\n\nPrice is $", "completion": f"{i}.00"} for i in range(40)]


def settings(path, **kw):
    base = dict(name_or_path=str(path), build=None, config_name=None, format="auto", columns={}, train_split="train",
                eval_split=None, eval_size=8, max_train_samples=None, seed=42, response_template=None, metric=None,
                metric_rows=8)
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
    # A CSV's "12.00" is typed as a number by datasets; the tokenizer takes text only.
    assert all(isinstance(v, str) for v in [*train["completion"], *evals["completion"]])


def test_saved_folder_eval_split(tmp_path):
    path = write(tmp_path / "saved", PC)
    train, evals, _ = load_splits(settings(path, eval_split="test", eval_size=5), tmp_path / "cache")
    assert len(train) == 40 and len(evals) == 5


def test_an_eval_size_over_half_the_rows_is_capped_and_said(tmp_path, capsys):
    path = write(tmp_path / "rows.jsonl", PC)
    train, evals, _ = load_splits(settings(path, eval_size=500), tmp_path / "cache")
    assert len(evals) == len(train) == 20
    assert "data.eval_size=500: 20 of the 40 rows in 'train' held out for eval" in capsys.readouterr().out


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


def test_response_template_splits_the_course_text_format(tmp_path):
    """The seed course's rows: prompt and answer in one `text` column, a `price` column beside it."""
    rows = [{"text": f"How much does this cost?\n\nTitle: item {i}\n\nPrice is ${i}.00", "price": float(i)}
            for i in range(1, 41)]
    path = tmp_path / "course.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, evals, fmt = load_splits(settings(path, response_template="Price is $", metric="price"), tmp_path / "c")
    assert fmt == "prompt_completion" and train.column_names == ["prompt", "completion"]
    row = train[0]
    assert row["prompt"].endswith("Price is $") and row["completion"].endswith(".00") and "$" not in row["completion"]


def test_response_template_missing_from_rows_is_one_line(tmp_path):
    path = tmp_path / "course.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a Price is $3.00", "no answer here"] * 5))
    with pytest.raises(ConfigError) as err:
        load_splits(settings(path, response_template="Price is $"), tmp_path / "c")
    assert str(err.value) == "data.response_template='Price is $': not found in 5 of 10 rows of split 'train'"


def test_metric_needs_prompt_completion_rows(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    with pytest.raises(ConfigError) as err:
        load_splits(settings(path, metric="price"), tmp_path / "c")
    assert err.value.key == "data.metric" and "response_template" in str(err.value)


def test_sharegpt_rows_are_read_as_chat_messages(tmp_path, capsys):
    """ShareGPT's `conversations` of {from, value} turns ("human", "gpt"): the column needed a rename,
    after which every row was called empty ("nothing to learn"); TRL would rename the keys inside a
    trial but keep roles no chat template knows. Read as messages with user/assistant, said once."""
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": f"hi {i}"},
                               {"from": "gpt", "value": f"yo {i}"}], "id": i} for i in range(20)]
    train, evals, fmt = load_splits(settings(write(tmp_path / "chat.jsonl", rows)), tmp_path / "cache")
    assert fmt == "messages" and train.column_names == ["messages"] and len(train) + len(evals) == 20
    assert [t["role"] for t in train[0]["messages"]] == ["system", "user", "assistant"]
    assert train[0]["messages"][1]["content"].startswith("hi ") and train[0]["messages"][2]["content"].startswith("yo ")
    assert capsys.readouterr().out.count("ShareGPT turns (conversations: from/value) read as messages") == 1


def test_chat_turns_without_role_and_content_are_refused(tmp_path):
    rows = [{"messages": [{"speaker": "user", "text": f"hi {i}"}, {"speaker": "assistant", "text": "yo"}]} for i in range(20)]
    path = write(tmp_path / "chat.jsonl", rows)
    with pytest.raises(ConfigError) as refused:
        load_splits(settings(path), tmp_path / "cache")
    assert str(refused.value) == (f"data.train_split='train': has 20 row(s) whose messages have a turn without role and "
                                  f'content in {path} (the first: line 1: {{"speaker": "user", "text": "hi 0"}}); each '
                                  'turn is {"role": ..., "content": ...}')


def test_chat_content_given_as_text_parts_is_read_as_one_string(tiny_model, tmp_path, capsys):
    """OpenAI's form, content a list of {"type": "text", "text": ...} parts: most chat templates
    printed the list's Python repr, and trials learned it. Joined, said once; an image part refused."""
    from transformers import AutoTokenizer

    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": f"hi {i}. "},
                                                       {"type": "text", "text": "Go."}]},
                          {"role": "assistant", "content": [{"type": "text", "text": f"yo {i}"}]}]} for i in range(20)]
    train, _, fmt = load_splits(settings(write(tmp_path / "parts.jsonl", rows)), tmp_path / "cache")
    turns = train[0]["messages"]
    assert fmt == "messages" and turns[0]["content"].endswith(". Go.") and turns[1]["content"].startswith("yo ")
    rendered = AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(turns, tokenize=False)
    assert "'type'" not in rendered and ". Go." in rendered
    assert capsys.readouterr().out.count("list of text parts read as one string") == 1
    rows[3]["messages"][0]["content"].append({"type": "image", "image": "cat.png"})
    with pytest.raises(ConfigError) as refused:
        load_splits(settings(write(tmp_path / "image.jsonl", rows)), tmp_path / "cache")
    assert refused.value.key == "data.name_or_path" and '(line 4: {"type": "image", "image": "cat.png"})' in str(refused.value)


def test_a_data_folder_is_digested_by_its_files_names_and_bytes(tmp_path):
    from trainers.data import source_digest

    folder = tmp_path / "rows"
    (folder / "part").mkdir(parents=True)
    (folder / "part" / "a.jsonl").write_text('{"text": "a"}\n')
    data = settings(folder)
    first = source_digest(data)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")  # hidden: datasets reads none of it
    assert source_digest(data) == first
    (folder / "part" / "a.jsonl").write_text('{"text": "b"}\n')
    assert source_digest(data) != first
    assert source_digest(settings("org/hub-dataset")) is None


def test_a_source_watch_rehashes_only_when_the_files_move(tmp_path):
    import os

    from trainers.data import SourceWatch, source_digest

    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n')
    data = settings(path)
    watch = SourceWatch(data, source_digest(data))
    assert watch.changed() is None
    os.utime(path, (1, 1))  # touched: looked at again, the same rows
    assert watch.changed() is None
    path.write_text('{"text": "b"}\n')
    assert watch.changed() == source_digest(data) != watch.digest
    assert SourceWatch(settings("org/hub-dataset"), None).changed() is None


def test_a_max_length_that_cuts_some_completions_away_is_said(tiny_model):
    """Rows whose prompt fills train.max_length keep no completion token and train nothing: all of
    them is refused (TRL's num_samples=0), some of them is said with how many."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from trainers.data import check_completions_fit
    from trainers.settings import ConfigError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"prompt": "Price is $", "completion": "12"}] * 6 + [{"prompt": "a long description " * 40,
                                                                   "completion": "99"}] * 2
    train = Dataset.from_list(rows)
    longest = len(tokenizer(rows[-1]["prompt"])["input_ids"])
    assert check_completions_fit(train, tokenizer, longest + 1, "prompt_completion") is None
    note = check_completions_fit(train, tokenizer, 64, "prompt_completion")
    assert note == (f"note: train.max_length=64 truncates the completion away in 2 of the first 8 rows (their prompts "
                    f"are 64+ tokens), which then train nothing; the longest prompt there is {longest} tokens")
    with pytest.raises(ConfigError, match="truncates every completion away"):
        check_completions_fit(train.select(range(6, 8)), tokenizer, 64, "prompt_completion")


def test_eval_rows_that_are_also_train_rows_are_said(tmp_path, capsys):
    """A validation split copied from train: the eval loss rewards memorising, and the sweep would
    crown the trial that overfits. A few repeated rows, as real data has, are not worth a line."""
    path = write(tmp_path / "saved_folder", PC)  # its test split: train's first 10 rows
    load_splits(settings(path, eval_split="test"), tmp_path / "cache")
    assert capsys.readouterr().out.splitlines() == [
        "note: 8 of the 8 eval rows are also train rows (data.eval_split='test'): the eval loss rewards memorising "
        "them, so the sweep would rank trials that overfit first; drop the copies from the data"]
    load_splits(settings(write(tmp_path / "once.jsonl", PC + PC[:2]), eval_size=21), tmp_path / "cache")
    assert capsys.readouterr().out == ""  # 2 repeated rows: at most 2 of the 21 eval rows, under a tenth
    load_splits(settings(write(tmp_path / "twice.jsonl", PC + PC), eval_size=20), tmp_path / "cache")
    assert "eval rows are also train rows (the rows held out of 'train', which repeats them)" in capsys.readouterr().out
