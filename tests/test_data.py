import json
import pickle

import numpy as np
import pytest

from loraclf.config.schema import AG_NEWS_LABELS, DataConfig
from loraclf.data.batching import collate
from loraclf.data.encoding import Encoded, encode
from loraclf.data.labels import encode_labels, infer_label_names
from loraclf.data.sources import read_file
from loraclf.data.splits import Labelled, length_filter, load_splits, read_labelled, split, held_out_size
from loraclf.data.tables import Schema
from loraclf.errors import UserError

from conftest import AGNEWS_5K, AGNEWS_CANONICAL, needs_shared, write_csv

TEXTS = ['Stocks rise, "again"', "Team wins\nthe cup", "New chip \\ faster", "Peace talks"]
LABELS = [2, 1, 3, 0]


def labels_of(table, names=AG_NEWS_LABELS):
    return encode_labels(table, names).tolist()


# ------------------------------------------------------------------ formats


def test_hf_csv(tmp_path):
    table = read_file(write_csv(tmp_path / "d.csv", TEXTS, LABELS))
    assert table.texts == TEXTS and labels_of(table) == LABELS


def test_agnews_canonical_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('"3","Wall St. Bears","Reuters - Short-sellers\\nare ""back"", \\band"\n'
                    '"2","Cup final","Team wins"\n', encoding="utf-8")
    table = read_file(path)
    # As the hub's ag_news has it: title + " " + description, backslashes as they are.
    assert table.texts == ['Wall St. Bears Reuters - Short-sellers\\nare "back", \\band', "Cup final Team wins"]
    assert labels_of(table) == [2, 1]
    assert table.label_names == AG_NEWS_LABELS


@needs_shared
def test_agnews_canonical_sample_from_shared():
    table = read_file(AGNEWS_CANONICAL)
    assert len(table.texts) == 581
    assert set(labels_of(table)) <= {0, 1, 2, 3}
    assert table.texts[0].startswith("Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers")


def test_jsonl_and_json(tmp_path):
    records = [{"text": t, "label": AG_NEWS_LABELS[label]} for t, label in zip(TEXTS, LABELS)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    array = tmp_path / "d.json"
    array.write_text(json.dumps(records), encoding="utf-8")
    for path in (jsonl, array):
        table = read_file(path)
        assert table.texts == TEXTS and labels_of(table) == LABELS


def test_parquet_with_hf_label_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"info": {"features": {"text": {"dtype": "string", "_type": "Value"},
                                  "label": {"names": AG_NEWS_LABELS, "_type": "ClassLabel"}}}}
    table = pa.table({"text": TEXTS, "label": LABELS}).replace_schema_metadata({"huggingface": json.dumps(meta)})
    pq.write_table(table, tmp_path / "d.parquet")
    read = read_file(tmp_path / "d.parquet")
    assert read.texts == TEXTS and read.label_names == AG_NEWS_LABELS and labels_of(read) == LABELS


