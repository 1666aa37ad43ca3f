"""Hypothesis strategies for CSV-like bytes: well-formed tables and everything around them.

The tables mix the column names a step expects with random ones (unicode,
empty, duplicated, with quotes and commas), and cells of every kind a CSV
export produces: huge integers, floats with NaN/inf, text, blanks. The bytes
then get a random line ending, BOM, encoding and trailing newline, or are
mangled (cut short, stray quotes, NUL bytes), or are just random bytes.
"""

from __future__ import annotations

import csv
import io

from hypothesis import strategies as st

LABEL_NAMES = {"target", "id"}
ODD_NAMES = ["", " ", "a", "a.1", "Unnamed: 0", "ünïcødé", "名前", "x,y", 'q"uote', "NaN", "1"]


def names(required: list[str]) -> st.SearchStrategy[list[str]]:
    """A header: some of `required` plus random names, shuffled, sometimes duplicated."""
    extra = st.lists(
        st.one_of(st.sampled_from(ODD_NAMES), st.text(min_size=0, max_size=8)), max_size=4
    )
    kept = (
        st.lists(st.sampled_from(required), unique=True, max_size=len(required))
        if required
        else st.just([])
    )
    return st.tuples(st.just(required), kept, extra, st.booleans(), st.booleans()).flatmap(
        lambda t: st.permutations((t[0] if t[3] else t[1]) + t[2] + (t[2][:1] if t[4] else []))
    )


def cells() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=-10, max_value=10).map(lambda f: f"{f:.3f}"),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.integers(min_value=0, max_value=3).map(str),
        st.sampled_from(
            [
                "",
                "nan",
                "NaN",
                "inf",
                "-inf",
                "1e400",
                "-1e400",
                "NA",
                "null",
                "True",
                "False",
                " 1",
                "1_000",
                "0x1F",
                "١٢",
                "x",
                "a",
                "b",
            ]
        ),
        st.text(max_size=6),
    )


def column_cells(kind: str) -> st.SearchStrategy[str]:
    """Cells of one column: mostly of its kind, sometimes anything at all."""
    typed = {
        "float": st.floats(min_value=-10, max_value=10).map(lambda f: f"{f:.3f}"),
        "int": st.integers(min_value=-5, max_value=5).map(str),
        "label": st.sampled_from(["x", "y", "z", "1", "2"]),
        "any": cells(),
    }[kind]
    return st.one_of(*[typed] * 12, cells())


@st.composite
def table_rows(draw: st.DrawFn, header: list[str]) -> list[list[str]]:
    def kind_of(name: str) -> st.SearchStrategy[str]:
        if name in LABEL_NAMES:
            return st.sampled_from(["label", "label", "label", "int", "any"])
        return st.sampled_from(["float", "float", "float", "int", "label", "any"])

    kinds = [draw(kind_of(name)) for name in header]
    n_rows = draw(st.integers(min_value=0, max_value=16))
    rows = []
    for _ in range(n_rows):
        row = [draw(column_cells(kind)) for kind in kinds]
        # Sometimes one field more or fewer than the header.
        extra = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, -1]))
        rows.append([*row, "9"] if extra > 0 else row[: len(row) + extra] if extra else row)
    return rows


def serialise(header: list[str], rows: list[list[str]], style: dict[str, object]) -> bytes:
    buffer = io.StringIO()
    terminator = str(style["newline"])
    if style["quote_all"]:
        writer = csv.writer(buffer, lineterminator=terminator, quoting=csv.QUOTE_ALL)
        for row in [header, *rows]:
            writer.writerow(row)
        text = buffer.getvalue()
    else:
        # Naive joining: a comma or quote inside a value breaks the row, as in hand-made files.
        text = "".join(",".join(row) + terminator for row in [header, *rows])
    if not style["trailing_newline"]:
        text = text.removesuffix(terminator)
    data = text.encode(str(style["encoding"]), errors="replace")
    if style["bom"]:
        data = b"\xef\xbb\xbf" + data
    return data


def mangle(data: bytes, how: str, at: int) -> bytes:
    if not data or how == "none":
        return data
    i = at % len(data)
    if how == "cut":
        return data[:i]
    if how == "quote":
        return data[:i] + b'"' + data[i:]
    if how == "nul":
        return data[:i] + b"\x00" + data[i:]
    return data[:i] + b"\xff\xfe" + data[i:]  # invalid UTF-8


@st.composite
def csv_bytes(draw: st.DrawFn, required: list[str]) -> bytes:
    """CSV-like bytes around a table whose header includes some of `required`."""
    mode = draw(st.sampled_from(["bytes", "clean", "clean", "clean", "chaos", "chaos", "chaos"]))
    if mode == "bytes":
        return draw(st.binary(max_size=200))
    if mode == "clean":
        return draw(clean_csv_bytes(required))
    header = draw(names(required))
    rows = draw(table_rows(header))
    style = {
        "newline": draw(st.sampled_from(["\n", "\r\n", "\r"])),
        "quote_all": draw(st.booleans()),
        "trailing_newline": draw(st.booleans()),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"])),
        "bom": draw(st.booleans()),
    }
    data = serialise(header, rows, style)
    how = draw(st.sampled_from(["none", "none", "none", "none", "cut", "quote", "nul", "bytes"]))
    return mangle(data, how, draw(st.integers(min_value=0, max_value=10_000)))


@st.composite
def clean_csv_bytes(draw: st.DrawFn, required: list[str]) -> bytes:
    """A plausible export: the expected columns (plus maybe a unicode one), typed values
    with the odd NaN, inf or huge number, any line ending, BOM or not."""
    header = draw(st.permutations(required))
    if draw(st.booleans()):
        header = [*header, draw(st.sampled_from(["ünïcødé", "名前", "x y", "Unnamed: 0"]))]
    odd = st.sampled_from(["", "nan", "inf", "-inf", "1e400", str(10**25), "-0", "1e-320"])
    number = st.one_of(
        *[st.floats(min_value=-1e6, max_value=1e6).map(repr)] * 10,
        st.integers(min_value=-(10**20), max_value=10**20).map(str),
        odd,
    )
    label = st.one_of(*[st.sampled_from(["x", "y"])] * 8, st.sampled_from(["ä", "", "1"]))
    n_rows = draw(st.integers(min_value=1, max_value=30))
    rows = [
        [draw(label) if name in LABEL_NAMES else draw(number) for name in header]
        for _ in range(n_rows)
    ]
    style = {
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "quote_all": draw(st.booleans()),
        "trailing_newline": draw(st.booleans()),
        "encoding": "utf-8",
        "bom": draw(st.booleans()),
    }
    return serialise(header, rows, style)
