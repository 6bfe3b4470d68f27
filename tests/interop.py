"""A recording is readable as it is by other engines: DuckDB and pyarrow.

Run by .ci/run after the Rust tests: imports the real audit samples with the kubestep binary given
as the first argument, then reads the Parquet tree with DuckDB (hive partitioning) and pyarrow (hive dataset) and
checks both see every row, the partition columns, and the column types of docs/SCHEMA.md. The
documented views (their SQL as `kubestep sql` gives it in information_schema.views) must also run
in DuckDB over that tree: the performance report gives DuckDB the same views.
"""

import json

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
checks = 0

def check(name, ok, detail=""):
    global failures, checks
    print(("ok     " if ok else "FAILED ") + name + ("" if ok else f": {detail}"))
    checks += 1
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

    views = json.loads(subprocess.run(
        [binary, "sql", "-d", data, "--format", "json",
         "SELECT table_name, definition FROM information_schema.views WHERE definition IS NOT NULL"],
        capture_output=True, text=True, check=True).stdout)
    check("the documented views are listed", len(views) >= 9, [v["table_name"] for v in views])
    con.execute(f"CREATE VIEW operations AS SELECT * FROM read_parquet('{tree}/**/*.parquet', hive_partitioning = true)")
    for view in views:
        try:
            con.execute(f"CREATE VIEW {view['table_name']} AS {view['definition']}")
            con.sql(f"SELECT count(*) FROM {view['table_name']}").fetchall()
            check(f"duckdb runs the view {view['table_name']}", True)
        except duckdb.Error as e:
            check(f"duckdb runs the view {view['table_name']}", False, str(e).splitlines()[0])

    table = ds.dataset(tree, format="parquet", partitioning="hive").to_table()
    check("pyarrow sees every row", table.num_rows == expected, f"{table.num_rows} != {expected}")
    check("pyarrow: received_at is timestamp[us, UTC]",
          table.schema.field("received_at").type == pa.timestamp("us", tz="UTC"), table.schema.field("received_at").type)
    check("pyarrow: generation is int64", table.schema.field("generation").type == pa.int64())
    check("pyarrow: dry_run is bool", table.schema.field("dry_run").type == pa.bool_())

print(f"interop: {checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
