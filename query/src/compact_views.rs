//! Text read as views is copied into compact buffers before a sort holds it.
//!
//! `kubestep sql` reads the text columns as `Utf8View` ([`crate::TextColumns::AsViews`]): a value
//! decoded from a Parquet dictionary page is then a 16-byte view into that page instead of a copy,
//! which makes scans, filters and groupings over 10M operations 15-25% faster. A batch of views
//! keeps the whole page alive, though, and every batch a sort holds is counted with the pages it
//! points into: a sort of every row (a window over a whole recording, `ORDER BY` without `LIMIT`)
//! then reaches its memory limit far earlier, spills more and peaks 60% higher (1.0 GB as text,
//! 1.65 GB as views, at 10M operations).
//!
//! [`ViewsCompactedBeforeSorts`] gives every full sort whose input has view columns DataFusion's
//! batch coalescer as its input: arrow's `BatchCoalescer` copies the strings a batch of views
//! references into buffers of its own when they are less than half of the buffers it holds, so
//! the sort keeps only what it sorts. Sorts with a `LIMIT` (top K) hold a handful of rows and are
//! left alone, as are inputs without views.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
#[expect(deprecated, reason = "the stock node that runs arrow's BatchCoalescer over a whole stream")]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::sorts::sort::SortExec;

/// The physical optimizer rule: see the module documentation. It runs last, once the sorts are
/// in place.
#[derive(Debug, Default)]
pub struct ViewsCompactedBeforeSorts;

impl PhysicalOptimizerRule for ViewsCompactedBeforeSorts {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let batch_size = config.execution.batch_size.get();
        plan.transform_up(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let input = sort.input();
            if sort.fetch().is_some() || !has_views(input) || is_compacting(input) {
                return Ok(Transformed::no(node));
            }
            #[expect(deprecated, reason = "see the import")]
            let compacted: Arc<dyn ExecutionPlan> = Arc::new(CoalesceBatchesExec::new(Arc::clone(input), batch_size));
            Ok(Transformed::yes(replace_children_if_necessary(node, vec![compacted])?))
        })
        .data()
    }

    fn name(&self) -> &str {
        "ViewsCompactedBeforeSorts"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `plan` produces a `Utf8View` or `BinaryView` column.
fn has_views(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.schema().fields().iter().any(|field| matches!(field.data_type(), DataType::Utf8View | DataType::BinaryView))
}

/// Whether `plan` already is the coalescer (the rule is applied once per plan, but a plan may be
/// optimized again).
fn is_compacting(plan: &Arc<dyn ExecutionPlan>) -> bool {
    #[expect(deprecated, reason = "see the import")]
    plan.downcast_ref::<CoalesceBatchesExec>().is_some()
}
