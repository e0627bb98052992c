// SPDX-License-Identifier: MPL-2.0
//! The deadline scheduler of `lightsrscale`: what the element decides per frame, without
//! GStreamer and without a clock.
//!
//! It owns the [`crate::policy`] (costs, active rung, climbs), the ladder's names, the warm-up
//! bookkeeping and the counters of the element's life. Times come in as plain values (a
//! frame's running time, the clock's running time, the pipeline latency), so tests drive it
//! with an injected clock and injected costs and assert its decisions exactly. The element
//! (`imp.rs`) reads GStreamer's times, runs the chosen rung and posts what the scheduler
//! reports; this module imports nothing from it.

use std::{collections::HashMap, time::Duration};

use crate::cpushare::{CpuSample, Others, OthersLoad, ThreadGovernor};
use crate::policy::{
    self, DeadlinePolicy, Decision, FrameBudget, FrameSize, PolicyConfig, PolicyStats,
};

/// How a CPU rung's cost scales with its thread count, as `(full / threads) ^ THREAD_SCALING`:
/// the x4 rung at 320x180 took 77.0 ms on one thread and 38.9 ms on two (2-core EPYC, torch
/// 2.11, without the element's allocator settings), a ratio of 1.98.
const THREAD_SCALING: f64 = 1.0;

/// What the weight-free rung is taken to cost for a rescue before it has run: GStreamer's
/// scaler makes a 1280x720 frame from 320x180 in about 2 ms on one core of this CPU.
const STAND_IN_UNMEASURED: Duration = Duration::from_millis(5);

/// The properties that choose rungs, as the scheduler needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct RungChoice {
    /// `variant`: [`AUTO`](crate::engine::manifest::AUTO) or a rung name.
    pub variant: String,
    pub adaptive: bool,
    /// `min-variant` / `max-variant`: a rung name, or "" for the end of the ladder.
    pub min_variant: String,
    pub max_variant: String,
    pub deadline_margin: Duration,
    pub max_lateness: Duration,
}

/// Maps the variant properties onto the deadline policy's settings for a ladder (`names`,
/// best first): the ONE place where the properties choose rungs (the policy picks per frame
/// within them).
///
/// `variant=auto` lets the policy adapt between `max-variant` (best allowed) and
/// `min-variant` (lightest allowed), or run the best allowed with `adaptive=false`; a name
/// fixes that rung.
pub fn policy_config(
    names: &[&str],
    scale: u32,
    choice: &RungChoice,
) -> Result<PolicyConfig, String> {
    if names.is_empty() {
        return Err(format!("ladder x{scale} is empty"));
    }
    let index = |property: &str, name: &str, unset: &str| {
        if name == unset {
            return Ok(None);
        }
        names.iter().position(|n| *n == name).map(Some).ok_or_else(|| {
            let unset = if unset.is_empty() { "\"\"" } else { unset };
            format!(
                "{property}={name} is not in the x{scale} ladder of this bundle (it has: {}); use {property}={unset} or one of those",
                names.join(", ")
            )
        })
    };
    let fixed = index("variant", &choice.variant, crate::engine::manifest::AUTO)?;
    let best = index("max-variant", &choice.max_variant, "")?.unwrap_or(0);
    let lightest = index("min-variant", &choice.min_variant, "")?;
    if let Some(lightest) = lightest.filter(|l| *l < best) {
        return Err(format!(
            "max-variant={} is lighter than min-variant={} (the x{scale} ladder, best first: {}); swap them",
            names[best],
            names[lightest],
            names.join(", ")
        ));
    }
    Ok(PolicyConfig {
        adaptive: choice.adaptive,
        fixed_variant: fixed,
        best_variant: best,
        lightest_variant: lightest,
        margin: choice.deadline_margin,
        lateness: choice.max_lateness,
        ..PolicyConfig::default()
    })
}

/// Live-pipeline facts from the LATENCY query and event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTiming {
    /// Upstream is live (from the last LATENCY query).
    pub live: bool,
    pub upstream_min: Duration,
    /// The pipeline latency the sinks render with (LATENCY event).
    pub pipeline_latency: Option<Duration>,
}

/// One frame's times, as the element reads them.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameTimes {
    /// Running time of the buffer's PTS.
    pub running_time: Option<u64>,
    /// The pipeline clock's running time now; `None` without a clock (not playing).
    pub clock_now: Option<u64>,
    /// Time axis of a non-live stream without timestamps (ns since the element was made).
    pub monotonic_now: u64,
    /// The buffer's duration.
    pub buffer_duration: Option<Duration>,
}

/// When one frame is due, on the policy's time axis.
#[derive(Debug, Clone, Copy)]
pub struct FrameClock {
    pub running_time: Option<u64>,
    pub now: u64,
    pub budget: FrameBudget,
    /// Live: running time by which the frame must be out.
    pub deadline: Option<u64>,
}

impl FrameClock {
    /// Whether a frame that took `cost` made its deadline: live, the clock after the work
    /// (`clock_after`) against the deadline; otherwise the cost against the budget.
    pub fn met(&self, cost: Duration, clock_after: Option<u64>) -> bool {
        match (self.deadline, clock_after) {
            (Some(deadline), Some(now)) => now <= deadline,
            _ => cost <= self.budget.remaining,
        }
    }

    pub fn is_live(&self) -> bool {
        self.deadline.is_some()
    }
}

/// One frame's decision and what to tell the application about it.
#[derive(Debug, Clone)]
pub struct FramePlan {
    pub decision: Decision,
    /// `active-variant` changed.
    pub renamed: bool,
    /// Lifetime counters after this decision (for QoS messages).
    pub processed: u64,
    pub dropped: u64,
    pub load: f64,
    /// No other process used the CPUs lately and the governor runs all its threads (see
    /// [`DeadlinePolicy::set_quiet`]); never on CUDA.
    pub quiet: bool,
    pub qos_proportion: f64,
}

/// Rungs to warm up (measure on a blank frame), lightest first, for one ladder and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmUp {
    pub order: Vec<usize>,
    /// Identifies the ladder and frame size the measurements are for.
    pub generation: u64,
    /// The stream's frame duration when it was taken (none before caps give a frame rate).
    pub frame: Option<Duration>,
}

/// Counters kept over the element's life (across caps, scale and state changes).
#[derive(Debug, Clone, Default)]
struct Totals {
    /// processed, dropped, switches, probes, misses (the rest of the struct unused)
    counters: PolicyStats,
    /// frames per rung name
    frames: HashMap<String, u64>,
}

/// What the `stats` property reports.
#[derive(Debug, Clone)]
pub struct StatsView {
    pub names: Vec<String>,
    pub stats: PolicyStats,
    pub load: f64,
    pub qos_proportion: f64,
    /// Predicted cost per rung at the current size and load.
    pub predicted: Vec<Option<Duration>>,
    /// The thread count of CPU rungs now (`None` on CUDA).
    pub threads: Option<u32>,
}

