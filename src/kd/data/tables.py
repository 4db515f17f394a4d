"""Text files read strictly: every line accounted for, nothing changed without an error.

Data files are CSV or TSV (below), JSON lines (one object per line) or Parquet (with pyarrow),
and a file name may be a glob of shards (`data/train-*.csv`), read in name order.

Delimited files follow CSV quoting (a field in double quotes may hold the delimiter, newlines
and doubled quotes), parsed by the csv module in strict mode: a quote that does not open and
close a field properly is an error naming its line, never text silently eaten. A quoted field
may span lines (Jigsaw's comments hold newlines, in any column) unless a line that holds only
its text reads as a row of its own: then a stray quote has merged rows, and the error names the
lines. With
`quoting="none"` quotes are ordinary characters. Every row must have the header's number of
fields. Files are UTF-8, with or without a byte-order mark.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kd.config.settings import check_delimiter
from kd.errors import KDError
from kd.files import read_text

csv.field_size_limit(2**31 - 1)  # a text may be megabytes long (the default stops at 128 KiB)

DELIMITERS = {"tab": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


def lines_text(lines: list[int]) -> str:
    """`line 3` / `lines 3, 4, 9, ...`: at most ten line numbers."""
    shown = ", ".join(str(n) for n in lines[:10])
    return f"line{'s' if len(lines) > 1 else ''} {shown}{', ...' if len(lines) > 10 else ''}"


@dataclass
class Table:
    rows: list[list[str]]
    lines: list[int]  # the line of the file each row starts on (1-based)


RECORD_SUFFIXES = (".jsonl", ".parquet")
TAB_SUFFIXES = (".tsv", ".tab")


def default_delimiter(path: str | Path) -> str:
    """The delimiter a file's name ending implies (data.delimiter unset): a tab for .tsv / .tab, else a comma."""
    return "\t" if Path(path).suffix.lower() in TAB_SUFFIXES else ","


def expand(pattern: str | Path) -> list[Path]:
    """The files a name stands for: itself, or the files a glob matches, in name order."""
    text = str(pattern)
    if not any(c in text for c in "*?["):
        return [Path(text)]
    import glob

    found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    if not found:
        raise KDError(f"no file matches {text}")
    return found


