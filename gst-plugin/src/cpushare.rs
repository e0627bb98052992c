// SPDX-License-Identifier: MPL-2.0
//! How much of the machine's CPUs other processes take, and how many libtorch threads a
//! frame should therefore use.
//!
//! libtorch runs a CPU rung's layers as OpenMP fork-join regions over its intra-op threads
//! with a static split: each region waits for its slowest thread. When another process keeps
//! one of the cores busy, one of the element's threads shares that core and is descheduled
//! for whole scheduler slices (milliseconds), and every region of the frame waits for it: on
//! a 2-core machine a 19 ms frame then takes several times longer. One thread on the core
//! that is left is slower than two on a quiet machine but steady.
//!
//! So before each frame the element reads what the other processes used of the CPUs it may
//! run on ([`OthersLoad`], from `/proc/stat` and the process's own CPU time: a decoder or an
//! encoder in the same process counts as the element's own) and
//! [`ThreadGovernor`] chooses the thread count: down at once when the other processes
//! take a core's worth that the threads would share, up again only when a longer window shows
//! the cores free. Both take plain values, so tests drive them without a clock or a machine.
use std::{collections::VecDeque, time::Duration};

/// Busy time of the CPUs this process may run on and this process's CPU time, at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// When, in ns on any monotonic axis.
    pub at: u64,
    /// Busy time of the CPUs summed (user, nice, system, irq, softirq, steal), ns.
    pub busy: u64,
    /// This process's CPU time (all its threads), ns.
    pub own: u64,
}

/// Cores' worth of CPU time the other processes used over a short and over a long window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Others {
    /// Over the last [`OthersLoad::SHORT`] or more: reacts within a few frames.
    pub recent: f64,
    /// Over the last [`OthersLoad::LONG`] or more: what the governor climbs back on.
    pub settled: f64,
}

/// A window of [`CpuSample`]s (one per frame) and the other processes' share over it.
#[derive(Debug, Clone, Default)]
pub struct OthersLoad {
    samples: VecDeque<CpuSample>,
}

impl OthersLoad {
    /// At least this span for [`Others::recent`]: `/proc/stat` counts in ticks of 10 ms, so
    /// over 80 ms on 2 CPUs a busy core reads 1.0 ± 0.13.
    pub const SHORT: Duration = Duration::from_millis(80);
    /// At least this span for [`Others::settled`].
    pub const LONG: Duration = Duration::from_millis(600);

    /// Adds a sample; the other processes' cores over both windows once the samples span
    /// them (`None` before, or when time or the counters went backwards).
    pub fn push(&mut self, sample: CpuSample) -> Option<Others> {
        if let Some(last) = self.samples.back()
            && (sample.at <= last.at || sample.busy < last.busy || sample.own < last.own)
        {
            // a reset (another axis, a counter that wrapped): start the window again
            self.samples.clear();
        }
        self.samples.push_back(sample);
        let long = Self::LONG.as_nanos() as u64;
        // keep one sample at least LONG old, and nothing older than that one
        while self.samples.len() > 2 && sample.at - self.samples[1].at >= long {
            self.samples.pop_front();
        }
        let share = |span: Duration| {
            let span = span.as_nanos() as u64;
            let from = self
                .samples
                .iter()
                .rev()
                .find(|s| sample.at - s.at >= span)?;
            let wall = (sample.at - from.at) as f64;
            let busy = (sample.busy - from.busy) as f64;
            let own = (sample.own - from.own) as f64;
            Some(((busy - own) / wall).max(0.0))
        };
        Some(Others {
            recent: share(Self::SHORT)?,
            settled: share(Self::LONG)?,
        })
    }

    /// Reads this machine's counters (Linux); `None` where they cannot be read.
    pub fn read_sample(at: u64) -> Option<CpuSample> {
        Some(CpuSample {
            at,
            busy: cpus_busy_ns()?,
            own: process_cpu_ns()?,
        })
    }
}

/// Busy time of the CPUs in this process's affinity mask, from `/proc/stat` (a container
/// sees the host's CPUs there: only the ones it may run on count).
#[cfg(target_os = "linux")]
fn cpus_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ns_per_tick = 1_000_000_000 / u64::try_from(tick).ok().filter(|t| *t > 0)?;
    let set = affinity();
    // SAFETY: CPU_ISSET reads a bit of a valid set; out-of-range CPUs read as unset.
    let allowed = |cpu: usize| {
        set.as_ref()
            .is_none_or(|s| unsafe { libc::CPU_ISSET(cpu, s) })
    };
    busy_ticks(&stat, allowed)?.checked_mul(ns_per_tick)
}