def test_pickled_dataset_and_dataframe_need_permission(tmp_path):
    import datasets
    import pandas as pd

    for name, obj in [("ds.pkl", datasets.Dataset.from_dict({"text": TEXTS})),
                      ("df.pkl", pd.DataFrame({"text": TEXTS, "label": LABELS}))]:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(UserError, match="refusing to unpickle.*--allow-pickle"):
            read_file(path)
        assert read_file(path, allow_pickle=True).texts == TEXTS
    assert labels_of(read_file(tmp_path / "df.pkl", allow_pickle=True)) == LABELS


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name, content, message", [
    ("a.csv", b"", "empty file"),
    ("a.csv", b"title,label\nx,1\n", r"no column 'text' in the header"),
    ("a.csv", b"text,label\nok,1\n,2\n", r"row 2 \(line 3\), column 'text': empty or missing text"),
    ("a.csv", b"text,label\nok,1\nfine,7\n", r"row 2 \(line 3\), column 'label': label '7' is not a class id 0-3"),
    ("a.csv", b"text,label\nok,Sport\n", r"row 1 \(line 2\), column 'label': label 'Sport'"),
    ("a.csv", b"text,label\nok,1\nbad \xff\xfe,1\n", r"line 3: not UTF-8"),
    ("a.csv", b"text,label\nok,1,extra\n", r"row 1 \(line 2\): expected 2 fields"),
    ("a.csv", b'"1","t","d"\n"2","t","d","x"\n', r"row 2 \(line 2\): expected 3 fields \(class, title, description\)"),
    ("a.csv", b'"5","t","d"\n', r"row 1 \(line 1\), column 'label': label 4 is not a class id"),
    ("a.csv", b"text,label\nok\x00,1\n", r"line 2: NUL byte"),
    ("a.jsonl", b'{"text": "ok", "label": 1}\n{"text": "ok"\n', r"line 2: not valid JSON"),
    ("a.jsonl", b'{"text": "ok", "label": 1}\n{"label": 1}\n', r"row 2 \(line 2\): missing column 'text'"),
    ("a.jsonl", b'{"text": null, "label": 1}\n', r"row 1 \(line 1\), column 'text': empty or missing"),
    ("a.parquet", b"PAR1 not really", "not a readable Parquet"),
    ("a.txt", b"hello", "unknown format '.txt'"),
])
def test_bad_files_fail_with_where_and_what(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        table = read_file(path)
        encode_labels(table, infer_label_names(table, AG_NEWS_LABELS))
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_file(tmp_path / "none.csv")
    with pytest.raises(UserError, match="is a directory"):
        read_file(tmp_path)


def test_nan_text_in_dataframe(tmp_path):
    import pandas as pd

    path = tmp_path / "d.pkl"
    pd.DataFrame({"text": ["ok", float("nan")], "label": [0, 1]}).to_pickle(path)
    with pytest.raises(UserError, match=r"row 2, column 'text': empty or missing text \(nan\)"):
        read_file(path, allow_pickle=True)


# ------------------------------------------------------------------ labels


def test_string_labels_without_names_are_sorted(tmp_path):
    table = read_file(write_csv(tmp_path / "d.csv", ["a", "b", "c"], ["spam", "ham", "spam"]))
    names = infer_label_names(table, None)
    assert names == ["ham", "spam"]
    assert encode_labels(table, names).tolist() == [1, 0, 1]


def test_integer_labels_without_names(tmp_path):
    table = read_file(write_csv(tmp_path / "d.csv", ["a", "b"], [0, 2]))
    assert infer_label_names(table, None) == ["0", "1", "2"]


def test_names_and_ids_mix(tmp_path):
    table = read_file(write_csv(tmp_path / "d.csv", ["a", "b"], ["Sports", 3]))
    assert labels_of(table) == [1, 3]


# ------------------------------------------------------------------ filter and split


def test_length_filter_drops_outside_percentiles():
    data = Labelled([f"t{i}" for i in range(101)], np.zeros(101, dtype=np.int64))
    lengths = np.arange(101)
    kept, report = length_filter(data, lengths, [1, 99])
    assert (report.low, report.high) == (1.0, 99.0)
    assert report.dropped == 2 and report.kept == 99 == len(kept)
    assert "t0" not in kept.texts and "t100" not in kept.texts


def test_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), 25)
    data = Labelled([f"t{i}" for i in range(100)], labels)
    a_rest, a_part = split(data, 0.2, seed=7, what="x")
    b_rest, b_part = split(data, 0.2, seed=7, what="x")
    c_rest, c_part = split(data, 0.2, seed=8, what="x")
    assert a_part.texts == b_part.texts and a_part.texts != c_part.texts
    assert not set(a_rest.texts) & set(a_part.texts) and len(a_rest) + len(a_part) == 100
    assert np.bincount(a_part.labels).tolist() == [5, 5, 5, 5]
    _, counted = split(data, 12, seed=7, what="x")
    assert len(counted) == 12


@needs_shared
def test_load_splits_holds_out_test_before_filtering(tokenizer):
    cfg = DataConfig(dataset=None, train_file=str(AGNEWS_5K), label_names=AG_NEWS_LABELS, max_length=128,
                     test_size=1000, val_fraction=0.1)
    splits = load_splits(cfg, tokenizer, log=lambda _: None)
    assert len(splits.test) == 1000
    report = splits.filter_report
    assert report.kept + report.dropped == 4000 and report.dropped > 0
    assert len(splits.train) + len(splits.val) == report.kept
    assert len(splits.val) == int(np.ceil(0.1 * report.kept))
    assert not set(splits.test.texts) & set(splits.train.texts)


