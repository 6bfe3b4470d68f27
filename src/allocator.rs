//! The process's memory allocator, and how quickly it gives freed memory back.

/// Ingest builds and drops many large Arrow buffers; mimalloc keeps freed pages for reuse where the
/// system allocator hands them back to the kernel and faults them in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its position in `mi_option_t`, the same in mimalloc v2 and v3),
/// and its default: freed pages are returned to the kernel this many milliseconds after they are
/// freed, if the allocator gets round to it.
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 10;

/// Makes freed pages go back to the kernel at once.
///
/// A query command runs statement after statement, each building and dropping its own hash tables
/// and sorted runs; with the delayed purge, memory one statement freed can still be resident when
/// the next one peaks. The measured effect is small against the run-to-run spread (docs/PERFORMANCE.md,
/// `analyze causality` at 10M operations), but it costs nothing measurable either. Ingest keeps the
/// default, where reuse saves page faults.
/// A `MIMALLOC_PURGE_DELAY` set in the environment still wins: the option is changed only while it
/// has its default value (which also guards against a mimalloc whose options are numbered
/// differently).
pub fn return_freed_memory_at_once() {
    // SAFETY: reading and setting an allocator option takes no pointers and is thread-safe.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION) == PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, 0);
        }
    }
}
