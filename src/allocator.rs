//! The process's allocator: mimalloc instead of glibc's malloc.
//!
//! The proxy allocates and frees a few dozen small objects per request
//! (Pingora's header maps, tasks and buffers, our context and log line);
//! with mimalloc it runs 17 % fewer instructions per request (callgrind,
//! loadtest/README.md). mimalloc's default on Linux commits each arena
//! whole and keeps freed pages resident, which doubled the memory held per
//! open stream (131 KiB against glibc's 64); committing on demand brings it
//! back to glibc's figure.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(target_os = "linux")]
mod options {
    use std::ffi::{c_char, c_int, c_long};

    /// `mi_option_arena_eager_commit` in mimalloc.h's `mi_option_e` (v2 and
    /// v3; the Rust bindings name only the options before it).
    const ARENA_EAGER_COMMIT: c_int = 4;

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
        fn getenv(name: *const c_char) -> *const c_char;
    }

    /// Whether mimalloc commits arenas whole (its Linux default).
    #[cfg(test)]
    pub fn arena_eager_commit() -> bool {
        // SAFETY: reads mimalloc's option table.
        unsafe { mi_option_get(ARENA_EAGER_COMMIT) != 0 }
    }

    /// Runs before `main`: the first Rust allocation reserves mimalloc's
    /// first arena, so an option set in `main` would come too late for it.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static SET_OPTIONS: extern "C" fn() = set_options;

    extern "C" fn set_options() {
        // SAFETY: getenv reads the environment the loader set up (nothing
        // writes it yet); mi_option_set stores a value in mimalloc's option
        // table. Neither allocates.
        unsafe {
            // An operator's MIMALLOC_ARENA_EAGER_COMMIT still wins.
            if getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
                mi_option_set(ARENA_EAGER_COMMIT, 0);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn arenas_are_committed_on_demand() {
        // Fails too when MIMALLOC_ARENA_EAGER_COMMIT is set: run without it.
        assert!(
            !super::options::arena_eager_commit(),
            "the constructor did not run before main"
        );
    }
}