def test_collate_pads_to_the_longest_in_batch():
    data = Encoded([[0, 5, 2], [0, 5, 6, 7, 2]], np.array([1, 3]))
    batch = collate(pad_id=1)([data[0], data[1]])
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1, 1], [0, 5, 6, 7, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 3]


def test_length_grouped_batches_cover_everything_once_and_pad_less():
    from loraclf.data.batching import length_grouped_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    batches = length_grouped_batches(lengths, batch_size=16, seed=3, group=10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert batches == length_grouped_batches(lengths, 16, seed=3, group=10)
    assert batches != length_grouped_batches(lengths, 16, seed=4, group=10)

    def padded(bs):
        return sum(len(b) * lengths[b].max() for b in bs)

    random_batches = [list(rng.permutation(1000)[i : i + 16]) for i in range(0, 1000, 16)]
    assert padded(batches) < 0.7 * padded(random_batches)


@pytest.mark.parametrize("cost", [0, 7, 40, 10_000])
def test_length_chunks_are_the_cheapest_split_of_the_sorted_batch(cost):
    """Against brute force: every way of cutting the length-sorted batch into contiguous chunks."""
    import itertools

    from loraclf.data.batching import length_chunks

    rng = np.random.default_rng(cost)
    for _ in range(20):
        lengths = rng.integers(1, 60, size=int(rng.integers(1, 9))).tolist()
        chunks = length_chunks(lengths, cost)
        assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))

        def price(groups):
            return sum(len(g) * max(g) + cost for g in groups)

        ordered = sorted(lengths)
        cheapest = min(price([ordered[a:b] for a, b in zip((0, *cuts), (*cuts, len(ordered)))])
                       for k in range(len(ordered)) for cuts in itertools.combinations(range(1, len(ordered)), k))
        assert price([[lengths[i] for i in chunk] for chunk in chunks]) == cheapest
    assert length_chunks([5, 90, 6, 88], 10_000) == [[0, 1, 2, 3]]  # one chunk: the batch as it was
    assert sorted(map(sorted, length_chunks([5, 90, 6, 88], 0))) == [[0], [1], [2], [3]]


@needs_shared
def test_load_splits_tokenizes_train_and_validation_once(tokenizer, tmp_path, agnews_rows):
    texts, labels = agnews_rows
    path = write_csv(tmp_path / "d.csv", texts[:200], labels[:200])
    cfg = DataConfig(dataset=None, train_file=str(path), max_length=32, length_filter=None)
    splits = load_splits(cfg, tokenizer, log=lambda _: None)
    for part in (splits.train, splits.val):
        flat = part.encoded()
        assert flat.ids.dtype == np.int32 and flat.labels is part.labels
        assert [flat.tokens(i).tolist() for i in range(len(flat))] == tokenizer(part.texts, truncation=True,
                                                                                max_length=32)["input_ids"]
    assert splits.train.tokens.lengths.max() == 32
    assert splits.filter_report is None and len(splits.train) + len(splits.val) == 200


def test_windows_cover_a_long_text_and_map_back_to_it(tokenizer):
    long, short = " ".join(f"w{i}" for i in range(300)), "A short text."
    windows = encode(tokenizer, [short, long, short], None, 32, "windows", stride=8)
    assert windows.count == 3 and windows.cut == 1 and windows.documents.tolist()[:2] == [0, 1]
    mine = windows.subset(np.flatnonzero(windows.documents == 1))
    expected = tokenizer(long, truncation=True, max_length=32, stride=8, return_overflowing_tokens=True)
    assert [mine.tokens(i).tolist() for i in range(len(mine))] == expected["input_ids"] and len(mine) > 10
    body = [mine.tokens(i)[1:-1].tolist() for i in range(len(mine))]
    assert body[0][-8:] == body[1][:8] and body[0][:-8] != body[1][:-8]  # consecutive windows share 8 tokens
    truncated = encode(tokenizer, [short, long, short], None, 32)
    assert truncated.documents is None and len(truncated) == 3 and truncated.cut == 1
    assert truncated.tokens(1).tolist() == mine.tokens(0).tolist()
    logits = np.arange(len(windows) * 2, dtype=np.float32).reshape(-1, 2)
    from loraclf.data.encoding import document_logits

    per_text = document_logits(logits, windows.documents)
    assert per_text.shape == (3, 2) and np.allclose(per_text[1], logits[windows.documents == 1].mean(axis=0))