def _cell(value) -> str:
    """A JSON or Parquet value as the text a CSV cell would hold (true / false as 1 / 0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_any_table(path: str | Path, delimiter: str | None = None, quoting: str = "csv") -> Table:
    """A CSV, TSV, JSON-lines or Parquet file as a Table, by its name ending; `delimiter` None: the
    one that ending implies."""
    if Path(path).suffix.lower() in RECORD_SUFFIXES:
        return read_records(path)
    return read_table(path, delimiter if delimiter is not None else default_delimiter(path), quoting)


def read_records(path: str | Path) -> Table:
    """A JSON-lines or Parquet file as a Table: the first row is the column names (of the first
    record), the others the values as CSV text; `lines` are record numbers (1-based)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        if not path.is_file():
            raise KDError(f"data file not found: {path}")
        try:
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
        except ImportError:
            raise KDError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow, or kd's parquet extra)") from None
        except Exception as err:  # pyarrow raises its own types for damaged files
            raise KDError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        numbers = list(range(1, len(records) + 1))
    else:
        records, numbers = [], []
        for number, line in enumerate(read_text(path).splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise KDError(f"{path}: line {number} is not valid JSON") from None
                numbers.append(number)
        if any(not isinstance(r, dict) for r in records):
            raise KDError(f"{path}: every line must hold one JSON object")
    if not records:
        raise KDError(f"data file has no rows: {path}")
    header = list(records[0])
    missing = [(n, [k for k in header if k not in r]) for n, r in zip(numbers, records) if any(k not in r for k in header)]
    if missing:
        raise KDError(f"{path}: record {missing[0][0]} lacks {missing[0][1]} (and {len(missing) - 1} more records)")
    return Table([header] + [[_cell(r[k]) for k in header] for r in records], [0] + numbers)


def read_table(path: str | Path, delimiter: str, quoting: str = "csv",
               looks_like_row: Callable[[list[str], list[list[str]]], bool] | None = None,
               check_header: Callable[[list[str], str], None] | None = None) -> Table:
    """Every non-blank row of a delimited file, with the line it starts on. Rows with another
    number of fields than the first, quotes that do not parse, and quoted fields that swallow
    whole rows (`looks_like_row(fields, rows read)` says what a row looks like) are errors
    naming their lines. `check_header(first row, first line)` runs before the other rows are
    parsed, so that a wrong delimiter is reported as such."""
    path = Path(path)
    check_delimiter(delimiter)
    if quoting not in ("csv", "none"):
        raise KDError(f"data.quoting must be csv or none, got {quoting!r}")
    text = read_text(path)
    if not text.strip():
        raise KDError(f"data file is empty: {path}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL)
    rows, lines, multiline = [], [], []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problem = str(err).replace("\t", "\\t")
            raise KDError(f"{path}: line {reader.line_num}: {problem} in the row that starts on line {start}; "
                          "a double quote inside a quoted text is written twice (\"\"), or set "
                          "data.quoting=none if quotes are ordinary characters in this file") from None
        if len(row) == 1 and not row[0].strip() and reader.line_num == start:
            continue  # a line of spaces holds no row
        if row and check_header is not None and not rows:
            check_header(row, text[:text.find("\n")] if "\n" in text else text)
        if row:
            rows.append(row)
            lines.append(start)
            if reader.line_num > start:
                multiline.append(len(rows) - 1)
    _check_field_counts(path, rows, lines)
    if looks_like_row is not None and quoting == "csv":
        _check_swallowed_rows(path, text, rows, lines, multiline, delimiter, looks_like_row)
    return Table(rows, lines)


def _check_field_counts(path: Path, rows: list[list[str]], lines: list[int]) -> None:
    expected = len(rows[0])
    bad = [i for i, row in enumerate(rows) if len(row) != expected]
    if bad:
        i, where = bad[0], lines_text([lines[j] for j in bad])
        raise KDError(f"{path}: {len(bad)} row(s) without {expected} fields, on {where} (line {lines[i]} has "
                      f"{len(rows[i])}): a delimiter inside an unquoted text, a missing value, or the wrong "
                      "data.delimiter")


def _line_as_row(line: str, delimiter: str, fields: int, text_field: int) -> list[str]:
    """A line split at every delimiter, quotes kept, the parts beyond `fields` given back to the
    field `text_field` (a text may hold the delimiter); [] when there are too few parts."""
    parts = line.rstrip("\r\n").split(delimiter)
    extra = len(parts) - fields
    if extra < 0:
        return []
    end = text_field + extra + 1
    return ([p.strip().strip('"') for p in parts[:text_field]] + [delimiter.join(parts[text_field:end])]
            + [p.strip().strip('"') for p in parts[end:]])


def _check_swallowed_rows(path: Path, text: str, rows: list[list[str]], lines: list[int],
                          multiline: list[int], delimiter: str, looks_like_row) -> None:
    """A quoted field that spans lines is refused when one of its lines reads as a row of its own
    where the row as read leaves it no room to: then a stray quote has merged rows. Those are the
    lines strictly inside the field, and the line at its open end: its first line when fields
    follow it (the first line then holds only the start of the text, never the fields after it),
    its last line when it is the row's last field (the last line then holds only the end of the
    text). The other end holds the row's other fields beside the text, as a row would."""
    if not multiline:
        return
    physical = io.StringIO(text, newline="").readlines()  # split where the csv module splits
    fields = len(rows[0])
    for i in multiline:
        last = lines[i + 1] - 1 if i + 1 < len(rows) else len(physical)
        while last > lines[i] and not physical[last - 1].strip():
            last -= 1
        text_field = next(j for j, field in enumerate(rows[i]) if "\n" in field or "\r" in field)
        in_last_field = text_field == fields - 1
        first, end = lines[i] + in_last_field, last + in_last_field
        own = [n for n in range(first, end) if looks_like_row(
            _line_as_row(physical[n - 1], delimiter, fields, text_field), rows)]
        if own:
            raise KDError(f"{path}: lines {lines[i]}-{last} were read as one row, but {lines_text(own)} "
                          f"{'reads as a row of its own' if len(own) == 1 else 'read as rows of their own'}: "
                          f"a double quote on line {lines[i]} opens a text that only closes on line {last}. "
                          "Write a quote inside a quoted text twice (\"\"), or set data.quoting=none if quotes "
                          "are ordinary characters in this file")


def delimiter_hint(first_line: str, delimiter: str, wanted: list[str]) -> str:
    """A hint when the header line, split at another delimiter, holds the wanted columns."""
    for name, other in DELIMITERS.items():
        if other == delimiter:
            continue
        columns = [c.strip().strip('"') for c in first_line.split(other)]
        if len(columns) > 1 and all(c in columns for c in wanted):
            return f" (the header looks {name}-separated: set data.delimiter)"
    return ""
