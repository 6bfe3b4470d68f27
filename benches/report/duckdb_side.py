"""The DuckDB side of `cargo bench --bench report`.

Reads a workload (JSON) written by the harness: set-up statements (the `operations` view over
KubeStep's Parquet files or over the raw JSON lines, then KubeStep's documented views), and for each
command the statements that `kubestep` itself ran for it, captured from its SQL log, with their
parameters as SQL literals. Runs each command's statements in order, fetching every row as Arrow,
`runs` times (each command's runs together within `timeout_seconds`), and prints one JSON object: per
command the median seconds and the rows fetched (and, for a command faster than
`fresh_below_seconds`, the median from a new connection each time), plus this process's peak RSS. DuckDB (from PyPI) is limited to the threads the harness gives it.
"""

import json
import re
import statistics
import sys
import threading
import time

import duckdb


def bind(sql, params):
    """Puts the literals in place of $1, $2, ... (highest first, so $1 never eats $10), after
    dropping comment lines (which name the parameters too)."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    for i in range(len(params), 0, -1):
        sql = re.sub(r"\$%d(?!\d)" % i, lambda _m, v=params[i - 1]: v, sql)
    return sql


def fetch(con, sql):
    result = con.execute(sql)
    table = result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()
    return table.num_rows


def peak_rss_bytes():
    """This process's high-water RSS (VmHWM: unlike getrusage, not inherited from the parent)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def connect(workload):
    """A connection with the harness's settings and the set-up statements run."""
    con = duckdb.connect()
    con.execute("SET threads = %d" % workload["threads"])
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    # Spilling goes to the harness's work directory, bounded: a runaway plan fails, not the disk.
    con.execute("SET temp_directory = '%s'" % workload["temp_directory"])
    con.execute("SET max_temp_directory_size = '%dGB'" % workload["max_temp_gb"])
    for statement in workload["setup"]:
        con.execute(statement)
    return con


def fresh_seconds(workload, statements):
    """Median seconds of the statements each on a new connection, set-up included: what a new
    `duckdb` process pays for the query, less the process start."""
    times = []
    for _ in range(workload["runs"]):
        started = time.perf_counter()
        con = connect(workload)
        for sql in statements:
            fetch(con, sql)
        con.close()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    workload = json.load(open(sys.argv[1]))
    con = connect(workload)
    out = {}
    for command in workload["commands"]:
        statements = [bind(s["sql"], s["params"]) for s in command["statements"]]
        times, rows, current = [], 0, 0
        # A command that runs past the timeout is interrupted and reported as such.
        timer = threading.Timer(workload["timeout_seconds"], con.interrupt)
        timer.start()
        try:
            for _ in range(workload["runs"]):
                started = time.perf_counter()
                rows = 0
                for current, sql in enumerate(statements):
                    rows += fetch(con, sql)
                times.append(time.perf_counter() - started)
            out[command["name"]] = {"seconds": statistics.median(times), "rows": rows}
            # Short commands are dominated by what a warm connection has cached (file metadata):
            # time them from a new connection too.
            if statistics.median(times) < workload.get("fresh_below_seconds", 0):
                out[command["name"]]["fresh_seconds"] = fresh_seconds(workload, statements)
        except duckdb.Error as e:
            if not timer.is_alive():
                error = "interrupted after %d s (statement %d)" % (workload["timeout_seconds"], current + 1)
            else:
                error = "statement %d: %s" % (current + 1, str(e).splitlines()[0])
            print(error, file=sys.stderr)
            out[command["name"]] = {"error": error}
        finally:
            timer.cancel()
    out["peak_rss_bytes"] = peak_rss_bytes()
    print("\n" + json.dumps(out))


if __name__ == "__main__":
    main()
