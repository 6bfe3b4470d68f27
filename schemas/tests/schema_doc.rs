//! `docs/SCHEMA.md` and the code describe the same `operations` table: same columns, same order,
//! same types.

use kubestep_schemas::schema::{table_schema, type_label};

fn documented_columns() -> Vec<(String, String)> {
    // Read at run time, not baked in at compile time: a build cache shared between checkouts must
    // not make the test read another checkout's file.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = format!("{manifest_dir}/../docs/SCHEMA.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| column"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn documented_table_matches_the_arrow_schema() {
    let documented = documented_columns();
    let schema = table_schema();
    let actual: Vec<(String, String)> =
        schema.fields().iter().map(|f| (f.name().clone(), type_label(f.data_type()))).collect();
    assert_eq!(documented, actual);
}

#[test]
fn the_spec_columns_are_all_there() {
    // The column names users already write SQL against.
    let schema = table_schema();
    for name in [
        "session_id",
        "audit_id",
        "stage",
        "level",
        "received_at",
        "completed_at",
        "duration_ms",
        "verb",
        "operation_type",
        "api_group",
        "api_version",
        "resource",
        "subresource",
        "kind",
        "namespace",
        "name",
        "uid",
        "resource_version",
        "base_resource_version",
        "generation",
        "owner_uids",
        "actor_id",
        "username",
        "user_agent",
        "user_groups",
        "source_ips",
        "impersonated_user",
        "pod_name",
        "pod_uid",
        "field_manager",
        "status_code",
        "error",
        "request_uri",
        "dry_run",
        "request_object",
        "response_object",
        "annotations",
    ] {
        assert!(schema.field_with_name(name).is_ok(), "missing column {name}");
    }
}
