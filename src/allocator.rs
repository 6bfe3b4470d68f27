//! The process's memory allocator: chosen per command, and how quickly it gives freed memory back.
//!
//! The two halves of the binary want different allocators (docs/PERFORMANCE.md, "The allocator per
//! command"). The query commands build and drop large hash tables and sorted runs; mimalloc, which
//! asks the kernel for transparent huge pages, runs them fastest. Ingest (`import`, `serve`) grows
//! and drops many Arrow and Parquet buffers from several threads; there mimalloc spends a third of a
//! core zeroing huge pages it has just purged, and the C library's allocator is faster and keeps the
//! webhook's resident memory lower.
//!
//! A global allocator cannot change once memory has been handed out, since every block must go back
//! to the allocator it came from. So the choice is made before `main`, from the command line the C
//! library passes to the functions of `.init_array`, and only if nothing has been allocated yet;
//! after that it never changes, and freeing follows it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// No block handed out yet and no choice made: the first allocation settles on mimalloc.
const UNDECIDED: u8 = 0;
/// Every block comes from mimalloc.
const MIMALLOC: u8 = 1;
/// Every block comes from the C library's allocator.
const SYSTEM: u8 = 2;

/// Which allocator this process uses; leaves [`UNDECIDED`] at most once.
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The subcommands that run on the C library's allocator.
const SYSTEM_ALLOCATOR_COMMANDS: [&[u8]; 2] = [b"import", b"serve"];

/// The allocator of every Rust allocation in the process: mimalloc, or the C library's for the
/// commands in [`SYSTEM_ALLOCATOR_COMMANDS`].
struct PerCommandAllocator;

impl PerCommandAllocator {
    /// Whether blocks come from the C library's allocator; settles the choice on mimalloc if it was
    /// still open (this is the first allocation).
    #[inline]
    fn system(&self) -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            SYSTEM => true,
            MIMALLOC => false,
            _ => {
                // Only the thread running the `.init_array` functions exists while the choice is
                // open, and it reaches here only by allocating before `choose_allocator` ran.
                CHOICE.store(MIMALLOC, Ordering::Relaxed);
                false
            }
        }
    }
}

// SAFETY: every method forwards to one of two allocators that uphold `GlobalAlloc`'s contract, and
// which one is fixed before the first block is handed out (`CHOICE` changes from `UNDECIDED` only,
// and to `SYSTEM` only while no block exists), so a block always returns to the allocator it came from.
unsafe impl GlobalAlloc for PerCommandAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees on `layout` are passed on unchanged.
        unsafe { if self.system() { System.alloc(layout) } else { MiMalloc.alloc(layout) } }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { if self.system() { System.alloc_zeroed(layout) } else { MiMalloc.alloc_zeroed(layout) } }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator `system()` names (the choice never changes once a
        // block exists), with this `layout`.
        unsafe { if self.system() { System.dealloc(ptr, layout) } else { MiMalloc.dealloc(ptr, layout) } }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the caller's guarantees on `new_size` are passed on unchanged.
        unsafe {
            if self.system() { System.realloc(ptr, layout, new_size) } else { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static GLOBAL: PerCommandAllocator = PerCommandAllocator;

/// The subcommand of a `kubestep` command line: the first argument after the program name that is
/// neither an option nor the value of the one global option that takes a separate value.
fn subcommand<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == b"--log-format" {
            args.next();
        } else if !arg.starts_with(b"-") {
            return Some(arg);
        }
    }
    None
}

/// Settles the allocator from the command line, before `main` and before anything is allocated.
///
/// The GNU C library calls the functions of `.init_array` with `argc`, `argv` and `envp` (an
/// extension Rust's standard library relies on too); other C libraries do not, so elsewhere the
/// process keeps mimalloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn choose_allocator(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char, _envp: *const *const u8) {
    let count = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return;
    }
    // SAFETY: the C library passes the process's `argc` and its `argv`, an array of `argc` valid
    // NUL-terminated strings that lives as long as the process. Nothing here allocates.
    let args = (0..count).map(|i| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) }.to_bytes());
    if subcommand(args).is_some_and(|command| SYSTEM_ALLOCATOR_COMMANDS.contains(&command)) {
        // Fails, leaving mimalloc, if something allocated before this ran.
        let _ = CHOICE.compare_exchange(UNDECIDED, SYSTEM, Ordering::Relaxed, Ordering::Relaxed);
    } else {
        commit_memory_when_needed();
    }
}

/// mimalloc's `arena_eager_commit` option (its position in `mi_option_t`, the same in mimalloc v2
/// and v3) and its default, "commit whole arenas where the kernel overcommits".
const ARENA_EAGER_COMMIT_OPTION: libmimalloc_sys::mi_option_t = 4;
const ARENA_EAGER_COMMIT_DEFAULT: std::ffi::c_long = 2;

/// Makes mimalloc commit arena memory as it hands it out rather than a whole arena at once.
///
/// With whole arenas committed, a query touched about twice the memory it used (as huge pages,
/// which the kernel zeroes 2 MiB at a time), and on a virtual machine whose host has taken back
/// free memory each first touch is slow: `sessions` at 10M operations took 0.5 to 1.6 s between
/// runs, most of the spread system time. Committing on demand halved the peak resident memory of
/// every query command and made those runs steady (docs/PERFORMANCE.md). It must be set before the
/// first arena is reserved, so it runs from [`choose_allocator`], before anything is allocated;
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still wins (mimalloc reads it without allocating).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn commit_memory_when_needed() {
    // SAFETY: reading and setting an allocator option takes no pointers, allocates nothing, and
    // is allowed before the allocator has initialized.
    unsafe {
        if libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT_OPTION) == ARENA_EAGER_COMMIT_DEFAULT {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT_OPTION, 0);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array.00099")]
static CHOOSE_ALLOCATOR: extern "C" fn(std::ffi::c_int, *const *const std::ffi::c_char, *const *const u8) =
    choose_allocator;

/// Which allocator the process runs on, for the log.
pub fn name() -> &'static str {
    if CHOICE.load(Ordering::Relaxed) == SYSTEM { "system" } else { "mimalloc" }
}

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
/// `analyze causality` at 10M operations), but it costs nothing measurable either.
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

/// Lets the C library's allocator keep what an import frees, for the next block.
///
/// An import allocates and frees the same few large buffers over and over (the Arrow arrays of each
/// block, the column chunks of each file). With glibc's defaults, the larger ones are mapped and
/// unmapped and the top of each arena is trimmed, so the kernel hands out and zeroes fresh pages
/// again and again. Keeping blocks up to 32 MiB in the heap and trimming only past 512 MiB free
/// cut an import's system time by a fifth (docs/PERFORMANCE.md). Not for the service, whose
/// resident memory has a bound. A `GLIBC_TUNABLES` naming malloc settings wins.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if CHOICE.load(Ordering::Relaxed) != SYSTEM
            || std::env::var_os("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("malloc"))
        {
            return;
        }
        // SAFETY: `mallopt` takes no pointers and may be called at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subcommand;

    fn of(line: &str) -> Option<String> {
        let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        subcommand(args).map(|c| String::from_utf8_lossy(c).into_owned())
    }

    #[test]
    fn the_subcommand_is_the_first_word_that_is_not_an_option() {
        assert_eq!(of("kubestep import -d x a.log").as_deref(), Some("import"));
        assert_eq!(of("kubestep --log-format json serve").as_deref(), Some("serve"));
        assert_eq!(of("kubestep --log-format=json sql -d x").as_deref(), Some("sql"));
        assert_eq!(of("kubestep --version"), None);
        assert_eq!(of("kubestep"), None);
    }
}
