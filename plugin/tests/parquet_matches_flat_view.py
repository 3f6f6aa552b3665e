"""Checks Parquet files written by `nri-sysflow convert` against sysprint's flat view.

Usage: parquet_matches_flat_view.py COLUMNS_JSON (PARQUET JSONL)...

COLUMNS_JSON is [[column, dotted field, kind], ...] (the converter's column table); each JSONL
holds `nri-sysflow print --format json` of the same SysFlow file. Every row of every Parquet
file must equal the line of the same index, field by field, read back with pyarrow. Prints one
line per file (name, rows) and exits 1 at the first difference, naming file, row and column.
"""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def expected(kind, value):
    """What the column holds for sysprint's value."""
    if kind == "Text":
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value)
    # Typed columns: sysprint's "" (a field this record type lacks) is null.
    if value == "" or value is None:
        return None
    return value


def main():
    columns = json.loads(sys.argv[1])
    pairs = sys.argv[2:]
    for parquet_path, jsonl_path in zip(pairs[::2], pairs[1::2]):
        table = pq.read_table(parquet_path)
        names = [c[0] for c in columns]
        if table.column_names != names:
            sys.exit(f"{parquet_path}: columns {table.column_names} != {names}")
        with open(jsonl_path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if table.num_rows != len(lines):
            sys.exit(f"{parquet_path}: {table.num_rows} rows, the flat view has {len(lines)}")
        for name, field, kind in columns:
            column = table.column(name)
            if kind == "Timestamp":
                column = column.cast(pa.int64())
            values = column.to_pylist()
            for row, (got, line) in enumerate(zip(values, lines)):
                value = line
                for key in field.split("."):
                    value = value[key]
                if kind == "JsonText":
                    want = expected(kind, value)
                    got = None if got is None else json.loads(got)
                else:
                    want = expected(kind, value)
                if got != want:
                    sys.exit(f"{parquet_path}: row {row} column {name}: {got!r} != {want!r}")
        print(f"{parquet_path.rsplit('/', 1)[-1]}: {table.num_rows} rows equal")


main()
