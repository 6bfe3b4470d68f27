//! `count(DISTINCT x)` beside `count(*)` in one grouped query, planned as two grouped aggregations.
//!
//! DataFusion plans `count(DISTINCT actor_id)` by grouping on `actor_id` underneath (its
//! `single_distinct_aggregation_to_group_by` rule) only when every other aggregate of the query is
//! `sum`, `min` or `max`, whose partial results it can aggregate again. A `count` beside the distinct
//! one — what `kubestep sessions` and most questions about a recording ask (“objects written by
//! more than one actor, and how many writes”) — makes it keep a hash set of values per group
//! instead, row by row: at 10M operations several times slower than grouping, and memory that
//! grows with the groups.
//!
//! [`CountsBesideDistinct`] runs just before that rule and writes each such `count(args)` as the
//! `sum` of 1 for every row whose arguments are all non-null, then restores the query's column
//! names (and a count's 0 for a group where the sum is null, which a group, never empty, cannot
//! have). The distinct rule then takes the query. Only grouped aggregations are rewritten: without
//! `GROUP BY`, an empty input has a `count` of 0 but a `sum` of null.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection, lit, when};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{Optimizer, OptimizerConfig, OptimizerRule};

/// The name of DataFusion's rule that this one prepares the way for.
const SINGLE_DISTINCT_RULE: &str = "single_distinct_aggregation_to_group_by";

/// The optimizer rule: see the module documentation.
#[derive(Debug, Default)]
pub struct CountsBesideDistinct;

/// DataFusion's default optimizer rules with [`CountsBesideDistinct`] just before the rule it
/// feeds (at the start if a DataFusion release renamed that rule: it is correct anywhere).
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    let at = rules.iter().position(|rule| rule.name() == SINGLE_DISTINCT_RULE).unwrap_or(0);
    rules.insert(at, Arc::new(CountsBesideDistinct));
    rules
}

impl OptimizerRule for CountsBesideDistinct {
    fn name(&self) -> &str {
        "counts_beside_distinct"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Aggregate(aggregate) if takes(&aggregate) => Ok(Transformed::yes(rewritten(aggregate)?)),
            other => Ok(Transformed::no(other)),
        }
    }
}

/// The parts of an aggregate function call this rule looks at, through any alias.
fn call(expr: &Expr) -> Option<(&str, &AggregateFunctionParams)> {
    match expr {
        Expr::AggregateFunction(AggregateFunction { func, params }) => Some((func.name(), params)),
        Expr::Alias(alias) => call(&alias.expr),
        _ => None,
    }
}

/// Whether `aggregate` is grouped, has one distinct argument list, otherwise only `count`, `sum`,
/// `min` and `max`, and something the distinct rule would refuse: a plain `count`, or an alias
/// (type coercion aliases an aggregate whose argument it cast, to keep its name; the projection
/// this rule adds keeps the names instead).
fn takes(aggregate: &Aggregate) -> bool {
    if aggregate.group_expr.is_empty() || matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_))) {
        return false;
    }
    let mut distinct_args: Option<&Vec<Expr>> = None;
    let mut refused = false;
    for expr in &aggregate.aggr_expr {
        refused |= matches!(expr, Expr::Alias(_));
        let Some((name, params)) = call(expr) else { return false };
        if params.filter.is_some() || !params.order_by.is_empty() {
            return false;
        }
        if params.distinct {
            if params.args.len() != 1 || distinct_args.is_some_and(|args| *args != params.args) {
                return false;
            }
            distinct_args = Some(&params.args);
        } else if name.eq_ignore_ascii_case("count") {
            refused = true;
        } else if !["sum", "min", "max"].iter().any(|f| name.eq_ignore_ascii_case(f)) {
            return false;
        }
    }
    distinct_args.is_some() && refused
}

/// `aggregate` with its plain counts as sums and no aliases, under a projection that gives back
/// its columns.
fn rewritten(aggregate: Aggregate) -> Result<LogicalPlan> {
    let Aggregate { input, group_expr, aggr_expr, schema: original, .. } = aggregate;
    let mut replaced = Vec::with_capacity(aggr_expr.len());
    let aggr_expr = aggr_expr
        .into_iter()
        .map(Expr::unalias)
        .map(|expr| match call(&expr) {
            Some((name, params)) if !params.distinct && name.eq_ignore_ascii_case("count") => {
                replaced.push(true);
                let summed = vec![ones(&params.args)?];
                Ok(Expr::AggregateFunction(AggregateFunction::new_udf(sum_udaf(), summed, false, None, vec![], None)))
            }
            _ => {
                replaced.push(false);
                Ok(expr)
            }
        })
        .collect::<Result<Vec<Expr>>>()?;
    let groups = group_expr.len();
    let summed = Aggregate::try_new(input, group_expr, aggr_expr)?;
    let columns = summed
        .schema
        .iter()
        .zip(original.iter())
        .enumerate()
        .map(|(i, ((qualifier, field), (original_qualifier, original_field)))| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let value = if i >= groups && replaced[i - groups] { coalesce(vec![column, lit(0i64)]) } else { column };
            value.alias_qualified(original_qualifier.cloned(), original_field.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(summed)))?))
}