def test_subsets_and_concatenations_of_flat_token_arrays_are_the_lists_they_stand_for():
    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 50000, size=int(n)).tolist() for n in rng.integers(0, 40, size=50)]
    data = Encoded(lists, np.arange(50), [[i % 2] * len(x) for i, x in enumerate(lists)])
    index = rng.permutation(50)[:20]
    part = data.subset(index)
    assert [part.tokens(i).tolist() for i in range(20)] == [lists[i] for i in index]
    assert [part[i][2].tolist() for i in range(20)] == [[i % 2] * len(lists[i]) for i in index]
    both = Encoded.concat([part, data.subset(index[:3])], np.zeros(23))
    assert [both.tokens(i).tolist() for i in range(23)] == [lists[i] for i in [*index, *index[:3]]]
    assert both.labels.tolist() == [0] * 23


@needs_shared
def test_dataset_path_goes_through_datasets_with_classlabel_names(tmp_path, tokenizer, agnews_rows):
    """`data.dataset` is what `datasets.load_dataset` takes: a hub id, or (here, offline) a folder."""
    import datasets

    texts, labels = agnews_rows
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=AG_NEWS_LABELS)})
    folder = tmp_path / "ag_news_local"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": texts[:120], "label": labels[:120]}, features=features).to_parquet(
        folder / "train.parquet")
    datasets.Dataset.from_dict({"text": texts[120:150], "label": labels[120:150]}, features=features).to_parquet(
        folder / "test.parquet")
    cfg = DataConfig(dataset=str(folder), max_length=64, length_filter=None)
    splits = load_splits(cfg, tokenizer, log=lambda _: None)
    assert splits.label_names == AG_NEWS_LABELS
    assert len(splits.train) + len(splits.val) == 120 and len(splits.test) == 30
    assert splits.test.labels.tolist() == labels[120:150]


def test_unreachable_dataset_is_one_clear_error(tmp_path):
    from loraclf.data.sources import load_hub

    with pytest.raises(UserError, match=r"cannot load dataset .*offline, use local files: --data.train_file"):
        load_hub(str(tmp_path / "no-such-dataset"), "text")


def test_collate_rounds_width_up_to_a_multiple():
    data = Encoded([[0, 5, 2], [0, 5, 6, 7, 2]], np.array([1, 3]))
    batch = collate(pad_id=1, multiple=8)([data[0], data[1]])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].sum(1).tolist() == [3, 5]
    assert batch["input_ids"][0].tolist() == [0, 5, 2, 1, 1, 1, 1, 1]


def test_every_item_exactly_once_per_epoch_in_seeded_order(tokenizer):
    from loraclf.data.batching import loader

    rng = np.random.default_rng(1)
    ids = [list(range(2, 2 + int(n))) for n in rng.integers(3, 60, size=203)]
    data = Encoded(ids, np.arange(203))
    for grouped in (False, True):
        epochs = [[int(x) for b in loader(data, 16, 1, shuffle=True, seed=s, group_by_length=grouped)
                   for x in b["labels"]] for s in (0, 0, 1)]
        assert sorted(epochs[0]) == list(range(203))
        assert epochs[0] == epochs[1] and epochs[0] != epochs[2]


def test_test_split_picks_the_hub_split_or_none(monkeypatch, tokenizer):
    from loraclf.data import splits as splits_module
    from loraclf.data.tables import Table

    texts = [f"item number {i} about markets and sport" for i in range(40)]
    hub = {"train": Table("hub[train]", texts, [i % 4 for i in range(40)]),
           "test": Table("hub[test]", texts[:8], [i % 4 for i in range(8)]),
           "validation": Table("hub[validation]", texts[:6], [i % 4 for i in range(6)])}
    monkeypatch.setattr(splits_module, "load_hub", lambda *args: hub)
    cfg = DataConfig(dataset="some/hub-id", label_names=AG_NEWS_LABELS, length_filter=None)
    assert len(load_splits(cfg, tokenizer, log=lambda _: None).test) == 8
    cfg.test_split = "validation"
    assert len(load_splits(cfg, tokenizer, log=lambda _: None).test) == 6
    cfg.test_split = None
    assert load_splits(cfg, tokenizer, log=lambda _: None).test is None
    cfg.test_split = "dev"
    with pytest.raises(UserError, match="data.test_split: dataset 'some/hub-id' has no 'dev' split"):
        load_splits(cfg, tokenizer, log=lambda _: None)