/// Busy ticks (user, nice, system, irq, softirq, steal; guest is inside user) summed over the
/// `cpuN` lines of a `/proc/stat` text whose N is `allowed`; `None` when there is no such
/// line or one is malformed.
fn busy_ticks(stat: &str, allowed: impl Fn(usize) -> bool) -> Option<u64> {
    let mut busy = 0u64;
    let mut seen = false;
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            break; // the cpu lines come first
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue; // the aggregate "cpu  ..." line
        }
        let mut fields = rest.split_ascii_whitespace();
        let cpu: usize = fields.next()?.parse().ok()?;
        if !allowed(cpu) {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        let mut ticks = [0u64; 8];
        for tick in &mut ticks {
            *tick = fields.next()?.parse().ok()?;
        }
        busy = busy.checked_add(ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7])?;
        seen = true;
    }
    seen.then_some(busy)
}

#[cfg(target_os = "linux")]
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

#[cfg(target_os = "linux")]
fn process_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

#[cfg(not(target_os = "linux"))]
fn cpus_busy_ns() -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
fn process_cpu_ns() -> Option<u64> {
    None
}

/// How many CPUs this process may run on (its affinity mask): the CPUs [`OthersLoad`] sums.
pub fn affinity_cpus() -> Option<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: CPU_COUNT reads a valid set.
    return affinity()
        .map(|set| unsafe { libc::CPU_COUNT(&set) })
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0);
    #[cfg(not(target_os = "linux"))]
    None
}

/// The intra-op thread count per frame: at most `max`, fewer while other processes take the
/// cores the threads would run on.
#[derive(Debug, Clone)]
pub struct ThreadGovernor {
    cores: f64,
    max: u32,
    current: u32,
    /// `false`: always `max` ([`ThreadGovernor::fixed`]).
    adapts: bool,
}

impl ThreadGovernor {
    /// Other processes' cores beyond the ones the threads leave free that make the governor
    /// step down: a busy core (1.0) does, background noise (a few tenths) does not.
    pub const DOWN_AT: f64 = 0.6;
    /// The settled share that lets it climb back: the extra thread's core must be this free.
    pub const UP_AT: f64 = 0.3;

    /// `cores` the process may run on, at most `max` threads (the `threads` property, or one
    /// per core).
    pub fn new(cores: u32, max: u32) -> Self {
        let max = max.max(1);
        Self {
            cores: f64::from(cores.max(1)),
            max,
            current: max,
            adapts: true,
        }
    }

    /// Always `threads` (`adapt-threads=false`, or more threads than cores asked for).
    pub fn fixed(threads: u32) -> Self {
        Self {
            adapts: false,
            ..Self::new(threads, threads)
        }
    }

