//! "The N slowest calls per verb" without sorting every call.
//!
//! A question like
//!
//! ```sql
//! SELECT verb, name, duration_ms FROM (
//!     SELECT verb, name, duration_ms,
//!            row_number() OVER (PARTITION BY verb ORDER BY duration_ms DESC) AS rank
//!     FROM operations) WHERE rank <= 10
//! ```
//!
//! is planned by DataFusion as a sort of every row by `(verb, duration_ms)`, a window numbering
//! them all, and a filter keeping ten per verb: at 10M operations the sort is nearly all of the
//! time and memory. DataFusion 55 ships the operator that avoids it, `PartitionedTopKExec` (one
//! bounded heap per group, emitting the kept rows in the order the window needs), and a rule that
//! puts it in place, `WindowTopN`, switched off by default. We do not switch that rule on: it reads
//! the filtered column's position as if no projection stood between the filter and the window, so
//! it never fires on a query that selects some columns (the usual case) and could misread one that
//! reorders them.
//!
//! [`TopRowsPerGroup`] matches the same shape — a filter `rank <= N` (or `<`, or flipped) over
//! projections and repartitions over a `row_number()` or `rank()` window — following the filtered
//! column through each projection, and gives the window a `PartitionedTopKExec` as its input. It
//! keeps the filter: the operator only decides which rows reach the window, and every row the
//! filter would keep is among them (a row in a group's first N keeps that place in any subset of
//! the rows), so the answer is the one the full sort gives.
//!
//! The operator keeps one heap per group in memory and cannot spill, so the rule fires only when
//! every `PARTITION BY` key is one of the [`GROUPING_VOCABULARY`] columns, which name a category
//! (a verb, a kind, an actor) rather than one object or one event: their distinct values number in
//! the tens to thousands whatever the size of the recording. Ranking per object or per event keeps
//! the sort, which spills.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::window::{StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use kubestep_schemas::schema::columns;

/// The columns a per-group ranking may be partitioned by for [`TopRowsPerGroup`] to fire: each
/// names a category whose distinct values stay few (tens to thousands) however many operations a
/// recording holds, so one heap per value fits in memory. Object and event columns (`name`, `uid`,
/// `audit_id`, times) are deliberately absent.
pub const GROUPING_VOCABULARY: &[&str] = &[
    columns::SESSION_ID,
    columns::DATE,
    columns::STAGE,
    columns::LEVEL,
    columns::VERB,
    columns::OPERATION_TYPE,
    columns::API_GROUP,
    columns::API_VERSION,
    columns::RESOURCE,
    columns::SUBRESOURCE,
    columns::KIND,
    columns::NAMESPACE,
    columns::ACTOR_ID,
    columns::USERNAME,
    columns::USER_AGENT,
    columns::FIELD_MANAGER,
    columns::STATUS_CODE,
    columns::DRY_RUN,
];

/// The name of DataFusion's (switched off) rule for the same shape; ours runs right after it, before
/// the rules that place repartitions and sorts, so they fit the plan around the new operator.
pub const AFTER_RULE: &str = "WindowTopN";

/// The physical optimizer rule: see the module documentation.
#[derive(Debug, Default)]
pub struct TopRowsPerGroup;