/// 1 for a row `count(args)` counts (every argument non-null), 0 otherwise.
fn ones(args: &[Expr]) -> Result<Expr> {
    let conditions: Vec<Expr> = args
        .iter()
        .filter(|arg| !matches!(arg, Expr::Literal(value, _) if !value.is_null()))
        .map(|arg| arg.clone().is_not_null())
        .collect();
    match conditions.into_iter().reduce(Expr::and) {
        None => Ok(lit(1i64)),
        Some(counted) => when(counted, lit(1i64)).otherwise(lit(0i64)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::optimizer_rules;

    fn context(with_rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("object", DataType::Utf8, true),
            Field::new("actor", DataType::Utf8, true),
            Field::new("duration", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("a"),
                    Some("a"),
                    Some("b"),
                    Some("b"),
                    None,
                    Some("c"),
                ])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), Some("x"), Some("x"), None, Some("z"), None])),
                Arc::new(Int32Array::from(vec![Some(5), None, Some(7), Some(1), Some(2), Some(3), None])),
            ],
        )
        .unwrap();
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rules(optimizer_rules());
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap().display_indent().to_string();
        let batches = frame.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), plan)
    }

    async fn columns(ctx: &SessionContext, sql: &str) -> Vec<(String, DataType)> {
        let frame = ctx.sql(sql).await.unwrap();
        frame.schema().as_arrow().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect()
    }

    /// Same answers (values, column names, types) with and without the rule; the rule's plans
    /// group by the distinct column instead of keeping a set per group.
    #[tokio::test]
    async fn counts_beside_a_distinct_count_give_the_same_answers_grouped_by_the_distinct_column() {
        let (with, without) = (context(true), context(false));
        for sql in [
            "SELECT object, count(DISTINCT actor) AS actors, count(*) AS n FROM t GROUP BY object ORDER BY object",
            "SELECT object, count(*), count(duration), count(DISTINCT actor), max(duration), sum(duration) \
             FROM t GROUP BY object ORDER BY object",
            "SELECT object, count(DISTINCT actor) AS actors, count(actor, duration) AS both FROM t \
             GROUP BY object HAVING count(DISTINCT actor) > 0 ORDER BY object",
            "SELECT upper(object) AS o, count(DISTINCT actor), count(*) FROM t GROUP BY upper(object) ORDER BY 1",
            // The literal 2 is cast to the column's type, and the aggregate aliased to keep its name.
            "SELECT object, count(DISTINCT actor), sum(CASE WHEN duration >= 2 THEN 1 ELSE 0 END) FROM t \
             GROUP BY object ORDER BY object",
        ] {
            let (expected, plain) = answer(&without, sql).await;
            let (got, plan) = answer(&with, sql).await;
            assert_eq!(got, expected, "{sql}");
            assert!(plain.matches("Aggregate:").count() == 1, "{sql}: without the rule\n{plain}");
            assert!(plan.matches("Aggregate:").count() == 2, "{sql}: not split in two\n{plan}");
            assert_eq!(columns(&with, sql).await, columns(&without, sql).await, "{sql}");
        }
    }

    /// Queries the rule must leave alone: ungrouped (an empty input counts 0), two distinct
    /// argument lists, or an aggregate the distinct rule cannot split.
    #[tokio::test]
    async fn other_aggregations_are_left_as_they_are() {
        let (with, without) = (context(true), context(false));
        for sql in [
            "SELECT count(DISTINCT actor), count(*) FROM t WHERE object = 'nothing'",
            "SELECT object, count(DISTINCT actor), count(DISTINCT duration), count(*) FROM t GROUP BY object ORDER BY 1",
            "SELECT object, count(DISTINCT actor), avg(duration), count(*) FROM t GROUP BY object ORDER BY 1",
            "SELECT object, count(*) FROM t GROUP BY object ORDER BY 1",
        ] {
            let (expected, plain) = answer(&without, sql).await;
            let (got, plan) = answer(&with, sql).await;
            assert_eq!(got, expected, "{sql}");
            assert_eq!(plan, plain, "{sql}");
        }
    }
}
