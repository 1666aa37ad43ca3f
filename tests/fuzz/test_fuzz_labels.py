"""Class labels round-trip through data prep exactly as written (issue 16, item 1).

Any non-empty text is a label: pandas' missing-value tokens (`NA`, `NULL`,
`nan`...), numbers with leading zeros or a decimal point, booleans, unicode,
quotes, commas and spaces. Only an empty cell is missing.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from data_prep import data_prep, read_csvs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

NA_TOKENS = ["NA", "N/A", "NULL", "null", "None", "nan", "NaN", "#N/A", "<NA>", "n/a", "-nan"]
LOOKALIKES = ["001", "1", "1.0", "1e3", "True", "false", "0x1F", " a", "a ", '"q"', "a,b"]

labels = st.one_of(
    st.sampled_from(NA_TOKENS + LOOKALIKES),
    st.text(
        st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="\x00"),
        min_size=1,
        max_size=8,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.lists(labels, min_size=2, max_size=6, unique=True))
@example(classes=["001", "1"])
@example(classes=["NA", "None", "nan"])
def test_labels_come_out_as_written(classes: list[str]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["f1", "f2", "target"])
    for i in range(3 * len(classes)):
        writer.writerow([i % 7, i % 3, classes[i % len(classes)]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        out = data_prep(read_csvs([path]))
    assert len(out) == 3 * len(classes)
    assert sorted(out["target"].unique()) == sorted(classes)