    pub fn threads(&self) -> u32 {
        self.current
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// The thread count for the next frame, given what the other processes used lately.
    pub fn update(&mut self, others: Others) -> u32 {
        if !self.adapts {
            return self.current;
        }
        // cores the other processes take from the ones the current threads would run on
        let overlap = |threads: u32, share: f64| share - (self.cores - f64::from(threads));
        while self.current > 1 && overlap(self.current, others.recent) > Self::DOWN_AT {
            self.current -= 1;
        }
        // up only when the long window and the last frames both leave the core free
        let lately = others.settled.max(others.recent);
        while self.current < self.max && overlap(self.current + 1, lately) <= Self::UP_AT {
            self.current += 1;
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Samples every 40 ms over `frames` frames: the others take `others` cores, we `own`.
    fn feed(load: &mut OthersLoad, start: u64, frames: u64, others: f64, own: f64) -> Vec<Others> {
        let mut out = Vec::new();
        let (mut busy, mut own_t) = load.samples.back().map_or((0, 0), |s| (s.busy, s.own));
        for i in 1..=frames {
            busy += ((others + own) * 40.0 * MS as f64) as u64;
            own_t += (own * 40.0 * MS as f64) as u64;
            if let Some(o) = load.push(CpuSample {
                at: start + i * 40 * MS,
                busy,
                own: own_t,
            }) {
                out.push(o);
            }
        }
        out
    }

    #[test]
    fn others_share_is_busy_time_minus_our_own_over_the_windows() {
        let mut load = OthersLoad::default();
        let quiet = feed(&mut load, 0, 20, 0.0, 1.5);
        // nothing until the long window is spanned (600 ms = 15 frames)
        assert_eq!(quiet.len(), 5);
        assert!(
            quiet
                .iter()
                .all(|o| o.recent.abs() < 1e-9 && o.settled.abs() < 1e-9)
        );
        // another process takes a core: the short window sees half of it after one frame,
        // all of it after two
        let busy = feed(&mut load, 20 * 40 * MS, 20, 1.0, 1.0);
        assert!((busy[0].recent - 0.5).abs() < 1e-9, "{:?}", busy[0]);
        assert!((busy[1].recent - 1.0).abs() < 1e-9, "{:?}", busy[1]);
        assert!(busy[1].settled < 0.3, "the long window lags: {:?}", busy[1]);
        assert!((busy[19].settled - 1.0).abs() < 1e-9);
        assert!(load.samples.len() <= 17, "the window stays bounded");
    }

    #[test]
    fn proc_stat_sums_the_allowed_cpus_and_skips_the_total_line() {
        let stat = "cpu  900 0 300 5000 10 0 5 0 0 0\n\
                    cpu0 400 0 100 2500 5 0 2 0 0 0\n\
                    cpu1 500 0 200 2500 5 0 3 1 0 0\n\
                    intr 12345\n";
        let all = |_| true;
        assert_eq!(busy_ticks(stat, all), Some(502 + 704));
        assert_eq!(busy_ticks(stat, |c| c == 1), Some(704));
        assert_eq!(busy_ticks(stat, |c| c == 7), None, "no allowed CPU listed");
        assert_eq!(busy_ticks("cpu0 1 2 3\n", all), None, "too few fields");
        assert_eq!(
            busy_ticks("cpu0 1 x 3 4 5 6 7 8\n", all),
            None,
            "not a number"
        );
    }

    #[test]
    fn a_counter_going_backwards_restarts_the_window() {
        let mut load = OthersLoad::default();
        feed(&mut load, 0, 20, 0.0, 1.0);
        let sample = CpuSample {
            at: 20 * 40 * MS + 1,
            busy: 0,
            own: 0,
        };
        assert_eq!(load.push(sample), None);
        assert_eq!(load.samples.len(), 1);
    }

    #[test]
    fn governor_steps_down_at_once_and_back_up_when_the_cores_are_free() {
        let mut gov = ThreadGovernor::new(2, 2);
        let at = |recent, settled| Others { recent, settled };
        assert_eq!(gov.update(at(0.2, 0.2)), 2, "background noise");
        assert_eq!(gov.update(at(0.55, 0.1)), 2);
        assert_eq!(gov.update(at(1.0, 0.3)), 1, "a busy core: one thread");
        assert_eq!(
            gov.update(at(0.1, 0.7)),
            1,
            "not while the long window is busy"
        );
        assert_eq!(gov.update(at(0.0, 0.31)), 1);
        assert_eq!(gov.update(at(0.0, 0.25)), 2, "free again");
        assert_eq!(gov.update(at(2.0, 2.0)), 1, "never below one");
    }

    #[test]
    fn governor_on_more_cores_gives_up_only_the_threads_that_would_share() {
        let mut gov = ThreadGovernor::new(8, 4);
        let at = |recent, settled| Others { recent, settled };
        // 4 threads on 8 cores: 4 cores are free for the others
        assert_eq!(gov.update(at(4.5, 4.5)), 4);
        assert_eq!(gov.update(at(5.0, 5.0)), 3);
        assert_eq!(gov.update(at(7.0, 7.0)), 1);
        assert_eq!(
            gov.update(at(1.0, 4.5)),
            3,
            "back up to what the settled share leaves"
        );
        assert_eq!(gov.update(at(0.0, 0.0)), 4);
        assert_eq!(ThreadGovernor::new(2, 0).threads(), 1);
        let mut fixed = ThreadGovernor::fixed(4);
        assert_eq!(
            fixed.update(at(7.0, 7.0)),
            4,
            "fixed: as asked, whatever the load"
        );
    }
}