/// The element's scheduler; see the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    names: Vec<String>,
    scale: u32,
    policy: DeadlinePolicy,
    frame_duration: Option<Duration>,
    /// Rungs measured (or being measured) at the current size.
    warmed: Vec<bool>,
    /// A warm-up is running: no second one starts.
    warming: bool,
    /// The load estimate when the running warm-up started: its samples were measured at it.
    warm_up_load: f64,
    generation: u64,
    /// What `active-variant` reports: the policy's active rung (before the first frame, a
    /// fixed variant's name, else empty).
    reported: String,
    /// Counters of the policies this one replaced.
    retired: Totals,
    /// CPU rungs: the other processes' share of the CPUs and the thread count it leaves.
    cpu: Option<CpuThreads>,
}

/// How CPU rungs choose their thread count ([`Scheduler::set_cpu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuConfig {
    /// Cores the process may run on.
    pub cores: u32,
    /// Intra-op threads when the cores are free.
    pub threads: u32,
    /// Fewer threads while other processes take the cores.
    pub adapt: bool,
}

#[derive(Debug)]
struct CpuThreads {
    others: OthersLoad,
    governor: ThreadGovernor,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            scale: 0,
            policy: DeadlinePolicy::new(0, FrameSize::new(1, 1), PolicyConfig::default()),
            frame_duration: None,
            warmed: Vec::new(),
            warming: false,
            warm_up_load: 1.0,
            generation: 0,
            reported: String::new(),
            retired: Totals::default(),
            cpu: None,
        }
    }
}

impl Scheduler {
    /// Takes a negotiated stream: the ladder (`names`, best first) at `scale`, the input frame
    /// size, the policy settings and the caps' frame duration. The same ladder keeps its
    /// measured costs (per size), its active rung and its warm-up state; another ladder starts
    /// afresh, and the counters carry over either way.
    pub fn negotiate(
        &mut self,
        names: Vec<String>,
        scale: u32,
        size: FrameSize,
        config: PolicyConfig,
        frame_duration: Option<Duration>,
    ) {
        if names != self.names || scale != self.scale {
            self.retire();
            self.reported = config
                .fixed_variant
                .and_then(|v| names.get(v).cloned())
                .unwrap_or_default();
            self.policy = DeadlinePolicy::new(names.len(), size, config.clone());
            self.policy.set_load(self.thread_load());
            self.policy.set_measuring_elsewhere(self.warming);
            self.warmed = vec![false; names.len()];
            self.names = names;
            self.scale = scale;
            self.generation += 1;
        } else if self.policy.cost_model().frame_size() != size {
            self.warmed = vec![false; self.names.len()];
            self.generation += 1;
        }
        self.policy.set_config(config);
        self.policy.set_frame_size(size);
        self.frame_duration = frame_duration;
    }

    /// Another bundle was loaded: the next caps start a new policy even if its rungs have the
    /// same names (the counters carry over).
    pub fn forget_ladder(&mut self) {
        self.retire();
        *self = Self {
            retired: std::mem::take(&mut self.retired),
            generation: self.generation + 1,
            // a warm-up of the old bundle may still run: no second one until it reports
            warming: self.warming,
            ..Self::default()
        };
    }

