"""Property-based: any unicode text (quotes, commas, newlines, backslashes included) round-trips
through every file format the loaders read."""

import csv
import json
import pickle
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraclf.data.sources import read_file

# Any unicode except surrogates (not encodable as UTF-8) and NUL (the loaders treat it as a
# binary file); weighted towards the characters that break hand-written parsers.
TRICKY = st.sampled_from(list('",\\\n\r\t\' ;|') + ["\\n", '""', "\u2028", "\u00e9", "\U0001f600"])
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
FIELD = st.lists(st.one_of(TRICKY, CHARS), min_size=0, max_size=30).map("".join)
TEXT = FIELD.filter(lambda t: t.strip())  # blank texts are rejected by design
ROWS = st.lists(st.tuples(TEXT, st.integers(0, 3)), min_size=1, max_size=8)
AG_ROWS = st.lists(st.tuples(FIELD, FIELD, st.integers(0, 3)), min_size=1, max_size=8).filter(
    lambda rows: all(f"{t} {d}".strip() for t, d, _ in rows))

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(rows: list[tuple[str, int]], kind: str, folder: Path) -> Path:
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    if kind == "csv":
        path = folder / "data.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    elif kind == "jsonl":
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    elif kind == "json":
        path = folder / "data.json"
        path.write_text(json.dumps([{"text": t, "label": y} for t, y in rows], ensure_ascii=False),
                        encoding="utf-8")
    elif kind == "parquet":
        path = folder / "data.parquet"
        pq.write_table(pa.table({"text": texts, "label": labels}), path)
    else:
        path = folder / "data.pkl"
        with path.open("wb") as handle:
            pickle.dump(pd.DataFrame({"text": texts, "label": labels}), handle)
    return path


@PROPERTY
@given(rows=ROWS, kind=st.sampled_from(["csv", "jsonl", "json", "parquet", "pickle"]))
def test_texts_and_labels_round_trip(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        table = read_file(write(rows, kind, Path(tmp)), allow_pickle=kind == "pickle")
    assert table.texts == [t for t, _ in rows]
    assert [int(y) for y in table.raw_labels] == [y for _, y in rows]


@PROPERTY
@given(rows=AG_ROWS)
def test_original_ag_news_layout_round_trips(rows):
    """No header; class 1-4, title, description, every field quoted; text = title + " " + description."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL).writerows([(y + 1, t, d) for t, d, y in rows])
        table = read_file(path)
    assert table.texts == [f"{t} {d}" for t, d, _ in rows]
    assert table.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert table.raw_labels == [y for _, _, y in rows]
