//! The `salvor` binary: parse arguments, run, map the outcome to an exit code.

fn main() {
    limit_malloc_arenas();
    std::process::exit(salvor::cli::main());
}

/// glibc gives each thread that allocates its own malloc arena, up to eight
/// per core, and memory freed into one arena is not reused by another: a
/// long stream backup, whose pipeline hands buffers from thread to thread,
/// grew its anonymous memory by about 10 MiB per GB that way (63 MiB after
/// 2 GB against 45 MiB with two arenas, bench/README.md), which is what a
/// container's OOM killer counts. Two arenas cost no measurable speed here.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