    /// Folds the current policy's counters into the lifetime totals.
    fn retire(&mut self) {
        let stats = self.policy.stats();
        let t = &mut self.retired;
        t.counters.add_counters(&stats);
        for (name, per) in self.names.iter().zip(&stats.per_variant) {
            *t.frames.entry(name.clone()).or_default() += per.frames;
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The negotiated scale (0 before the first caps).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn set_config(&mut self, config: PolicyConfig) {
        self.policy.set_config(config);
    }

    pub fn on_qos(&mut self, proportion: f64, jitter_ns: i64, timestamp: u64) {
        self.policy.on_qos(proportion, jitter_ns, timestamp);
    }

    /// Stop / start or a flush: the running time starts again (see
    /// [`DeadlinePolicy::restart_time`]); costs, the active rung and the counters stay.
    pub fn restart_time(&mut self) {
        self.policy.restart_time();
    }

    /// When the frame is due: live (upstream live and a clock running), running time +
    /// pipeline latency against the clock; otherwise its running time is the time axis and
    /// its duration the budget.
    pub fn clock(&self, times: FrameTimes, timing: LiveTiming) -> FrameClock {
        let running_time = times.running_time;
        let frame_duration = self.frame_duration.or(times.buffer_duration);
        let live_now = times.clock_now.filter(|_| timing.live);
        if let (Some(now), Some(rt)) = (live_now, running_time) {
            // The sinks render at running time + pipeline latency; that latency is at least
            // upstream's plus ours, unless no sink syncs (then the bin distributes 0).
            let ours = policy::processing_latency(frame_duration, None, Duration::ZERO);
            let latency =
                (timing.upstream_min + ours).max(timing.pipeline_latency.unwrap_or_default());
            return FrameClock {
                running_time,
                now,
                budget: FrameBudget::live(rt, latency, now, frame_duration),
                deadline: Some(rt.saturating_add(latency.as_nanos() as u64)),
            };
        }
        let now = running_time.unwrap_or(times.monotonic_now);
        let budget = match frame_duration {
            Some(duration) => FrameBudget::non_live(duration, running_time),
            None => FrameBudget::unbounded(running_time),
        };
        // Not live: no frame is worthless for being slow; only downstream QoS drops.
        FrameClock {
            running_time,
            now,
            budget: budget.keeping_every_frame(),
            deadline: None,
        }
    }

    /// CPU rungs with `threads` intra-op threads at most on `cores`, fewer while other
    /// processes take the cores when `adapt` ([`Scheduler::cpu_threads`]). `None` (a CUDA
    /// bundle): no thread count to choose.
    pub fn set_cpu(&mut self, cpu: Option<CpuConfig>) {
        // afresh at every start: the samples and the count of a stopped stream are stale
        self.cpu = cpu.map(|config| CpuThreads {
            others: OthersLoad::default(),
            governor: match config.adapt {
                true => ThreadGovernor::new(config.cores, config.threads),
                false => ThreadGovernor::fixed(config.threads),
            },
        });
        self.policy.set_load(self.thread_load());
    }

    /// What the current thread count costs against the full one, as a load (1 on CUDA).
    fn thread_load(&self) -> f64 {
        self.cpu.as_ref().map_or(1.0, |c| {
            (f64::from(c.governor.max()) / f64::from(c.governor.threads())).powf(THREAD_SCALING)
        })
    }

    /// The intra-op thread count for the next frame, from this instant's CPU counters (one
    /// sample per frame), and what the other processes took lately. The element applies the
    /// count on its streaming thread where that thread's differs (a pooled thread may carry
    /// another element's). A change of the governor resets the load estimate to what the new
    /// count costs against the full one, so the frame after it is planned at its new speed,
    /// whatever frames that shared a core with another process measured before.
    pub fn cpu_threads(&mut self, sample: Option<CpuSample>) -> (Option<Others>, Option<u32>) {
        let Some(cpu) = self.cpu.as_mut() else {
            return (None, None);
        };
        let others = sample.and_then(|s| cpu.others.push(s));
        let changed = others.is_some_and(|o| {
            let old = cpu.governor.threads();
            cpu.governor.update(o) != old
        });
        // other processes' CPU use as background noise, lately and over the long window
        let quiet = others.is_some_and(|o| o.recent.max(o.settled) <= ThreadGovernor::UP_AT)
            && cpu.governor.threads() == cpu.governor.max();
        let threads = cpu.governor.threads();
        if changed {
            self.policy.set_load(self.thread_load());
        }
        self.policy.set_quiet(quiet);
        (others, Some(threads))
    }

    /// The thread count CPU rungs run with now (`None` for a CUDA bundle).
    pub fn threads(&self) -> Option<u32> {
        self.cpu.as_ref().map(|c| c.governor.threads())
    }

    /// Decides the next frame.
    pub fn plan(&mut self, clock: &FrameClock) -> FramePlan {
        let decision = self.policy.decide(clock.now, clock.budget);
        let active = self.policy.active_variant().and_then(|v| self.names.get(v));
        let renamed = match active {
            Some(name) if *name != self.reported => {
                self.reported = name.clone();
                true
            }
            _ => false,
        };
        let (processed, dropped) = self.policy.processed_and_dropped();
        FramePlan {
            decision,
            renamed,
            processed: self.retired.counters.processed + processed,
            dropped: self.retired.counters.dropped + dropped,
            load: self.policy.cost_model().load(),
            quiet: self.policy.cost_model().is_quiet(),
            qos_proportion: self.policy.qos_proportion(),
        }
    }

    /// What the frame last planned cost, and whether it made its deadline.
    pub fn record(&mut self, variant: usize, cost: Duration, met: bool) {
        self.policy.record(variant, cost, met);
    }

    /// How long the planned frame's rung may run before `stand_in` (the weight-free rung,
    /// GStreamer's scaler) makes the frame instead, from when the frame was planned: until the
    /// last moment the sink still shows the frame (its deadline plus the sink's `max-lateness`),
    /// less `stand_in`'s own cost and the deadline margin. A rung that runs a little over the
    /// deadline still makes its frame, as it did without a rescue (the policy steps down after
    /// it); a frame stalled for several frame durations is made on time by `stand_in`. `None`,
    /// the frame waits for its rung: not live, a drop, the frame is `stand_in`'s, or the policy
    /// may not use `stand_in` (a fixed rung, `adaptive=false`, `stand_in` outside `min-variant`
    /// / `max-variant`).
    pub fn rescue_after(
        &self,
        plan: &FramePlan,
        clock: &FrameClock,
        stand_in: usize,
    ) -> Option<Duration> {
        let d = &plan.decision;
        if !clock.is_live()
            || d.drop
            || d.variant == stand_in
            || !self.policy.may_stand_in(stand_in)
        {
            return None;
        }
        let config = self.policy.config();
        let budget = clock.budget;
        // one of the two is zero: the time to the deadline, or how far past it the frame is
        let shown_until = (budget.until_deadline + config.lateness).saturating_sub(budget.overdue);
        let own = self
            .policy
            .predicted_cost(stand_in)
            .unwrap_or(STAND_IN_UNMEASURED);
        // never before the end of the budget the rung was chosen for (`max-lateness=0`)
        let budget_end = budget.until_deadline.saturating_sub(config.margin);
        Some(
            shown_until
                .saturating_sub(own + config.margin)
                .max(budget_end),
        )
    }

    /// The frame last planned, on `variant`, was given up on `waited` after it was planned, at
    /// its deadline, and `stand_in` made it in `cost` ([`Scheduler::rescue_after`],
    /// [`DeadlinePolicy::record_rescued`]).
    pub fn record_rescued(
        &mut self,
        variant: usize,
        waited: Duration,
        stand_in: usize,
        cost: Duration,
    ) {
        self.policy.record_rescued(variant, waited, stand_in, cost);
    }

    /// `stand_in` made the frame last planned, in `cost`, because a frame given up on before it
    /// still ran its rung; `met`: it made its deadline.
    pub fn record_stand_in(&mut self, stand_in: usize, cost: Duration, met: bool) {
        self.policy.record_stand_in(stand_in, cost, met);
    }

    /// Changes with the ladder and the frame size: what a warm-up or a priming was for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rungs the policy may run that are not measured at this size yet, lightest first (a
    /// fixed one, the best allowed without adaptation, else all within the bounds); marks them
    /// as taken. None while another warm-up runs or when nothing is left.
    pub fn take_warm_up(&mut self) -> Option<WarmUp> {
        if self.warming || self.names.is_empty() {
            return None;
        }
        let config = self.policy.config();
        let last = self.names.len() - 1;
        let lightest = config.lightest_variant.unwrap_or(last).min(last);
        let best = config.best_variant.min(lightest);
        let candidates: Vec<usize> = match config.fixed_variant {
            Some(fixed) => vec![fixed.min(last)],
            None if !config.adaptive => vec![best],
            None => (best..=lightest).rev().collect(),
        };
        let order: Vec<usize> = candidates
            .into_iter()
            .filter(|&v| !self.warmed[v] && !self.policy.cost_model().is_measured(v))
            .collect();
        if order.is_empty() {
            return None;
        }
        for &v in &order {
            self.warmed[v] = true;
        }
        self.warming = true;
        self.warm_up_load = self.policy.cost_model().load();
        self.policy.set_measuring_elsewhere(true);
        Some(WarmUp {
            order,
            generation: self.generation,
            frame: self.frame_duration,
        })
    }

    /// The measurements of a warm-up from [`Scheduler::take_warm_up`]: seeds the policy's
    /// costs unless the ladder or the frame size changed meanwhile. Rungs without samples are
    /// left to probes.
    /// Returns whether the measurements were for the current ladder and size.
    pub fn finish_warm_up(&mut self, generation: u64, seeds: &[(usize, Vec<Duration>)]) -> bool {
        self.warming = false;
        self.policy.set_measuring_elsewhere(false);
        if generation != self.generation {
            return false;
        }
        // measured at the load of the warm-up's start (its thread count): as seen from now
        let factor = self.policy.cost_model().load() / self.warm_up_load;
        for (variant, samples) in seeds {
            // a rung the stream ran meanwhile keeps its real frames' costs
            if *variant < self.names.len() && !self.policy.cost_model().is_measured(*variant) {
                let samples: Vec<Duration> = samples.iter().map(|d| d.mul_f64(factor)).collect();
                self.policy.seed(*variant, &samples);
            }
        }
        true
    }

    /// This element's processing latency: one frame duration (what a synchronous element may
    /// take per frame); zero before caps.
    pub fn processing_latency(&self) -> Duration {
        policy::processing_latency(self.frame_duration, None, Duration::ZERO)
    }

    /// What `active-variant` reports.
    pub fn active_name(&self) -> &str {
        &self.reported
    }

    /// The `stats` property: counters over the element's life; costs at the current size.
    pub fn stats(&self) -> StatsView {
        let mut stats = self.policy.stats();
        let t = &self.retired;
        stats.add_counters(&t.counters);
        stats
            .per_variant
            .resize(self.names.len(), Default::default());
        for (name, per) in self.names.iter().zip(stats.per_variant.iter_mut()) {
            per.frames += t.frames.get(name).copied().unwrap_or(0);
        }
        StatsView {
            names: self.names.clone(),
            stats,
            load: self.policy.cost_model().load(),
            qos_proportion: self.policy.qos_proportion(),
            predicted: (0..self.names.len())
                .map(|v| self.policy.predicted_cost(v))
                .collect(),
            threads: self.threads(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The element's deadline behaviour, driven frame by frame with an injected clock and
    //! injected costs: every decision is asserted exactly, nothing is timed.
    use super::*;
    use crate::cpushare::CpuSample;
    use crate::policy::Reason;

    const MS: u64 = 1_000_000;
    const PERIOD: u64 = 40 * MS;
    const SIZE: FrameSize = FrameSize {
        width: 320,
        height: 180,
    };

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn choice() -> RungChoice {
        RungChoice {
            variant: crate::engine::manifest::AUTO.into(),
            adaptive: true,
            min_variant: String::new(),
            max_variant: String::new(),
            deadline_margin: ms(2),
            max_lateness: ms(20),
        }
    }

    /// (frame index, from, to, reason) of a switch.
    type Switch = (u64, Option<usize>, usize, Reason);

    /// What happened to one frame: the rung it ran on (None: dropped), and the switch if any.
    #[derive(Debug, Clone, PartialEq)]
    struct Step {
        ran: Option<usize>,
        switch: Option<(Option<usize>, usize, Reason)>,
    }

    /// A live 25 fps stream into a scheduler: frame k is captured at running time k * 40 ms
    /// and must be out one frame later (the latency this element answers); the clock moves on
    /// by what each frame costs, so a slow frame delays the next ones.
    struct Live {
        scheduler: Scheduler,
        timing: LiveTiming,
        names: Vec<String>,
        frame: u64,
        now: u64,
    }

    impl Live {
        fn new(names: &[&str], choice: &RungChoice) -> Live {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut scheduler = Scheduler::default();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let config = policy_config(&refs, 4, choice).unwrap();
            scheduler.negotiate(names.clone(), 4, SIZE, config, Some(ms(40)));
            Live {
                scheduler,
                timing: LiveTiming {
                    live: true,
                    upstream_min: Duration::ZERO,
                    pipeline_latency: Some(ms(40)),
                },
                names,
                frame: 0,
                now: 0,
            }
        }

        /// Seeds every rung as a warm-up would (5 samples each).
        fn warmed(mut self, costs_ms: &[u64]) -> Live {
            let warm_up = self.scheduler.take_warm_up().expect("rungs to warm up");
            let seeds: Vec<(usize, Vec<Duration>)> = warm_up
                .order
                .iter()
                .map(|&v| (v, vec![ms(costs_ms[v]); 5]))
                .collect();
            self.scheduler.finish_warm_up(warm_up.generation, &seeds);
            self
        }

        /// One frame, costing `cost(rung)` if it runs.
        fn step(&mut self, cost: impl Fn(usize) -> u64) -> Step {
            let rt = self.frame * PERIOD;
            self.now = self.now.max(rt);
            let times = FrameTimes {
                running_time: Some(rt),
                clock_now: Some(self.now),
                monotonic_now: 0,
                buffer_duration: None,
            };
            let clock = self.scheduler.clock(times, self.timing);
            let plan = self.scheduler.plan(&clock);
            let d = plan.decision;
            let ran = (!d.drop).then(|| {
                let spent = cost(d.variant) * MS;
                self.now += spent;
                let met = clock.met(Duration::from_nanos(spent), Some(self.now));
                self.scheduler
                    .record(d.variant, Duration::from_nanos(spent), met);
                d.variant
            });
            self.frame += 1;
            Step {
                ran,
                switch: d.switch.map(|s| (s.from, s.to, s.reason)),
            }
        }

        /// `n` frames as [`Live::run`], each after a CPU sample in which the other processes
        /// have used `others_ns(t)` ns of CPU by clock time `t`; frame `k` on `rung` with
        /// `threads` costs `cost(k, rung, threads, t)` ms. Also returns (frame, count) of every
        /// thread count handed out after the first frame's.
        fn run_with_cpu(
            &mut self,
            n: u64,
            others_ns: impl Fn(u64) -> u64,
            cost: impl Fn(u64, usize, u32, u64) -> u64,
        ) -> (Vec<Switch>, Vec<u64>, Vec<(u64, u32)>) {
            let (mut threads, mut changes) = (0u32, Vec::new());
            let mut switches = Vec::new();
            let mut counts = vec![0u64; self.names.len() + 1];
            for _ in 0..n {
                let k = self.frame;
                let start = self.now.max(k * PERIOD);
                let sample = CpuSample {
                    at: start,
                    busy: others_ns(start),
                    own: 0,
                };
                if let (_, Some(count)) = self.scheduler.cpu_threads(Some(sample)) {
                    if threads != 0 && count != threads {
                        changes.push((k, count));
                    }
                    threads = count;
                }
                let step = self.step(|v| cost(k, v, threads, start));
                if let Some((from, to, reason)) = step.switch {
                    switches.push((k, from, to, reason));
                }
                counts[step.ran.unwrap_or(self.names.len())] += 1;
            }
            (switches, counts, changes)
        }

        /// `n` frames; returns (frame index, from, to, reason) of every switch and the frames
        /// run per rung (index = rung, last = dropped).
        /// (A scheduler without [`Scheduler::set_cpu`] ignores the CPU samples of
        /// [`Live::run_with_cpu`] that this runs with.)
        fn run(&mut self, n: u64, cost: impl Fn(u64, usize) -> u64) -> (Vec<Switch>, Vec<u64>) {
            let (switches, counts, _) = self.run_with_cpu(n, |_| 0, |k, v, _, _| cost(k, v));
            (switches, counts)
        }
    }

    #[test]
    fn a_live_stream_starts_on_the_lightest_rung_while_the_others_are_measured() {
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        let warm_up = live
            .scheduler
            .take_warm_up()
            .expect("both rungs to measure");
        assert_eq!(warm_up.order, vec![1, 0], "lightest first");
        assert_eq!(live.scheduler.take_warm_up(), None, "one warm-up at a time");
        // Frames arrive while the warm-up thread measures: the lightest rung runs.
        let (switches, counts) = live.run(10, |_, v| [25, 2][v]);
        assert_eq!(switches, vec![(0, None, 1, Reason::Initial)]);
        assert_eq!(counts, vec![0, 10, 0]);
        assert_eq!(live.scheduler.active_name(), "bicubic");
        // The measurements come in: the learned rung fits with headroom (25 x 1.25 <= 38 ms).
        // Its five timed runs are the evidence: the next frame climbs to it (no sustain period
        // and no probe, which cost a live stream 2 s on its weight-free rung), and stays.
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[(1, vec![ms(2); 5]), (0, vec![ms(25); 5])],
        );
        let (switches, counts) = live.run(100, |_, v| [25, 2][v]);
        assert_eq!(switches, vec![(10, Some(1), 0, Reason::Measured)]);
        assert_eq!(counts, vec![100, 0, 0]);
        assert_eq!(live.scheduler.active_name(), "learned");
    }

    #[test]
    fn a_warm_up_that_measures_every_rung_too_slow_keeps_the_stream_where_it_is() {
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        let warm_up = live.scheduler.take_warm_up().unwrap();
        live.run(10, |_, v| [60, 2][v]);
        // 60 ms against a 38 ms budget: the fresh choice is the weight-free rung again, and
        // no frame runs the learned rung (it is beyond the probe's reach, and rechecks wait).
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[(1, vec![ms(2); 5]), (0, vec![ms(60); 5])],
        );
        let (switches, counts) = live.run(40, |_, v| [60, 2][v]);
        assert_eq!(switches, vec![]);
        assert_eq!(counts, vec![0, 40, 0]);
    }

    #[test]
    fn one_spike_after_a_long_hold_costs_a_quarter_sustain_then_the_usual_backoff() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[18, 2]);
        // 16 s on the learned rung, then one frame of it slowed to 60 ms (another process woke
        // up), and another soon after the stream is back on it
        let spikes = [400u64, 430];
        let (switches, counts) = live.run(700, |k, v| match spikes.contains(&k) {
            true => [60, 6][v],
            false => [18, 2][v],
        });
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (401, Some(0), 1, Reason::DeadlineMissed),
                // back after 18 frames: the load settles (5 frames), a probe, then 0.5 s
                // instead of the 2 s sustain period (without the quick return: back at frame
                // 482, 3.2 s after the spike)
                (419, Some(1), 0, Reason::Headroom),
                // fell back within a sustain period of the climb: the rung is at the edge, so
                // the next climb waits the doubled period (4 s), quick return or not
                (431, Some(0), 1, Reason::DeadlineMissed),
                (536, Some(1), 0, Reason::Headroom),
            ]
        );
        assert_eq!(counts[2], 0, "nothing dropped");
    }

    #[test]
    fn a_spike_2_s_after_the_first_climb_costs_under_a_second() {
        // the x2 deadline benchmark's quiet half on 2 cores: `dense` (19 ms) from the start,
        // one frame of it over the budget at 1.9 s
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[19, 2]);
        let (switches, _) = live.run(200, |k, v| if k == 48 { [45, 4][v] } else { [19, 2][v] });
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (49, Some(0), 1, Reason::DeadlineMissed),
                (65, Some(1), 0, Reason::Headroom), // 0.64 s later (without: 2.1 s)
            ]
        );
    }

    #[test]
    fn no_quick_return_after_a_predicted_miss() {
        // 4 s on the learned rung, then its frames creep up (a load building up) until it is
        // predicted to miss, then the load goes at once: the climb back waits the whole period
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[18, 2]);
        let (switches, _) = live.run(300, |k, v| match k {
            100..110 => [30 + (k - 100), 2][v],
            _ => [18, 2][v],
        });
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (105, Some(0), 1, Reason::PredictedMiss),
                // 54 frames: the sustain period and a probe (a quick return: back at frame 132)
                (159, Some(1), 0, Reason::Headroom),
            ]
        );
    }

    #[test]
    fn the_quick_return_holds_across_a_restart_and_not_after_a_load() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[18, 2]);
        live.run(10, |_, v| [18, 2][v]);
        // stop and start on the same rung (the climb state is reset): 16 s on it, one spike
        live.scheduler.restart_time();
        (live.frame, live.now) = (0, 0);
        let (switches, _) = live.run(480, |k, v| if k == 400 { [60, 6][v] } else { [18, 2][v] });
        assert_eq!(
            switches,
            vec![
                (401, Some(0), 1, Reason::DeadlineMissed),
                (419, Some(1), 0, Reason::Headroom),
            ]
        );
        // 16 s more, a spike, then another process slows the learned rung to 45 ms for 12 s:
        // it fits again long after the fall-back (a load, not a spike), so once the load has
        // gone the climb waits the whole sustain period
        let (switches, _) = live.run(1200, |k, v| match k {
            880 => [60, 6][v],
            881..1181 => [45, 4][v],
            _ => [18, 2][v],
        });
        assert_eq!(switches[0], (881, Some(0), 1, Reason::DeadlineMissed));
        assert_eq!(switches.len(), 2, "{switches:?}");
        let (at, _, to, reason) = switches[1];
        assert_eq!((to, reason), (0, Reason::Headroom));
        assert!(
            at >= 1181 + 50,
            "back at frame {at}: within the sustain period of the load's end"
        );
    }

    #[test]
    fn falls_back_at_a_miss_and_climbs_back_when_the_load_is_gone() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[25, 2]);
        // Frames 30..90: another process slows the learned rung to 55 ms (the bicubic rung to
        // 4 ms); afterwards it is 25 ms again.
        let (switches, counts) = live.run(200, |k, v| match (30..90).contains(&k) {
            true => [55, 4][v],
            false => [25, 2][v],
        });
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (31, Some(0), 1, Reason::DeadlineMissed),
                (146, Some(1), 0, Reason::Headroom),
            ]
        );
        assert_eq!(
            counts[2], 0,
            "nothing dropped: the bicubic rung makes every deadline"
        );
        let stats = live.scheduler.stats().stats;
        // switches: changes of rung after the first choice
        assert_eq!(
            (stats.processed, stats.dropped, stats.switches),
            (200, 0, 2)
        );
        assert_eq!(
            stats.misses, 1,
            "one late frame (the one that showed the load)"
        );
    }

    /// Switches, frames per rung (last: dropped), misses, (frame, threads) changes.
    type BusyCoreRun = (Vec<Switch>, Vec<u64>, u64, Vec<(u64, u32)>);

    /// Another process keeps one of 2 cores busy from 2 s to 6 s of the clock. The learned
    /// rung costs 20 ms on 2 threads, 70 ms on 2 threads that share a core with it, 40 ms on
    /// one thread; bicubic 2 ms (3 ms while the core is busy). Returns the switches, the
    /// frames per rung (last: dropped), the misses, and (frame, threads) of every change.
    fn busy_core_run(governed: bool) -> BusyCoreRun {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[20, 2]);
        if governed {
            live.scheduler.set_cpu(Some(CpuConfig {
                cores: 2,
                threads: 2,
                adapt: true,
            }));
        }
        let busy = |t: u64| t.clamp(2000 * MS, 6000 * MS) - 2000 * MS;
        let (switches, counts, changes) = live.run_with_cpu(300, busy, |_, v, threads, t| {
            let shared = (2000 * MS..6000 * MS).contains(&t);
            match (v, threads, shared) {
                (0, 1, _) => 40,
                (0, _, true) => 70,
                (0, _, false) => 20,
                (_, _, true) => 3,
                _ => 2,
            }
        });
        let misses = live.scheduler.stats().stats.misses;
        (switches, counts, misses, changes)
    }

    #[test]
    fn a_busy_core_takes_a_thread_off_the_frames_at_once_and_gives_it_back_when_free() {
        let (switches, counts, misses, changes) = busy_core_run(true);
        // Frame 50 starts as the other process does and shares its core (70 ms, late). The
        // next frame sees the busy core (0.64 cores over the last 110 ms) and runs on one
        // thread; 600 ms after the core is free again, the second thread comes back. On one
        // thread the learned rung (40 ms) is predicted at its one-thread cost and not probed
        // (the scaler's frames, which one thread does not slow, do not pull the load under the
        // one-thread baseline); with two it fits, and is climbed to one sustain period later.
        assert_eq!(changes, vec![(51, 1), (161, 2)]);
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (51, Some(0), 1, Reason::DeadlineMissed),
                (211, Some(1), 0, Reason::Headroom),
            ]
        );
        assert_eq!((counts, misses), (vec![142, 158, 0], 1), "one late frame");
        // Without the governor the learned rung keeps sharing the core when it runs under
        // the load: two more late frames.
        let (switches, counts, misses, changes) = busy_core_run(false);
        assert_eq!(changes, vec![]);
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (51, Some(0), 1, Reason::DeadlineMissed),
                (205, Some(1), 0, Reason::Headroom),
            ]
        );
        assert_eq!((counts, misses), (vec![150, 150, 0], 3));
    }

    /// The warm-up measured bicubic at 1.5 ms, in a loop with its buffers in cache; in the
    /// stream it takes 2.5 ms (measured: 1.0-1.5 against 2.2-3.0 ms). The learned rung takes
    /// 26 ms. Frame 20 takes 60 ms (a hiccup): a miss, down to bicubic. Returns the switches
    /// and the frames per rung (last: dropped) of 250 frames, with the CPU counters of a
    /// machine no other process uses when `quiet_known`, and without any otherwise.
    fn one_hiccup_run(quiet_known: bool) -> (Vec<Switch>, Vec<u64>) {
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        if quiet_known {
            live.scheduler.set_cpu(Some(CpuConfig {
                cores: 2,
                threads: 2,
                adapt: true,
            }));
        }
        let warm_up = live.scheduler.take_warm_up().unwrap();
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[
                (0, vec![ms(26); 5]),
                (1, vec![Duration::from_micros(1500); 5]),
            ],
        );
        // no other process on the CPUs
        let (switches, counts, _) = live.run_with_cpu(
            250,
            |_| 0,
            |k, v, _, _| match (k, v) {
                (20, 0) => 60,
                (_, 0) => 26,
                // 2.5 ms: the harness counts whole ms, so 2 and 3 in turn
                _ => 2 + k % 2,
            },
        );
        (switches, counts)
    }

    #[test]
    fn one_slow_frame_on_a_quiet_machine_does_not_keep_the_stream_on_bicubic() {
        // Known quiet (nothing else on the CPUs): bicubic's 2.5 ms frames are its own cost, not
        // a load of 1.67, and the learned rung is climbed back to after 2 s of fitting and a
        // probe (the miss itself, quiet, moved the load by one EWMA step, not to 2.3).
        let (switches, counts) = one_hiccup_run(true);
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (21, Some(0), 1, Reason::DeadlineMissed),
                (78, Some(1), 0, Reason::Headroom),
            ]
        );
        assert_eq!(counts[2], 0);
        // Not known (a CUDA element has no such signal): the 1.67 stands, and the learned
        // rung, predicted at 43 ms, is never tried again.
        let (switches, _) = one_hiccup_run(false);
        assert_eq!(
            switches,
            vec![
                (0, None, 0, Reason::Initial),
                (21, Some(0), 1, Reason::DeadlineMissed),
            ]
        );
    }

    #[test]
    fn a_warm_up_across_a_thread_change_is_seeded_at_the_load_it_was_measured_at() {
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        live.scheduler.set_cpu(Some(CpuConfig {
            cores: 2,
            threads: 2,
            adapt: true,
        }));
        let warm_up = live.scheduler.take_warm_up().unwrap();
        // another process takes a core while the warm-up (on 2 threads) runs: one thread
        let busy = |t: u64| t;
        for k in 0..20u64 {
            let t = k * PERIOD;
            live.scheduler.cpu_threads(Some(CpuSample {
                at: t,
                busy: busy(t),
                own: 0,
            }));
        }
        assert_eq!(live.scheduler.threads(), Some(1));
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[(0, vec![ms(20); 5]), (1, vec![ms(2); 5])],
        );
        // 20 ms on 2 threads is 40 ms on one
        assert_eq!(live.scheduler.policy.predicted_cost(0), Some(ms(40)));
        assert_eq!(live.scheduler.policy.predicted_cost(1), Some(ms(4)));
    }

    #[test]
    fn a_cold_first_frame_is_no_load_reference_for_a_warm_up() {
        // the stream's first frame on the weight-free rung is cold (8 ms, then 2 ms); the warm-up
        // measures the learned rung at 60 ms, over the 38 ms budget: no climb to it
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        let warm_up = live.scheduler.take_warm_up().unwrap();
        live.run(15, |k, v| if k == 0 { [60, 8][v] } else { [60, 2][v] });
        let load = live.scheduler.policy.cost_model().load();
        assert!((0.9..=1.1).contains(&load), "load {load}");
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[(1, vec![ms(2); 5]), (0, vec![ms(60); 5])],
        );
        let (switches, counts) = live.run(20, |_, v| [60, 2][v]);
        assert_eq!(switches, vec![]);
        assert_eq!(counts, vec![0, 20, 0]);
    }

    #[test]
    fn frames_slowed_by_the_elements_own_warm_up_do_not_scale_its_costs() {
        // x2 bench: beside the warm-up the weight-free frames took 2.2x as long; read as the load,
        // `finish_warm_up` scaled the learned rung's 20-24 ms to 44-53 ms and the stream stayed on
        // the weight-free rung for 2.5 s. One of them even missed here (a 70 ms frame). The
        // warm-up's own contention is no load: the learned rung is chosen at its end.
        let mut live = Live::new(&["learned", "bicubic"], &choice());
        let warm_up = live.scheduler.take_warm_up().unwrap();
        live.run(15, |k, v| match k {
            0 | 1 => [20, 1][v],
            7 => [20, 70][v],
            _ => [20, 3][v],
        });
        live.scheduler.finish_warm_up(
            warm_up.generation,
            &[(1, vec![ms(1); 5]), (0, vec![ms(21); 5])],
        );
        let (switches, counts) = live.run(20, |_, v| [20, 1][v]);
        assert_eq!(switches, vec![(15, Some(1), 0, Reason::Measured)]);
        assert_eq!(counts[0], 20);
    }

    #[test]
    fn drops_what_even_the_lightest_rung_cannot_make_and_remeasures() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[100, 70]);
        let (switches, counts) = live.run(40, |_, v| [100, 70][v]);
        assert_eq!(switches, vec![(0, None, 1, Reason::Initial)]);
        // 1 frame in 13 runs anyway to re-measure; the rest are dropped and counted.
        assert_eq!(counts, vec![0, 3, 37]);
        let stats = live.scheduler.stats().stats;
        assert_eq!((stats.processed, stats.dropped), (3, 37));
    }

    #[test]
    fn a_fixed_variant_never_adapts_and_bounds_limit_the_ladder() {
        let fixed = RungChoice {
            variant: "learned".into(),
            ..choice()
        };
        let mut live = Live::new(&["learned", "medium", "bicubic"], &fixed).warmed(&[60, 20, 2]);
        let (switches, counts) = live.run(20, |_, v| [60, 20, 2][v]);
        assert_eq!(switches, vec![(0, None, 0, Reason::Fixed)]);
        // never moved: late frames run, and those already past the sink's lateness are dropped
        assert_eq!(counts, vec![14, 0, 0, 6]);
        let capped = RungChoice {
            max_variant: "medium".into(),
            ..choice()
        };
        let mut live = Live::new(&["learned", "medium", "bicubic"], &capped).warmed(&[5, 3, 2]);
        let (switches, counts) = live.run(100, |_, v| [5, 3, 2][v]);
        assert_eq!(switches, vec![(0, None, 1, Reason::Initial)]);
        assert_eq!(
            counts,
            vec![0, 100, 0, 0],
            "the best rung fits but is out of bounds"
        );
        // The bound lifted while playing: chosen afresh at the next frame.
        let names = ["learned", "medium", "bicubic"];
        live.scheduler
            .set_config(policy_config(&names, 4, &choice()).unwrap());
        // the rung the bound let in is measured (the element's warm-up before the next frame)
        let warm_up = live.scheduler.take_warm_up().expect("the rung let in");
        assert_eq!(warm_up.order, vec![0]);
        live.scheduler
            .finish_warm_up(warm_up.generation, &[(0, vec![ms(5); 5])]);
        let (switches, _) = live.run(1, |_, v| [5, 3, 2][v]);
        assert_eq!(switches, vec![(100, Some(1), 0, Reason::Settings)]);
    }

    #[test]
    fn not_live_keeps_every_frame_on_the_cheapest_rung_when_nothing_fits() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[100, 70]);
        live.timing.live = false;
        let (switches, counts) = live.run(20, |_, v| [100, 70][v]);
        assert_eq!(switches, vec![(0, None, 1, Reason::Initial)]);
        assert_eq!(
            counts,
            vec![0, 20, 0],
            "a file loses no frame for being slow"
        );
    }

    #[test]
    fn upstream_qos_lowers_the_rung_and_drops_frames_it_reports_late() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[25, 2]);
        live.run(5, |_, v| [25, 2][v]);
        assert_eq!(live.scheduler.active_name(), "learned");
        // The sink reports it renders at 1/3 of real time, the last frame 200 ms late.
        for _ in 0..5 {
            live.scheduler.on_qos(3.0, 200 * MS as i64, 4 * PERIOD);
        }
        // Frames 5..9 (running time 200..360 ms) are at or before the earliest time the sink
        // can still show (4 x 40 + 200 ms): dropped. Then the proportion, which shrinks
        // the budget 3x, takes the stream down to the bicubic rung.
        let (switches, counts) = live.run(10, |_, v| [25, 2][v]);
        assert_eq!(switches, vec![(10, Some(0), 1, Reason::QosProportion)]);
        assert_eq!(counts, vec![0, 5, 5]);
        assert_eq!(live.scheduler.active_name(), "bicubic");
        assert_eq!(live.scheduler.stats().stats.dropped, 5);
        live.scheduler.restart_time();
        assert_eq!(live.scheduler.stats().qos_proportion, 1.0);
    }

    #[test]
    fn a_restart_forgets_the_old_time_axis_but_keeps_the_costs() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[25, 2]);
        // 60 s of stream on the learned rung; then the sink reports frames late and slow: the
        // frames up to the time it allows are dropped, the rest run on bicubic.
        live.run(1500, |_, v| [25, 2][v]);
        for _ in 0..5 {
            live.scheduler.on_qos(3.0, 200 * MS as i64, 1499 * PERIOD);
        }
        let (switches, counts) = live.run(10, |_, v| [25, 2][v]);
        assert_eq!(switches, vec![(1505, Some(0), 1, Reason::QosProportion)]);
        assert_eq!(counts, vec![0, 5, 5]);
        // Stop and start: running time begins at 0 again. Nothing of the old run's QoS drops
        // a frame, and the climb is not held back by the old run's probe and climb times.
        live.scheduler.restart_time();
        (live.frame, live.now) = (0, 0);
        let (switches, counts) = live.run(100, |_, v| [25, 2][v]);
        assert_eq!(counts[2], 0, "no frame is dropped for the old run's QoS");
        assert_eq!(switches, vec![(50, Some(1), 0, Reason::Headroom)]);
        assert_eq!(live.scheduler.stats().stats.processed, 1500 + 5 + 100);
    }

    #[test]
    fn a_warm_up_for_another_size_is_not_used_and_the_new_size_gets_its_own() {
        let names = vec!["learned".to_string(), "bicubic".to_string()];
        let config = policy_config(&["learned", "bicubic"], 4, &choice()).unwrap();
        let mut scheduler = Scheduler::default();
        scheduler.negotiate(names.clone(), 4, SIZE, config.clone(), Some(ms(40)));
        let stale = scheduler.take_warm_up().unwrap();
        let big = FrameSize {
            width: 640,
            height: 360,
        };
        scheduler.negotiate(names, 4, big, config, Some(ms(40)));
        scheduler.finish_warm_up(stale.generation, &[(0, vec![ms(10); 5])]);
        assert_eq!(scheduler.stats().predicted, vec![None, None]);
        let fresh = scheduler.take_warm_up().expect("the new size is measured");
        assert_eq!(fresh.order, vec![1, 0]);
        scheduler.finish_warm_up(fresh.generation, &[(0, vec![ms(40); 5])]);
        assert!(scheduler.stats().predicted[0].is_some());
    }

    #[test]
    fn stats_count_for_the_life_of_the_element_across_ladders() {
        let mut live = Live::new(&["learned", "bicubic"], &choice()).warmed(&[25, 2]);
        live.run(30, |_, v| [25, 2][v]);
        // scale=2: another ladder, a new policy; the counters go on.
        let x2 = vec!["small".to_string(), "bicubic".to_string()];
        let config = policy_config(&["small", "bicubic"], 2, &choice()).unwrap();
        live.scheduler
            .negotiate(x2.clone(), 2, SIZE, config.clone(), Some(ms(40)));
        live.names = x2.clone();
        live.run(10, |_, v| [10, 1][v]);
        let view = live.scheduler.stats();
        assert_eq!(view.stats.processed, 40);
        assert_eq!(view.names, x2);
        // per rung, the frames of the rungs this ladder has (the x4 rung ran the first 30); no
        // warm-up ran for it here, so it starts on bicubic and probes `small` at once
        let frames: Vec<u64> = view.stats.per_variant.iter().map(|v| v.frames).collect();
        assert_eq!(frames, vec![1, 9]);
        // Another bundle: its rungs start unmeasured, the counters still go on.
        live.scheduler.forget_ladder();
        live.scheduler.negotiate(x2, 2, SIZE, config, Some(ms(40)));
        assert_eq!(live.scheduler.stats().predicted, vec![None, None]);
        assert_eq!(live.scheduler.stats().stats.processed, 40);
    }

    /// A frame's plan and clock at clock time `now_ms` for the frame captured at `rt_ms`.
    fn plan_at(live: &mut Live, rt_ms: u64, now_ms: u64) -> (FramePlan, FrameClock) {
        let times = FrameTimes {
            running_time: Some(rt_ms * MS),
            clock_now: Some(now_ms * MS),
            monotonic_now: 0,
            buffer_duration: None,
        };
        let clock = live.scheduler.clock(times, live.timing);
        (live.scheduler.plan(&clock), clock)
    }

    #[test]
    fn a_live_learned_frame_is_given_up_on_when_the_sink_would_no_longer_show_it() {
        let mut live = Live::new(&["heavy", "light", "bicubic"], &choice()).warmed(&[30, 18, 3]);
        for _ in 0..5 {
            live.step(|v| [30, 18, 3][v]);
        }
        let rt = live.frame * 40;
        let (plan, clock) = plan_at(&mut live, rt, rt);
        assert_eq!((plan.decision.variant, plan.decision.drop), (0, false));
        // out by rt + 40 ms (the latency), shown until 20 ms after (max-lateness); the scaler's
        // 3 ms and the 2 ms margin before that
        assert_eq!(
            live.scheduler.rescue_after(&plan, &clock, 2),
            Some(ms(40 + 20 - 3 - 2))
        );
        // planned 10 ms into its budget: 10 ms less
        let (mut plan, clock) = plan_at(&mut live, rt, rt + 10);
        plan.decision.variant = 1;
        assert_eq!(
            live.scheduler.rescue_after(&plan, &clock, 2),
            Some(ms(30 + 20 - 5))
        );
        // a frame run 12 ms past its deadline: the 8 ms of lateness left, less the 5
        let (mut plan, clock) = plan_at(&mut live, rt, rt + 52);
        plan.decision.variant = 1;
        plan.decision.drop = false;
        assert_eq!(live.scheduler.rescue_after(&plan, &clock, 2), Some(ms(3)));
        // never for the stand-in's own frame, nor a drop
        let (mut plan, clock) = plan_at(&mut live, rt, rt);
        plan.decision.variant = 2;
        assert_eq!(live.scheduler.rescue_after(&plan, &clock, 2), None);
        plan.decision.variant = 0;
        plan.decision.drop = true;
        assert_eq!(live.scheduler.rescue_after(&plan, &clock, 2), None);
        // a sink that shows no late frame: not before the end of the budget the rung fitted
        let strict = RungChoice {
            max_lateness: Duration::ZERO,
            ..choice()
        };
        let mut live = Live::new(&["heavy", "light", "bicubic"], &strict).warmed(&[30, 18, 3]);
        live.step(|v| [30, 18, 3][v]);
        let (mut plan, clock) = plan_at(&mut live, 40, 40);
        plan.decision.variant = 0;
        assert_eq!(live.scheduler.rescue_after(&plan, &clock, 2), Some(ms(38)));
    }

    #[test]
    fn a_frame_given_up_on_at_once_reads_as_no_faster_than_its_rung() {
        let mut live = Live::new(&["heavy", "light", "bicubic"], &choice()).warmed(&[30, 18, 3]);
        for _ in 0..5 {
            live.step(|v| [30, 18, 3][v]);
        }
        let before = live.scheduler.stats();
        // frames planned with no time left, given up on after 0.1 ms, a window's worth
        for _ in 0..40 {
            let rt = live.frame * 40;
            let (plan, _) = plan_at(&mut live, rt, rt);
            assert!(!plan.decision.drop);
            live.scheduler
                .record_rescued(0, Duration::from_micros(100), 2, ms(3));
            live.frame += 1;
        }
        let after = live.scheduler.stats();
        assert!(
            after.load >= before.load,
            "{} -> {}",
            before.load,
            after.load
        );
        assert!(
            after.predicted[0] >= before.predicted[0],
            "{:?} -> {:?}",
            before.predicted[0],
            after.predicted[0]
        );
        assert_eq!((after.stats.rescued, after.stats.misses), (40, 40));
    }

    #[test]
    fn frames_are_waited_for_when_not_live_or_when_the_rung_is_the_users_choice() {
        let costs = [30, 18, 3];
        let mut live = Live::new(&["heavy", "light", "bicubic"], &choice()).warmed(&costs);
        live.step(|v| costs[v]);
        live.timing.live = false;
        let (plan, clock) = plan_at(&mut live, 40, 40);
        assert!(!clock.is_live());
        assert_eq!(live.scheduler.rescue_after(&plan, &clock, 2), None);
        for choice in [
            RungChoice {
                variant: "heavy".into(),
                ..choice()
            },
            RungChoice {
                adaptive: false,
                ..choice()
            },
            RungChoice {
                min_variant: "light".into(),
                ..choice()
            },
        ] {
            let mut live = Live::new(&["heavy", "light", "bicubic"], &choice).warmed(&costs);
            live.step(|v| costs[v]);
            let (plan, clock) = plan_at(&mut live, 40, 40);
            assert!(clock.is_live() && !plan.decision.drop && plan.decision.variant != 2);
            assert_eq!(
                live.scheduler.rescue_after(&plan, &clock, 2),
                None,
                "{choice:?}"
            );
        }
    }
}