# ------------------------------------------------------------------ multi-label and text pairs

from loraclf.data.tables import Schema

MULTI = Schema(task="multi_label", label="labels")
NAMES = ["World", "Sports", "Business"]


def test_multi_label_rows_from_lists_joined_strings_and_zero_one_columns(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "labels": ["World", "Business"]}\n{"text": "b", "labels": [1]}\n')
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('text,labels\na,World;Business\nb, Sports \n')
    columns = tmp_path / "c.csv"
    columns.write_text("text,World,Sports,Business\na,1,0,1.0\nb,0,1,0\n")
    expected = [[1, 0, 1], [0, 1, 0]]
    for path, schema in ((jsonl, MULTI), (csv_path, MULTI), (columns, Schema(task="multi_label",
                                                                              label_columns=tuple(NAMES)))):
        table = read_file(path, schema)
        assert infer_label_names(table, NAMES, schema) == NAMES
        assert encode_labels(table, NAMES, schema).tolist() == expected, path
    table = read_file(csv_path, MULTI)
    assert infer_label_names(table, None, MULTI) == ["Business", "Sports", "World"]  # sorted names when not given


def test_multi_label_splits_are_label_matrices(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "labels": [NAMES[i % 3], NAMES[(i + 1) % 3]]}) + "\n"
                            for i in range(40)))
    cfg = DataConfig(dataset=None, train_file=str(path), task="multi_label", label_column="labels",
                     length_filter=None, val_fraction=0.25)

    class Words:  # a tokenizer stand-in: one id per word
        def __call__(self, texts, *_, **__):
            return {"input_ids": [[1] * len(t.split()) for t in texts]}

    splits = load_splits(cfg, Words(), log=lambda _: None)
    assert splits.train.labels.shape == (30, 3) and splits.val.labels.shape == (10, 3)
    assert (splits.train.labels.sum(axis=1) == 2).all()
    batch = collate(0)([splits.train.encoded()[i] for i in range(3)])
    assert batch["labels"].dtype.is_floating_point and batch["labels"].shape == (3, 3)


def test_pairs_are_the_tokenizers_pair_encoding_cut_longest_first(tmp_path, tokenizer):
    path = tmp_path / "pairs.csv"
    long = "word " * 60
    path.write_text(f"premise,hypothesis,label\nA short premise.,{long},1\nThe cat sat.,A cat sat.,0\n")
    schema = Schema(pair="hypothesis", text="premise")
    table = read_file(path, schema)
    assert table.texts[1] == ("The cat sat.", "A cat sat.")
    encoded = encode(tokenizer, table.texts, None, 32)
    ids = [encoded.tokens(i).tolist() for i in range(len(encoded))]
    expected = tokenizer(["A short premise.", "The cat sat."], [long, "A cat sat."], truncation="longest_first",
                         max_length=32)["input_ids"]
    assert ids == expected and len(ids[0]) == 32 and encoded.types is None  # RoBERTa marks no segments
    assert encoded.cut == 1
    assert tokenizer.decode(ids[0]).startswith("<s>A short premise.</s></s>word word")  # the long text was cut


def test_segment_ids_are_padded_with_the_batch():
    data = Encoded([[0, 5, 2, 7, 2], [0, 5, 2]], np.array([1, 0]), [[0, 0, 0, 1, 1], [0, 0, 1]])
    batch = collate(9)([data[0], data[1]])
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert "token_type_ids" not in collate(9)([Encoded([[0, 2]])[0]])


# ------------------------------------------------------------------ dirty and odd files