impl PhysicalOptimizerRule for TopRowsPerGroup {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match with_top_rows_per_group(&node) {
                Some(rewritten) => Transformed::yes(rewritten),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "TopRowsPerGroup"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `filter` with a `PartitionedTopKExec` under the window it ranks by, or `None` when it is not a
/// filter on a ranking this rule handles.
fn with_top_rows_per_group(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let filter = node.downcast_ref::<FilterExec>()?;
    if filter.projection().is_some() {
        return None;
    }
    let (mut column, keep) = rank_bound(filter.predicate())?;

    // Walk down to the window, following the filtered column through every projection.
    let mut between = Vec::new();
    let mut below = Arc::clone(filter.input());
    let window = loop {
        if below.downcast_ref::<BoundedWindowAggExec>().is_some() {
            break below;
        }
        if let Some(projection) = below.downcast_ref::<ProjectionExec>() {
            column = projection.expr().get(column)?.expr.downcast_ref::<Column>()?.index();
        } else if below.downcast_ref::<RepartitionExec>().is_none() {
            return None;
        }
        let next = Arc::clone(below.children().first()?);
        between.push(below);
        below = next;
    };

    let window_exec = window.downcast_ref::<BoundedWindowAggExec>()?;
    let window_input = window_exec.input();
    let ranking = window_exec.window_expr().get(column.checked_sub(window_input.schema().fields().len())?)?;
    let kind = ranking_kind(ranking)?;
    let partition_by = ranking.partition_by();
    if partition_by.is_empty() || !partition_by.iter().all(|key| is_grouping_column(key, window_input)) {
        return None;
    }
    if kind == WindowFnKind::Rank && ranking.order_by().is_empty() {
        return None;
    }

    let ordering = LexOrdering::new(
        partition_by
            .iter()
            .map(|key| PhysicalSortExpr::new_default(Arc::clone(key)))
            .chain(ranking.order_by().iter().cloned()),
    )?;
    let top = PartitionedTopKExec::try_new(Arc::clone(window_input), ordering, partition_by.len(), keep, kind).ok()?;
    let mut rebuilt = replace_children_if_necessary(window, vec![Arc::new(top)]).ok()?;
    for node in between.into_iter().rev() {
        rebuilt = replace_children_if_necessary(node, vec![rebuilt]).ok()?;
    }
    replace_children_if_necessary(Arc::clone(node), vec![rebuilt]).ok()
}

/// `(column, n)` for a predicate that keeps the rows whose `column` is at most `n`: `column <= n`,
/// `column < n + 1`, `n >= column`, `n + 1 > column`, with `n` a positive integer.
fn rank_bound(predicate: &Arc<dyn PhysicalExpr>) -> Option<(usize, usize)> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    let (left, right) = (binary.left(), binary.right());
    let (column, bound, inclusive) = match (left.downcast_ref::<Column>(), right.downcast_ref::<Literal>()) {
        (Some(column), Some(bound)) => match binary.op() {
            Operator::LtEq => (column, bound, true),
            Operator::Lt => (column, bound, false),
            _ => return None,
        },
        _ => match (left.downcast_ref::<Literal>(), right.downcast_ref::<Column>()) {
            (Some(bound), Some(column)) => match binary.op() {
                Operator::GtEq => (column, bound, true),
                Operator::Gt => (column, bound, false),
                _ => return None,
            },
            _ => return None,
        },
    };
    let bound = positive_integer(bound.value())?;
    let keep = if inclusive { bound } else { bound - 1 };
    (keep > 0).then_some((column.index(), keep))
}

/// The value of an integer literal when it is a positive number of rows.
fn positive_integer(value: &ScalarValue) -> Option<usize> {
    if !value.data_type().is_integer() {
        return None;
    }
    match value.cast_to(&datafusion::arrow::datatypes::DataType::UInt64).ok()? {
        ScalarValue::UInt64(Some(n)) if n > 0 => usize::try_from(n).ok(),
        _ => None,
    }
}

/// Which ranking `expr` is, when it is one whose first N rows per group a heap can keep:
/// `row_number()` and `rank()` (not `dense_rank()`, whose N-th value may lie past N rows).
fn ranking_kind(expr: &Arc<dyn WindowExpr>) -> Option<WindowFnKind> {
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let function = standard.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>()?;
    match function.fun().name() {
        "row_number" => Some(WindowFnKind::RowNumber),
        "rank" => Some(WindowFnKind::Rank),
        _ => None,
    }
}

/// Whether `key` is a column of `input` named in [`GROUPING_VOCABULARY`].
fn is_grouping_column(key: &Arc<dyn PhysicalExpr>, input: &Arc<dyn ExecutionPlan>) -> bool {
    key.downcast_ref::<Column>().is_some_and(|column| {
        let schema = input.schema();
        schema.fields().get(column.index()).is_some_and(|field| GROUPING_VOCABULARY.contains(&field.name().as_str()))
    })
}
