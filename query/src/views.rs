//! The documented views users can query beside `operations`. Each is a readable SQL file in
//! `query/sql/views/`; `docs/QUERIES.md` describes them.

use datafusion::prelude::SessionContext;

use crate::QueryError;

/// Every view: its name and its SQL.
pub const VIEWS: [(&str, &str); 3] = [
    ("indexed_operations", include_str!("../sql/views/indexed_operations.sql")),
    ("writes", include_str!("../sql/views/writes.sql")),
    ("object_versions", include_str!("../sql/views/object_versions.sql")),
];

/// Registers every view in `ctx` (after the `operations` table).
pub(crate) async fn register(ctx: &SessionContext) -> Result<(), QueryError> {
    for (name, sql) in VIEWS {
        let view = ctx.sql(sql).await?.into_view();
        ctx.register_table(name, view)?;
    }
    Ok(())
}
