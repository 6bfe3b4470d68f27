//! `kubestep compact`: small files merged into large ones, with the same rows, while queries
//! running at the same time always see the whole recording exactly once.

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use server::import_small_files;

const ALL_ROWS: &str = "SELECT * FROM operations ORDER BY received_at, audit_id";

fn parquet_count(data: &Path) -> usize {
    all_files(&data.join("operations")).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
}

#[test]
fn small_files_become_few_with_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_small_files(&data, 12, 40);
    assert_eq!(parquet_count(&data), 12);
    let before = rows(&data, ALL_ROWS);

    let output = kubestep(&["compact", "-d", &data.display().to_string(), "--target-rows", "200"], None);
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("merged 12 files (480 rows) into 3"), "{:?}", text(&output));
    assert_eq!(parquet_count(&data), 3);
    assert_eq!(rows(&data, ALL_ROWS), before);
    // Each merged file is sorted by received_at, as every file is.
    for file in all_files(&data.join("operations")) {
        let path = file.display().to_string();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sorted = runtime.block_on(async {
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.register_parquet("f", &path, Default::default()).await.unwrap();
            let batches = ctx
                .sql("SELECT count(*) FROM (SELECT received_at < lag(received_at) OVER () AS back FROM f) WHERE back")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
        });
        assert!(sorted.contains("| 0 "), "{path} is not sorted: {sorted}");
    }
    // Nothing left to do: a second run says so and changes nothing.
    let again = kubestep(&["compact", "-d", &data.display().to_string(), "--target-rows", "200"], None);
    assert!(text(&again).0.contains("nothing to compact"), "{:?}", text(&again));
    assert!(std::fs::read_dir(data.join("compact")).unwrap().flatten().all(|e| !e.path().is_dir()));

    let unknown = kubestep(&["compact", "-d", &data.display().to_string(), "--session", "nope"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).1.contains("no session \"nope\""), "{:?}", text(&unknown));
}

#[test]
fn queries_during_compaction_see_every_row_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_small_files(&data, 24, 25);
    let total = 24 * 25;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let data = data.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let mut queries = 0;
            while !stop.load(Ordering::Relaxed) || queries < 5 {
                let batches = runtime
                    .block_on(async {
                        let ctx = kubestep_query::open_recording(&data).await.unwrap();
                        kubestep_query::run_sql(
                            &ctx,
                            "SELECT count(*) AS n, count(DISTINCT audit_id) AS d FROM operations",
                        )
                        .await
                    })
                    .unwrap_or_else(|e| panic!("query {queries} failed during compaction: {e}"));
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
                assert!(text.contains(&format!("| {total} | {total} |")), "query {queries}: {text}");
                queries += 1;
            }
            queries
        })
    };
    for target in ["50", "100", "200", "1000"] {
        let output = kubestep(&["compact", "-d", &data.display().to_string(), "--target-rows", target], None);
        assert!(output.status.success(), "{:?}", text(&output));
    }
    stop.store(true, Ordering::Relaxed);
    let queries = reader.join().unwrap();
    assert!(queries >= 5);
    assert_eq!(parquet_count(&data), 1);
}
