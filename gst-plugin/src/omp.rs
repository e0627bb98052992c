// SPDX-License-Identifier: MPL-2.0
//! The calling thread's OpenMP team (libgomp, which libtorch has loaded) for the element's own
//! parallel loops: the direct CPU form's bands and the YUV conversions.
//!
//! libtorch's operations leave the team's workers spinning for a while after each parallel
//! region (libgomp's default wait policy). A thread of the element's own, started then, shared
//! a core with a spinning worker: x4 `dense-pruned` in the direct form took 8.4-11.5 ms a
//! 320x180 frame right after a parallel libtorch operation on the same thread against 5.1-7.5
//! ms without (`OMP_WAIT_POLICY=passive` removed the difference), and through the element
//! (whose inference thread converts each frame with libtorch) 10.6-11.4 ms against a 5.9-6.9 ms
//! forward. On the team the spinning worker takes its share at once, and no thread is started
//! per call. The entry points are looked up at run time (`dlsym`); where they are missing, or
//! with `LIGHTSRSCALE_DIRECT_OMP=0`, [`parallel`] says so and the caller runs threads of its
//! own.

use std::{
    ffi::c_void,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

/// Whether [`parallel`] may use the team (where there is one): off, the callers run threads of
/// their own. For tests and benchmarks, which run both ways side by side ([`set_team`]).
static TEAM: AtomicBool = AtomicBool::new(true);

/// Turns the use of the OpenMP team on or off for the process (tests and benchmarks).
pub fn set_team(on: bool) {
    TEAM.store(on, Ordering::Relaxed);
}

/// `GOMP_parallel(fn, data, num_threads, flags)`.
type Parallel = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type Barrier = unsafe extern "C" fn();
type Query = unsafe extern "C" fn() -> i32;

struct Gomp {
    parallel: Parallel,
    barrier: Barrier,
    thread_num: Query,
    num_threads: Query,
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(|| {
        if std::env::var_os("LIGHTSRSCALE_DIRECT_OMP").is_some_and(|v| v == "0") {
            return None;
        }
        // libtorch's libgomp, already loaded, by its soname: a host that opens the plugin with
        // local binding keeps its libraries' symbols out of the global scope RTLD_DEFAULT
        // searches (the global scope is the fallback)
        // SAFETY: RTLD_NOLOAD only returns a handle to an object already loaded.
        let gomp =
            unsafe { libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        let scope = if gomp.is_null() {
            libc::RTLD_DEFAULT
        } else {
            gomp
        };
        let find = |name: &std::ffi::CStr| {
            // SAFETY: a symbol lookup in a loaded object; the name is NUL-terminated.
            let at = unsafe { libc::dlsym(scope, name.as_ptr()) };
            (!at.is_null()).then_some(at)
        };
        // SAFETY: libgomp's C ABI for these entry points (GCC's OpenMP runtime).
        unsafe {
            Some(Gomp {
                parallel: std::mem::transmute::<*mut c_void, Parallel>(find(c"GOMP_parallel")?),
                barrier: std::mem::transmute::<*mut c_void, Barrier>(find(c"GOMP_barrier")?),
                thread_num: std::mem::transmute::<*mut c_void, Query>(find(c"omp_get_thread_num")?),
                num_threads: std::mem::transmute::<*mut c_void, Query>(find(
                    c"omp_get_num_threads",
                )?),
            })
        }
    })
    .as_ref()
}

/// Whether [`parallel`] runs on an OpenMP team here.
pub fn available() -> bool {
    gomp().is_some()
}

/// Runs `work(t, n)` on every member `t` of a team of `n` threads, at most `threads` (libgomp
/// may give fewer), and returns when all are done; `false`, nothing run, where there is no
/// team to use. A panic in `work` aborts the process (it cannot unwind through libgomp).
pub(crate) fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) -> bool {
    let Some(gomp) = gomp().filter(|_| TEAM.load(Ordering::Relaxed)) else {
        return false;
    };
    struct Call<'a> {
        gomp: &'static Gomp,
        work: &'a (dyn Fn(usize, usize) + Sync),
        threads: usize,
    }
    unsafe extern "C" fn member(data: *mut c_void) {
        // SAFETY: `data` is the `Call` below, alive until `GOMP_parallel` returns.
        let call = unsafe { &*(data as *const Call) };
        // SAFETY: inside the team's parallel region.
        let (t, n) = unsafe { ((call.gomp.thread_num)(), (call.gomp.num_threads)()) };
        let n = usize::try_from(n).unwrap_or(1).clamp(1, call.threads);
        let t = usize::try_from(t).unwrap_or(0);
        if t < n {
            (call.work)(t, n);
        }
    }
    let call = Call {
        gomp,
        work,
        threads: threads.max(1),
    };
    let count = u32::try_from(call.threads).unwrap_or(u32::MAX);
    // SAFETY: libgomp runs `member` on each member of the team and returns when all are done.
    unsafe { (gomp.parallel)(member, &call as *const Call as *mut c_void, count, 0) };
    true
}

/// libgomp's barrier: every member of the team waits here for the others.
///
/// # Safety
/// Only inside [`parallel`]'s `work`, and reached by every member of the team the same number
/// of times.
pub(crate) unsafe fn barrier() {
    if let Some(gomp) = gomp() {
        // SAFETY: forwarded.
        unsafe { (gomp.barrier)() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_member_runs_once_and_the_barrier_holds_them_together() {
        // libtorch (and with it libgomp) is linked into the test binary
        let _ = tch::get_num_threads();
        for threads in [1, 2, 3] {
            let ran = AtomicUsize::new(0);
            let before = AtomicUsize::new(0);
            let seen = AtomicUsize::new(usize::MAX);
            let team = AtomicUsize::new(0);
            let used = parallel(threads, &|t, n| {
                assert!(t < n && n <= threads);
                team.store(n, Ordering::SeqCst);
                before.fetch_add(1, Ordering::SeqCst);
                // SAFETY: every member reaches it once
                unsafe { barrier() };
                // after the barrier every member has counted itself in
                seen.fetch_min(before.load(Ordering::SeqCst), Ordering::SeqCst);
                ran.fetch_add(1, Ordering::SeqCst);
            });
            // the torch wheel's libtorch runs on libgomp: the team is there unless turned off
            let off = std::env::var_os("LIGHTSRSCALE_DIRECT_OMP").is_some_and(|v| v == "0");
            assert_eq!(
                used, !off,
                "libgomp's entry points not found in this process"
            );
            if off {
                continue;
            }
            let n = team.load(Ordering::SeqCst);
            assert_eq!(n, threads, "a team of the size asked for");
            assert_eq!(ran.load(Ordering::SeqCst), n, "threads {threads}");
            assert_eq!(seen.load(Ordering::SeqCst), n, "threads {threads}");
        }
    }
}
