// SPDX-License-Identifier: MPL-2.0
//! The calling thread's OpenMP team (libgomp, which libtorch has loaded) for the element's own
//! parallel loops: the direct CPU form's bands and the YUV conversions.
//!
//! libtorch's operations leave the team's workers spinning for a while after each parallel
//! region (libgomp's default wait policy). A thread of the element's own, started then, shared
//! a core with a spinning worker: x4 `dense-pruned` in the direct form took 8.4-11.5 ms a
//! 320x180 frame right after a parallel libtorch operation on the same thread against 5.1-7.5
//! ms without (`OMP_WAIT_POLICY=passive` removed the difference), and through the element
//! (whose inference thread converts each frame with libtorch) 8.3 ms against a 4.4-4.8 ms
//! forward. On the team the spinning worker takes its share at once, and no thread is started
//! per call. The entry points are looked up at run time (`dlsym`, all three in one object);
//! where they are missing, or with `LIGHTSRSCALE_DIRECT_OMP=0`, [`parallel`] says so and the
//! caller runs threads of its own.

use std::{
    any::Any,
    cell::Cell,
    ffi::c_void,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::{Mutex, OnceLock},
};

thread_local! {
    /// Whether [`parallel`] may use the team on this thread ([`set_team`]).
    static TEAM: Cell<bool> = const { Cell::new(true) };
}

/// Turns the use of the OpenMP team on or off for calls from this thread: off, the callers run
/// threads of their own (tests run both ways side by side).
pub fn set_team(on: bool) {
    TEAM.with(|team| team.set(on));
}

/// `GOMP_parallel(fn, data, num_threads, flags)`.
type Parallel = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type Query = unsafe extern "C" fn() -> i32;

struct Gomp {
    parallel: Parallel,
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
        let symbols = [
            find(c"GOMP_parallel")?,
            find(c"omp_get_thread_num")?,
            find(c"omp_get_num_threads")?,
        ];
        // all three from one object: a library exporting only stub `omp_get_*` functions would
        // put every member on band 0 of a real team
        let object = |at: *mut c_void| {
            // SAFETY: dladdr only reads the loader's tables; `info` is written on success.
            let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
            (unsafe { libc::dladdr(at, &mut info) } != 0).then_some(info.dli_fbase)
        };
        let first = object(symbols[0])?;
        if symbols.iter().any(|&at| object(at) != Some(first)) {
            return None;
        }
        // SAFETY: libgomp's C ABI for these entry points (GCC's OpenMP runtime).
        unsafe {
            Some(Gomp {
                parallel: std::mem::transmute::<*mut c_void, Parallel>(symbols[0]),
                thread_num: std::mem::transmute::<*mut c_void, Query>(symbols[1]),
                num_threads: std::mem::transmute::<*mut c_void, Query>(symbols[2]),
            })
        }
    })
    .as_ref()
}

/// Whether [`parallel`] runs on an OpenMP team in this process.
pub fn available() -> bool {
    gomp().is_some()
}

/// Runs `work(t, n)` on every member `t` of a team of `n` threads, at most `threads` (libgomp
/// may give fewer), and returns when all are done; `false`, nothing run, where there is no
/// team to use. A panic in `work` comes back here once every member is done.
pub(crate) fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) -> bool {
    let Some(gomp) = gomp().filter(|_| TEAM.with(Cell::get)) else {
        return false;
    };
    struct Call<'a> {
        gomp: &'static Gomp,
        work: &'a (dyn Fn(usize, usize) + Sync),
        threads: usize,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }
    unsafe extern "C" fn member(data: *mut c_void) {
        // SAFETY: `data` is the `Call` below, alive until `GOMP_parallel` returns.
        let call = unsafe { &*(data as *const Call) };
        // SAFETY: inside the team's parallel region.
        let (t, n) = unsafe { ((call.gomp.thread_num)(), (call.gomp.num_threads)()) };
        let (t, n) = (
            usize::try_from(t).unwrap_or(0),
            usize::try_from(n).unwrap_or(1),
        );
        if n == 0 || t >= n || n > call.threads {
            // libgomp never forms a bigger team than asked; a member past it would have no
            // share of the work (the direct form's bands: no rings of its own)
            std::process::abort();
        }
        // a panic must not unwind into libgomp: caught here, raised again after the region
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (call.work)(t, n))) {
            let mut slot = call.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(panic);
        }
    }
    let call = Call {
        gomp,
        work,
        threads: threads.max(1),
        panic: Mutex::new(None),
    };
    let count = u32::try_from(call.threads).unwrap_or(u32::MAX);
    // SAFETY: libgomp runs `member` on each member of the team and returns when all are done.
    unsafe { (gomp.parallel)(member, &call as *const Call as *mut c_void, count, 0) };
    if let Some(panic) = call.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(panic);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_member_runs_once_on_a_team_no_bigger_than_asked() {
        // libtorch (and with it libgomp) is linked into the test binary
        let _ = tch::get_num_threads();
        let off = std::env::var_os("LIGHTSRSCALE_DIRECT_OMP").is_some_and(|v| v == "0");
        for threads in [1, 2, 3] {
            let ran = AtomicUsize::new(0);
            let members = std::sync::Mutex::new(Vec::new());
            let team = AtomicUsize::new(0);
            let bad = AtomicUsize::new(0);
            let used = parallel(threads, &|t, n| {
                if t >= n || n > threads {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                team.store(n, Ordering::SeqCst);
                members.lock().unwrap().push(t);
                ran.fetch_add(1, Ordering::SeqCst);
            });
            // the torch wheel's libtorch runs on libgomp: the team is there unless turned off
            assert_eq!(
                used, !off,
                "libgomp's entry points not found in this process"
            );
            if off {
                continue;
            }
            let n = team.load(Ordering::SeqCst);
            assert!((1..=threads).contains(&n), "team of {n} for {threads}");
            assert_eq!(bad.load(Ordering::SeqCst), 0);
            assert_eq!(ran.load(Ordering::SeqCst), n, "threads {threads}");
            // each member once: bands 0..n, every one run
            let mut members = members.into_inner().unwrap();
            members.sort();
            assert_eq!(members, (0..n).collect::<Vec<_>>(), "threads {threads}");
        }
    }

    #[test]
    fn a_panic_in_a_member_comes_back_to_the_caller() {
        let _ = tch::get_num_threads();
        let caught = catch_unwind(|| {
            parallel(2, &|t, _| {
                if t == 0 {
                    panic!("band 0 failed");
                }
            })
        });
        if !available() {
            return; // nothing ran
        }
        let message = caught.expect_err("the panic is raised again");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"band 0 failed"));
        // and the team is still there for the next call
        assert!(parallel(2, &|_, _| ()));
    }

    #[test]
    fn a_thread_can_turn_the_team_off_for_itself() {
        let _ = tch::get_num_threads();
        set_team(false);
        assert!(!parallel(2, &|_, _| ()));
        set_team(true);
        assert_eq!(parallel(2, &|_, _| ()), available());
    }
}
