"""A recording is readable as it is by other engines: DuckDB and pyarrow.

Run by .ci/run after the Rust tests: imports the real audit samples with the kubestep binary given
as the first argument, then reads the Parquet tree with DuckDB (hive partitioning) and pyarrow (hive dataset) and
checks both see every row, the partition columns, and the column types of docs/SCHEMA.md.
"""

import glob
import os
import subprocess
import sys
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

binary, samples = sys.argv[1], sys.argv[2]
files = sorted(f for f in glob.glob(os.path.join(samples, "**", "*"), recursive=True)
               if os.path.isfile(f) and not f.endswith(".md"))
failures = 0

def check(name, ok, detail=""):
    global failures
    print(("ok     " if ok else "FAILED ") + name + ("" if ok else f": {detail}"))
    failures += 0 if ok else 1

with tempfile.TemporaryDirectory() as data:
    subprocess.run([binary, "import", "-q", "-d", data, *files], stdout=subprocess.DEVNULL)
    expected = subprocess.run([binary, "sql", "-d", data, "SELECT count(*) AS n FROM operations"],
                              capture_output=True, text=True, check=True).stdout
    expected = int([line for line in expected.splitlines() if line.strip("| ").isdigit()][0].strip("| "))
    tree = os.path.join(data, "operations")

    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{tree}/**/*.parquet', hive_partitioning = true)")
    check("duckdb sees every row", len(rel.fetchall()) == expected, f"expected {expected}")
    types = dict(zip(rel.columns, [str(t) for t in rel.types]))
    check("duckdb: received_at is a UTC timestamp", types.get("received_at") == "TIMESTAMP WITH TIME ZONE", types.get("received_at"))
    check("duckdb: owner_uids is a list of strings", types.get("owner_uids") == "VARCHAR[]", types.get("owner_uids"))
    check("duckdb: session_id comes from the path", "session_id" in types and "date" in types, list(types))

    table = ds.dataset(tree, format="parquet", partitioning="hive").to_table()
    check("pyarrow sees every row", table.num_rows == expected, f"{table.num_rows} != {expected}")
    check("pyarrow: received_at is timestamp[us, UTC]",
          table.schema.field("received_at").type == pa.timestamp("us", tz="UTC"), table.schema.field("received_at").type)
    check("pyarrow: generation is int64", table.schema.field("generation").type == pa.int64())
    check("pyarrow: dry_run is bool", table.schema.field("dry_run").type == pa.bool_())

passed = 8 - failures
print(f"interop: {passed} passed, {failures} failed")
sys.exit(1 if failures else 0)