def _dirty_csv(path):
    """A Banking77-style file: a text without a label, a label without a text, a row of three fields and a
    field over the size limit, between good rows."""
    rows = ["text,label", "card arrived,card_arrival", "my card is broken,", ",card_not_working",
            "pin blocked,pin_blocked,extra", f"{'x' * (2**20 + 1)},pin_blocked", "where is my card,card_arrival",
            "forgot my pin,pin_blocked", "new card please,card_arrival", "card still broken,card_not_working",
            "pin locked,pin_blocked", "card stopped working,card_not_working"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_an_error_naming_the_row_or_skipped_and_counted(tmp_path):
    path = _dirty_csv(tmp_path / "intents.csv")
    cfg = DataConfig(dataset=None, train_file=str(path))
    with pytest.raises(UserError, match=r"row 2 \(line 3\), column 'label': missing label.*--data.on_bad_row skip"):
        read_labelled(cfg)
    read = read_labelled(DataConfig(dataset=None, train_file=str(path), on_bad_row="skip"))
    assert read.label_names == ["card_arrival", "card_not_working", "pin_blocked"]
    assert read.train.texts == ["card arrived", "where is my card", "forgot my pin", "new card please",
                                "card still broken", "pin locked", "card stopped working"]
    assert read.train.labels.tolist() == [0, 0, 2, 0, 1, 2, 1]
    [dropped] = read.dropped
    assert dropped.count == 4 and len(dropped.first) == 4
    for fragment, message in zip(["row 2 (line 3), column 'label': missing label",
                                  "row 3 (line 4), column 'text': empty or missing text",
                                  "row 4 (line 5): expected 2 fields like the header, got 3",
                                  "row 5 (line 6), column 'text': a field of 1,048,577 characters, over the limit "
                                  "of 1,048,576"], dropped.first):
        assert fragment in message
    assert "skipped 4 bad rows" in dropped.describe()


def test_a_test_file_with_a_class_the_run_does_not_know(tmp_path):
    train = write_csv(tmp_path / "train.csv", TEXTS, LABELS)
    test = write_csv(tmp_path / "test.csv", ["Peace", "Chips"], [0, 9])
    cfg = DataConfig(dataset=None, train_file=str(train), test_file=str(test))
    with pytest.raises(UserError, match=r"test.csv: row 2 \(line 3\), column 'label': label '9' is not a class id 0-3"):
        read_labelled(cfg)
    cfg.on_bad_row = "skip"
    read = read_labelled(cfg)
    assert read.test.texts == ["Peace"] and read.dropped[0].count == 1


@pytest.mark.parametrize("name, delimiter, configured", [
    ("d.csv", ";", None), ("d.tsv", "\t", None), ("d.csv", "|", None), ("d.txt.csv", ";", ";")])
def test_delimiters_are_sniffed_from_the_header_or_set(tmp_path, name, delimiter, configured):
    path = tmp_path / name
    path.write_text(f"label{delimiter}text\n2{delimiter}Stocks, again\n1{delimiter}Team wins\n", encoding="utf-8")
    table = read_file(path, Schema(delimiter=configured))
    assert table.texts == ["Stocks, again", "Team wins"] and table.raw_labels == ["2", "1"]


def test_a_semicolon_file_read_as_commas_says_which_setting_to_give(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body;label\nStocks;2\n", encoding="utf-8")  # no text column under any delimiter
    with pytest.raises(UserError, match=r"one column.*--data.text_column.*--data.delimiter"):
        read_file(path)
    with pytest.raises(UserError, match=r"--text-column.*--delimiter"):
        read_file(path, Schema(options="flags"))


def test_encodings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nCaf\u00e9 prices rise,2\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"line 2: not UTF-8 text.*set --data.encoding \(e.g. latin-1"):
        read_file(path)
    assert read_file(path, Schema(encoding="latin-1")).texts == ["Caf\u00e9 prices rise"]
    utf16 = tmp_path / "u.csv"
    utf16.write_bytes("text,label\nStocks,2\n".encode("utf-16"))
    with pytest.raises(UserError, match="UTF-16 text.*save it as UTF-8"):
        read_file(utf16)
    with pytest.raises(UserError, match="--data.encoding: unknown encoding 'latin-9000'"):
        DataConfig(dataset=None, train_file="x.csv", encoding="latin-9000").validate()


@pytest.mark.parametrize("items, asked, held_out", [(300, 1000, 60), (300, 100, 100), (20, 1000, 0)])
def test_a_test_part_too_big_for_the_file_is_scaled_down_or_dropped(items, asked, held_out):
    notes = []
    size = held_out_size(asked, items, "small.csv", notes.append)
    assert size == held_out
    assert bool(notes) == (held_out != asked)
