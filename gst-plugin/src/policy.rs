// SPDX-License-Identifier: MPL-2.0
//! Deadline policy of `lightsrscale`: which ladder variant runs each frame, and when to drop.
//!
//! Pure logic: no GStreamer types and no clock reads. The element passes every time in:
//! points in time as `u64` nanoseconds on one monotonic axis (running time of the pipeline
//! clock in a live pipeline), spans as [`Duration`]. That keeps the policy deterministic and
//! unit-testable with scripted cost traces.
//!
//! The ladder is indexed best / heaviest first (index 0) to lightest last, as in the bundle
//! manifest. The policy never trusts that order for cost: a rung is "lighter" only if the
//! [`CostModel`] measured it so, and a rung that measures costlier than a better rung
//! ("dominated") is never a target.
//!
//! Per frame the element calls [`DeadlinePolicy::decide`] with the frame's [`FrameBudget`],
//! runs (or drops) what it is told, then calls [`DeadlinePolicy::record`] with the measured
//! cost. Upstream QoS events go to [`DeadlinePolicy::on_qos`].
//!
//! Behaviour:
//! - **Down at once.** After a deadline miss, or when the active variant is predicted not to
//!   fit, switch to the best variant measured cheaper and predicted to fit (several rungs if
//!   needed). A miss also raises the machine-load estimate to the slowdown it revealed, so the
//!   rungs below are predicted under the new load, not the old one.
//! - **Up slowly.** Climb one (non-dominated) rung only after it has been predicted to fit with
//!   `headroom` for `sustain`, and a probe frame run on it measured that headroom. Probes run at
//!   most once per `probe_interval`. Falling back within one sustain period of a climb doubles
//!   the sustain period (up to 8x), so a rung at the edge does not oscillate. A rung held for
//!   1.5 s that one late frame took out (`deadline-missed`), and that fits with headroom again
//!   within 1 s (a spike, not a load), is climbed back to after a quarter of the period.
//! - **Catch up.** The active variant is chosen for the frame duration (what is sustainable);
//!   a frame that is behind (queued after a slow one, less than a frame duration left) runs
//!   the best cheaper variant that makes its own deadline, or is dropped, without a switch.
//! - **Drop** when even the cheapest allowed rung cannot make the deadline, when the frame is
//!   already late, or when upstream QoS says it is (as `GstBaseTransform` does); every
//!   `remeasure_after_drops` consecutive drops one frame runs anyway to re-measure the load.
//! - **QoS proportion** above 1 (smoothed) shrinks the budget by that factor and blocks climbs.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

/// Costs kept per variant and frame size for the high percentile.
const COST_WINDOW: usize = 32;
/// EWMA weight of a new cost sample.
const COST_ALPHA: f64 = 0.2;
/// EWMA weight of a new machine-load sample.
const LOAD_ALPHA: f64 = 0.2;
/// Quantile used as the conservative cost prediction.
const COST_QUANTILE: f64 = 0.95;
/// Costs kept per variant for the reported p95.
const STATS_WINDOW: usize = 256;
/// EWMA weight of a new QoS proportion.
const QOS_ALPHA: f64 = 0.25;
/// Smoothed QoS proportion above which downstream asks for lower quality.
const QOS_PRESSURE: f64 = 1.05;
/// Largest multiplier of the sustain period after failed climbs.
const MAX_CLIMB_BACKOFF: u32 = 8;
/// A rung that ran this long before a fall-back is returned to after a shorter sustain period
/// (a rung that fell back sooner after its climb is at the edge: see the backoff)...
const QUICK_RETURN_HELD: Duration = Duration::from_millis(1500);
/// ... when it fits with headroom again within this time of the fall-back (a spike, not a load).
const QUICK_RETURN_SPIKE: Duration = Duration::from_secs(1);
/// The sustain period of such a return, as a fraction of `sustain`.
const QUICK_RETURN_SHARE: f64 = 0.25;
/// A warm-up run over this many times the median of its rung's runs is an outlier ([`VariantCost::seed`]).
const SEED_OUTLIER: f64 = 2.0;
/// Warm-up runs a seeded window keeps at least.
const SEED_KEEP: usize = 3;
/// Bounds of the machine-load estimate (1 = as fast as when first measured); it never goes
/// below the baseline ([`CostModel::set_load`]) either.
const LOAD_RANGE: (f64, f64) = (0.05, 50.0);
/// On a quiet machine, a better rung predicted not to fit is re-measured after this long, then
/// after twice as long each time it still does not fit, up to [`RECHECK_MAX`].
const RECHECK_FIRST: Duration = Duration::from_secs(2);
const RECHECK_MAX: Duration = Duration::from_secs(60);
/// Rungs predicted above this multiple of the budget are not re-measured (hopeless).
const RECHECK_REACH: f64 = 2.0;

fn nanos(span: Duration) -> f64 {
    span.as_nanos() as f64
}

fn span(ns: f64) -> Duration {
    if ns >= u64::MAX as f64 {
        Duration::MAX
    } else {
        Duration::from_nanos(ns.max(0.0).round() as u64)
    }
}

/// The `q` quantile (nearest rank) of `samples`; `None` when empty.
fn quantile(samples: impl Iterator<Item = f64>, q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ewma(old: f64, sample: f64, alpha: f64) -> f64 {
    old + alpha * (sample - old)
}

/// Negotiated input frame size; costs are kept per size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

impl FrameSize {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    fn pixels(self) -> f64 {
        f64::from(self.width.max(1)) * f64::from(self.height.max(1))
    }
}

/// Measured cost of one variant at one frame size. Samples are stored divided by the
/// machine-load estimate at the time they were taken, so that each is rescaled by the load
/// change since: a rung measured before a load spike is predicted slower after it.
#[derive(Clone, Debug, Default)]
struct VariantCost {
    /// EWMA of load-normalised costs, ns; `None` until measured or extrapolated.
    mean: Option<f64>,
    /// Reference cost (at load 1) the load estimate is measured by: the warm-up median, or
    /// the first sample; it follows the rung's frames only while the machine is known to be
    /// quiet ([`CostModel::set_quiet`]). Otherwise fixed: a network's cost depends on the
    /// frame size, not on the content, so what changes later is the machine, and that is the
    /// load estimate's job (letting both move would let them trade against each other and
    /// drift).
    base: f64,
    /// Last load-normalised costs, ns.
    window: VecDeque<f64>,
    /// Guessed from another frame size, not measured at this one.
    extrapolated: bool,
    /// `base` is the rung's first frame in the stream, a cold run (the streaming thread's first
    /// use of GStreamer's scaler or of libtorch at this size): the next frame replaces it.
    provisional: bool,
    /// `mean` and `window` hold only that cold first frame: the next frame replaces it there,
    /// whatever else it says. Kept, a cold first run of GStreamer's scaler (1.6 ms against its
    /// 25 us) stayed the weight-free rung's p95 for a window of frames: a miss of the learned
    /// rung above found nothing cheaper and stayed on it, its frames made by the scaler behind
    /// the given-up run, and the stream never stepped down (`tests/deadline.rs`, a CI run).
    cold: bool,
}

impl VariantCost {
    /// Conservative cost under `load`: max(EWMA, p95) of the normalised costs, times `load`.
    fn predicted(&self, load: f64) -> Option<f64> {
        let mean = self.mean?;
        let tail = quantile(self.window.iter().copied(), COST_QUANTILE).unwrap_or(mean);
        Some(mean.max(tail) * load)
    }

    fn observe(&mut self, cost: f64, load: f64) {
        if self.extrapolated {
            *self = Self::default();
        }
        let normalised = cost / load;
        match self.mean {
            None => {
                self.mean = Some(normalised);
                self.base = normalised;
                self.provisional = true;
                self.cold = true;
            }
            Some(_) if std::mem::take(&mut self.cold) => {
                self.mean = Some(normalised);
                self.window.clear();
            }
            Some(mean) => {
                self.mean = Some(ewma(mean, normalised, COST_ALPHA));
            }
        }
        self.window.push_back(normalised);
        if self.window.len() > COST_WINDOW {
            self.window.pop_front();
        }
    }

    /// From a warm-up's timed runs. A run over [`SEED_OUTLIER`] times the median is left out of
    /// the window (while [`SEED_KEEP`] runs remain): the warm-up shares the cores with the
    /// stream's own frames, and one such run (x4 `dense-pruned`: 53.7 ms among 18-23 ms) was the
    /// window's p95, so the rung never fitted the budget and the stream, once it fell, fell past it
    /// to the weight-free rung for the rest of a quiet half. Real frames refill the window.
    fn seed(samples: &[f64], load: f64) -> Self {
        let median = quantile(samples.iter().copied(), 0.5).unwrap_or_default();
        let typical: Vec<f64> = samples
            .iter()
            .copied()
            .filter(|&c| c <= median * SEED_OUTLIER)
            .collect();
        let kept = if typical.len() >= SEED_KEEP.min(samples.len()) {
            typical
        } else {
            samples.to_vec()
        };
        let recent = kept.iter().rev().take(COST_WINDOW).rev();
        Self {
            mean: Some(median / load),
            base: median / load,
            window: recent.map(|c| c / load).collect(),
            extrapolated: false,
            provisional: false,
            cold: false,
        }
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            mean: self.mean.map(|m| m * factor),
            base: self.base * factor,
            window: self.window.iter().map(|c| c * factor).collect(),
            extrapolated: true,
            provisional: false,
            cold: false,
        }
    }
}

/// What a cost sample says about the machine load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// An ordinary frame (or a probe): averaged into the load estimate.
    Routine,
    /// The frame missed its deadline: the load is at least what this sample shows.
    Missed,
    /// A frame run only to re-measure after drops: the load is what this sample shows.
    Remeasure,
    /// An ordinary frame while this element's warm-up measures other rungs on the same cores:
    /// what it shows is that contention, not the machine's load. The stream's weight-free
    /// frames read a load of 1.9-2.2 beside a warm-up, the warm-up's costs were then scaled to
    /// that load, and its choice was the weight-free rung (2.5 s of an x2 start).
    Beside,
}

/// Per-variant, per-frame-size cost model with a shared machine-load estimate.
///
/// Each measured cost updates the variant's EWMA and p95 window, and a load index (measured
/// cost / the variant's intrinsic cost) shared by all variants. A variant that has not run
/// lately is predicted as its last measurement times the load change since, so after a
/// spike measured on one rung the others are predicted slower too.
#[derive(Clone, Debug)]
pub struct CostModel {
    variants: usize,
    size: FrameSize,
    table: HashMap<FrameSize, Vec<VariantCost>>,
    load: f64,
    /// The load without the jump a miss makes (a plain EWMA): what a frame is expected to
    /// cost, as opposed to the conservative prediction that chooses the rung.
    typical_load: f64,
    /// The load of an otherwise idle machine: 1, or what the element's thread count costs
    /// ([`CostModel::set_load`]).
    baseline: f64,
    /// The element knows that no other process uses the CPUs ([`CostModel::set_quiet`]).
    quiet: bool,
}

impl CostModel {
    pub fn new(variants: usize, size: FrameSize) -> Self {
        let mut table = HashMap::new();
        table.insert(size, vec![VariantCost::default(); variants]);
        Self {
            variants,
            size,
            table,
            load: 1.0,
            typical_load: 1.0,
            baseline: 1.0,
            quiet: false,
        }
    }

    pub fn variants(&self) -> usize {
        self.variants
    }

    pub fn frame_size(&self) -> FrameSize {
        self.size
    }

    /// Machine-load index: 1 = as fast as at the first measurement, 2 = twice as slow.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Re-keys the model on a new negotiated size. Costs of sizes seen before are kept; a new
    /// size starts from the nearest known size scaled by the pixel ratio, marked extrapolated
    /// (replaced by the first real measurement). Returns whether the size changed.
    pub fn set_frame_size(&mut self, size: FrameSize) -> bool {
        if size == self.size {
            return false;
        }
        if !self.table.contains_key(&size) {
            let prior = self.extrapolate_to(size);
            self.table.insert(size, prior);
        }
        self.size = size;
        true
    }

    fn extrapolate_to(&self, size: FrameSize) -> Vec<VariantCost> {
        let nearest = self
            .table
            .iter()
            .filter(|(_, costs)| costs.iter().any(|c| c.mean.is_some() && !c.extrapolated))
            .min_by(|(a, _), (b, _)| {
                let da = (a.pixels() / size.pixels()).ln().abs();
                let db = (b.pixels() / size.pixels()).ln().abs();
                da.total_cmp(&db)
            });
        match nearest {
            Some((known, costs)) => {
                let factor = size.pixels() / known.pixels();
                costs.iter().map(|c| c.scaled(factor)).collect()
            }
            None => vec![VariantCost::default(); self.variants],
        }
    }

    /// Replaces the variant's costs at the current size by warm-up measurements (taken
    /// after the first, compiling runs). Empty `samples` leave it unmeasured.
    pub fn seed(&mut self, variant: usize, samples: &[Duration]) {
        let samples: Vec<f64> = samples.iter().map(|s| nanos(*s)).collect();
        let seeded = if samples.is_empty() {
            VariantCost::default()
        } else {
            VariantCost::seed(&samples, self.load)
        };
        if let Some(slot) = self.costs_mut().get_mut(variant) {
            *slot = seeded;
        }
    }

    /// Records one measured cost. A missed deadline raises the load estimate at once to the
    /// slowdown this sample shows (a miss is evidence enough; averaging it away would cost a
    /// second miss one rung lower); a deliberate re-measurement sets it outright.
    pub fn observe(&mut self, variant: usize, cost: Duration, evidence: Evidence) {
        let cost = nanos(cost);
        let load = self.load;
        let Some(entry) = self.costs().get(variant) else {
            return;
        };
        let measured = entry.mean.is_some() && !entry.extrapolated && entry.base > 0.0;
        if evidence == Evidence::Beside {
            // the rung's own costs only (below): neither the load nor a reference, which would
            // be the warm-up's contention (a provisional reference waits for the next frame)
        } else if measured && entry.provisional {
            // the reference was a cold first frame: this one is the reference, and says nothing
            // about the load (against the cold one, every frame after it read as a load of
            // 0.3-0.5, and a warm-up's costs, seen at that load, put a rung that takes 60 ms
            // at 30)
            let slot = &mut self.costs_mut()[variant];
            slot.base = cost / load;
            slot.provisional = false;
        } else if measured && self.quiet && evidence == Evidence::Routine {
            // Nothing else runs: the machine is at its baseline, so what this frame cost is
            // the rung's own cost. The base follows it and the load returns to the baseline.
            let base = ewma(entry.base, cost / self.baseline, LOAD_ALPHA);
            self.costs_mut()[variant].base = base;
            self.load = ewma(self.load, self.baseline, LOAD_ALPHA);
            self.typical_load = ewma(self.typical_load, self.baseline, LOAD_ALPHA);
        } else if measured {
            let ratio = cost / entry.base;
            let next = match evidence {
                Evidence::Routine | Evidence::Beside /* handled above */ => {
                    ewma(load, ratio, LOAD_ALPHA)
                }
                // Quiet, no other process takes the cores: a late frame is its rung's own slow
                // tail (page faults, a scheduler hiccup), which its window keeps, not a machine
                // that became slower. Taken as a load, one 39.6 ms frame of x4 `dense` (25 ms
                // typical) read as 1.5, put `dense-pruned` over the budget too, and the stream
                // spent 2-4 s of a quiet half on the weight-free rung.
                Evidence::Missed if self.quiet => ewma(load, ratio, LOAD_ALPHA),
                Evidence::Missed => ewma(load, ratio, LOAD_ALPHA).max(ratio),
                Evidence::Remeasure => ratio,
            };
            // Never below the baseline: the machine is not faster than idle. A frame that reads
            // so ran faster than its rung's reference, which was taken beside other work (the
            // weight-free rung's first frames run while the warm-up measures the others) or,
            // for a rung the thread count does not slow (GStreamer's scaler), at full threads.
            // Read as a load, it scaled every other rung's prediction down: x4 `dense`, warmed
            // up at 34-44 ms, was predicted at 30 ms with the load at 0.67, climbed to, and missed.
            // What the floor costs: under a baseline above 1 (fewer threads), a rung that slows
            // less than the baseline says is stored low until its window refills; and a machine
            // never known quiet (CUDA) cannot read a warm-up under contention back down. Neither
            // showed in the benchmarks; a quiet machine re-bases every rung it runs.
            let floor = self.baseline; // within LOAD_RANGE (`set_load`)
            self.load = next.clamp(floor, LOAD_RANGE.1);
            let typical = match evidence {
                Evidence::Remeasure => ratio,
                _ => ewma(self.typical_load, ratio, LOAD_ALPHA),
            };
            self.typical_load = typical.clamp(floor, LOAD_RANGE.1);
        }
        let load = self.load;
        self.costs_mut()[variant].observe(cost, load);
    }

    /// Sets the load estimate (and the typical load, and the baseline) to `load` for a reason
    /// known before any frame shows it (the element changed its thread count): every rung's
    /// prediction follows at once, and what frames measured before no longer counts.
    pub fn set_load(&mut self, load: f64) {
        if load.is_finite() && load > 0.0 {
            self.load = load.clamp(LOAD_RANGE.0, LOAD_RANGE.1);
            self.typical_load = self.load;
            self.baseline = self.load;
        }
    }

    /// Whether the element knows that no other process uses the CPUs (from `/proc/stat`; a
    /// CUDA element cannot tell, and leaves it off). While quiet, a routine frame is taken as
    /// the rung's own cost at the baseline load: its base follows it and the load estimate
    /// returns to the baseline. Otherwise the base stays and the load follows the frames.
    ///
    /// Why: a base is a warm-up's median or a first frame. A warm-up runs a rung in a loop with
    /// its buffers in cache, and the stream's frames cost more, by a different factor per rung
    /// (on 2 cores: the weight-free rung 1.0-1.5 ms warm against 2.2-3.0 ms in the stream, the
    /// x4 learned rung 23-28 against 24-29 ms), and one first frame is a poor reference for a
    /// rung that varies by 2x. The cheap rung's frames then read as a load of 1.5-2 on a
    /// quiet machine, every other rung was predicted that much slower, and a stream that fell
    /// back once never climbed again.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A re-measurement of `variant` on a quiet machine, where nothing else ran it for a
    /// while: its estimate becomes this sample (what it measured before may come from a slow
    /// phase of the machine or a warm-up under contention, and on a quiet machine this frame
    /// is its own cost). The load estimate is left alone.
    pub fn recheck(&mut self, variant: usize, cost: Duration) {
        let (cost, load, baseline) = (nanos(cost), self.load, self.baseline);
        if let Some(slot) = self.costs_mut().get_mut(variant) {
            *slot = VariantCost {
                mean: Some(cost / load),
                base: cost / baseline,
                window: VecDeque::from([cost / load]),
                extrapolated: false,
                provisional: false,
                cold: false,
            };
        }
    }

    /// Conservative predicted cost of `variant` at the current size and load.
    pub fn predicted(&self, variant: usize) -> Option<Duration> {
        self.predicted_nanos(variant).map(span)
    }

    /// Whether `variant` has real measurements at the current size.
    pub fn is_measured(&self, variant: usize) -> bool {
        self.costs()
            .get(variant)
            .is_some_and(|c| c.mean.is_some() && !c.extrapolated)
    }

    fn predicted_nanos(&self, variant: usize) -> Option<f64> {
        self.costs().get(variant)?.predicted(self.load)
    }

    /// Its EWMA cost at the current size and (conservative) load, ns.
    fn typical_nanos(&self, variant: usize) -> Option<f64> {
        Some(self.costs().get(variant)?.mean? * self.load)
    }

    /// The fastest of its recent costs (a warm-up's runs, or the frames since) at the current
    /// size and (conservative) load, ns.
    fn fastest_nanos(&self, variant: usize) -> Option<f64> {
        let window = &self.costs().get(variant)?.window; // empty until measured
        let fastest = window.iter().copied().min_by(f64::total_cmp)?;
        Some(fastest * self.load)
    }

    /// Typical cost of `variant` at the current size, ns: its EWMA times the typical load.
    fn expected_nanos(&self, variant: usize) -> Option<f64> {
        Some(self.costs().get(variant)?.mean? * self.typical_load)
    }

    fn costs(&self) -> &[VariantCost] {
        &self.table[&self.size]
    }

    fn costs_mut(&mut self) -> &mut Vec<VariantCost> {
        self.table
            .get_mut(&self.size)
            .expect("current size is always in the table")
    }
}

/// Duration of one frame from a caps framerate; `None` for variable (0/1) or invalid rates.
pub fn frame_duration(fps_n: i32, fps_d: i32) -> Option<Duration> {
    if fps_n <= 0 || fps_d <= 0 {
        return None;
    }
    let nanos = 1_000_000_000u128 * fps_d as u128 / fps_n as u128;
    Some(Duration::from_nanos(nanos as u64))
}

/// Time one frame may take, before the policy's safety margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameBudget {
    /// Time left until the frame's deadline (zero: already late).
    pub remaining: Duration,
    /// Frame duration: the budget of a frame that is not behind, what a variant must fit to
    /// be kept. `remaining` is smaller when frames queue behind a slow one.
    pub period: Option<Duration>,
    /// The frame's running time, compared with upstream QoS's earliest time.
    pub running_time: Option<u64>,
    /// Time until the frame's own deadline (live: may exceed `remaining`, the latency absorbs
    /// one slow frame): what decides between running a rung that does not fit and dropping.
    pub until_deadline: Duration,
    /// How far past its deadline the frame already is (live; zero otherwise). A frame late by
    /// less than the sink's `max-lateness` is still shown, so it is not dropped for that alone.
    pub overdue: Duration,
    /// Whether the policy may drop the frame for lack of time. Live: a late frame is
    /// worthless. Not live ([`FrameBudget::keeping_every_frame`]): every frame is wanted, the
    /// cheapest rung runs when nothing fits, and only downstream QoS drops (as in
    /// `GstBaseTransform`, whose QoS drops only on what the sink reports).
    pub may_drop: bool,
}

impl FrameBudget {
    /// Live pipeline: the frame must leave by `running_time + latency` on the clock, and a
    /// synchronous element cannot sustain more than one frame duration per frame (taking more
    /// because latency allows it only builds a queue), so the budget is the smaller of both.
    pub fn live(
        running_time: u64,
        latency: Duration,
        now: u64,
        frame_duration: Option<Duration>,
    ) -> Self {
        let deadline = running_time.saturating_add(latency.as_nanos() as u64);
        let remaining = Duration::from_nanos(deadline.saturating_sub(now));
        Self {
            remaining: frame_duration.map_or(remaining, |d| remaining.min(d)),
            period: frame_duration,
            running_time: Some(running_time),
            until_deadline: remaining,
            overdue: Duration::from_nanos(now.saturating_sub(deadline)),
            may_drop: true,
        }
    }

    /// Non-live pipeline: the frame duration (from caps, else the buffer's duration) keeps
    /// the stream's rate.
    pub fn non_live(frame_duration: Duration, running_time: Option<u64>) -> Self {
        Self {
            remaining: frame_duration,
            period: Some(frame_duration),
            running_time,
            until_deadline: frame_duration,
            overdue: Duration::ZERO,
            may_drop: true,
        }
    }

    /// No known rate and not live: nothing to keep up with, so every variant fits.
    pub fn unbounded(running_time: Option<u64>) -> Self {
        Self {
            remaining: Duration::MAX,
            period: None,
            running_time,
            until_deadline: Duration::MAX,
            overdue: Duration::ZERO,
            may_drop: true,
        }
    }

    /// The same budget for a frame that must not be dropped for lack of time.
    pub fn keeping_every_frame(self) -> Self {
        Self {
            may_drop: false,
            ..self
        }
    }
}

/// Latency the element should answer in the LATENCY query: one frame duration (what a
/// synchronous element may take per frame), else the worst predicted cost plus the margin.
pub fn processing_latency(
    frame_duration: Option<Duration>,
    worst_predicted: Option<Duration>,
    margin: Duration,
) -> Duration {
    frame_duration
        .or_else(|| worst_predicted.map(|c| c + margin))
        .unwrap_or_default()
}

/// Whether a latency change is worth a latency message: over 10% and over 1 ms.
pub fn latency_changed_materially(old: Duration, new: Duration) -> bool {
    let diff = old.abs_diff(new);
    diff > Duration::from_millis(1) && nanos(diff) > 0.1 * nanos(old.max(new))
}

/// Why the policy decided what it did; `as_str` is the `reason` of the bus message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// First frame: best variant predicted to fit.
    Initial,
    /// The active variant still fits.
    Steady,
    /// A fixed variant is configured (or adaptation is off).
    Fixed,
    /// The active variant left the configured bounds.
    Bounds,
    /// The last frame missed its deadline.
    DeadlineMissed,
    /// The active variant is predicted not to fit.
    PredictedMiss,
    /// Fits the raw budget but not the budget shrunk by downstream QoS proportion.
    QosProportion,
    /// The next better variant fitted with headroom for the sustain period.
    Headroom,
    /// One frame on the next better variant to measure it.
    Probe,
    /// The frame is behind (queued after a slow one): it runs a cheaper variant, or is
    /// dropped, while the active variant stays.
    CatchUp,
    /// Dropping for a while: one frame runs to re-measure the load.
    Remeasure,
    /// The negotiated frame size changed.
    SizeChanged,
    /// The policy settings changed (variant, bounds, adaptive, margin): chosen afresh.
    Settings,
    /// A warm-up off the streaming thread measured the ladder: chosen afresh from its costs,
    /// as the first frame of a stream that is not live is (and once more after the recheck of
    /// the rung above the warm-up's choice).
    Measured,
    /// No frame rate and not live: nothing to keep up with, the best allowed variant runs.
    NoDeadline,
    /// The frame's deadline has already passed.
    AlreadyLate,
    /// Upstream QoS says the frame is late.
    QosLate,
    /// Even the cheapest allowed variant cannot make the deadline.
    NothingFits,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Steady => "steady",
            Reason::Fixed => "fixed",
            Reason::Bounds => "bounds",
            Reason::DeadlineMissed => "deadline-missed",
            Reason::PredictedMiss => "predicted-miss",
            Reason::QosProportion => "qos-proportion",
            Reason::Headroom => "headroom",
            Reason::Probe => "probe",
            Reason::CatchUp => "catch-up",
            Reason::Remeasure => "remeasure",
            Reason::SizeChanged => "size-changed",
            Reason::Settings => "settings",
            Reason::Measured => "measured",
            Reason::NoDeadline => "no-deadline",
            Reason::AlreadyLate => "already-late",
            Reason::QosLate => "qos-late",
            Reason::NothingFits => "nothing-fits",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of the active variant, for the `lightsrscale-variant` element message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantSwitch {
    /// Previous active variant; `None` on the first frame.
    pub from: Option<usize>,
    pub to: usize,
    pub reason: Reason,
    /// Predicted cost of `to` at the time of the switch.
    pub predicted_cost: Option<Duration>,
    /// Effective budget (after margin and QoS proportion).
    pub budget: Duration,
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Variant to run (on a drop: the active variant).
    pub variant: usize,
    pub drop: bool,
    /// A probe frame: `variant` is measured, the active variant does not change.
    pub probe: bool,
    pub reason: Reason,
    pub predicted_cost: Option<Duration>,
    /// Effective budget (after margin and QoS proportion).
    pub budget: Duration,
    /// Set when the active variant changed with this decision.
    pub switch: Option<VariantSwitch>,
}

/// Policy settings; the element maps its properties onto these.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Adapt the variant to the deadline (`adaptive`); when off, run `best_variant`.
    pub adaptive: bool,
    /// A fixed variant (`variant=NAME`): disables adaptation.
    pub fixed_variant: Option<usize>,
    /// Best variant allowed (`max-variant`, smallest index).
    pub best_variant: usize,
    /// Lightest variant allowed (`min-variant`); `None`: the end of the ladder.
    pub lightest_variant: Option<usize>,
    /// Safety margin taken off every budget (`deadline-margin`).
    pub margin: Duration,
    /// A better variant must fit `headroom` times its predicted cost to be climbed to.
    pub headroom: f64,
    /// How long a better variant must fit with headroom before climbing.
    pub sustain: Duration,
    /// Smallest interval between two probe frames.
    pub probe_interval: Duration,
    /// After this many consecutive "nothing fits" drops, one frame runs to re-measure.
    pub remeasure_after_drops: u32,
    /// How late a frame may reach the sink and still be shown (the element passes GStreamer
    /// video sinks' default `max-lateness`, 20 ms): a frame no rung fits still runs if it is
    /// expected within it.
    pub lateness: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            fixed_variant: None,
            best_variant: 0,
            lightest_variant: None,
            margin: Duration::from_millis(2),
            headroom: 1.25,
            sustain: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            remeasure_after_drops: 12,
            lateness: Duration::ZERO,
        }
    }
}

/// Live statistics of one variant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantStats {
    /// Frames processed with it (probes included).
    pub frames: u64,
    pub mean_cost: Option<Duration>,
    pub p95_cost: Option<Duration>,
}

/// Live statistics for the element's read-only properties.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyStats {
    pub active: Option<usize>,
    pub per_variant: Vec<VariantStats>,
    pub processed: u64,
    pub dropped: u64,
    pub switches: u64,
    pub probes: u64,
    pub misses: u64,
    /// Frames the weight-free rung made instead of the planned rung: given up on at their
    /// deadline ([`DeadlinePolicy::record_rescued`]), or planned while such a frame still ran
    /// ([`DeadlinePolicy::record_stand_in`]). Counted in `processed` as well.
    pub rescued: u64,
}

impl PolicyStats {
    /// Adds `other`'s counters (processed, dropped, switches, probes, misses, rescued) to these.
    pub fn add_counters(&mut self, other: &PolicyStats) {
        self.processed += other.processed;
        self.dropped += other.dropped;
        self.switches += other.switches;
        self.probes += other.probes;
        self.misses += other.misses;
        self.rescued += other.rescued;
    }
}

#[derive(Clone, Debug, Default)]
struct VariantTally {
    frames: u64,
    total_nanos: f64,
    recent: VecDeque<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    variant: usize,
    probe: bool,
    remeasure: bool,
    /// A probe that re-measures a rung predicted not to fit ([`Choice::Recheck`]).
    recheck: bool,
    /// Budget of a frame that is not behind, which a probe must fit with headroom.
    sustainable: Duration,
}

/// Climb (step-up) state for the rung above the active one.
#[derive(Clone, Copy, Debug)]
struct Climb {
    /// Since when the next better rung has been predicted to fit with headroom.
    fitting_since: Option<u64>,
    /// A probe measured the next better rung within headroom.
    probe_confirmed: bool,
    last_probe: Option<u64>,
    last_climb: Option<u64>,
    backoff: u32,
    /// When the rung above may be re-measured although predicted not to fit (quiet machine).
    next_recheck: Option<u64>,
    recheck_interval: Duration,
    /// The rung above was rechecked since the last switch: its estimate is a recheck's, which
    /// may be one slow (cold) frame, so it is not judged hopeless by it.
    rechecked: bool,
    /// When the active rung became active.
    active_since: Option<u64>,
    /// The rung the stream fell back from after holding it for [`QUICK_RETURN_HELD`], and when.
    /// If it fits with headroom again within [`QUICK_RETURN_SPIKE`], one spike took it out of a
    /// rung that fits, and the climb back waits a quarter of the sustain period (a stream that
    /// falls back again soon after pays the usual backoff).
    return_to: Option<(usize, u64)>,
}

impl Default for Climb {
    fn default() -> Self {
        Self {
            fitting_since: None,
            probe_confirmed: false,
            last_probe: None,
            last_climb: None,
            backoff: 1,
            next_recheck: None,
            recheck_interval: RECHECK_FIRST,
            rechecked: false,
            active_since: None,
            return_to: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Qos {
    proportion: f64,
    earliest: Option<u64>,
}

impl Default for Qos {
    fn default() -> Self {
        Self {
            proportion: 1.0,
            earliest: None,
        }
    }
}

enum Choice {
    Run(usize, Reason),
    Probe(usize),
    /// A probe of a rung predicted not to fit, to re-measure it (quiet machine only).
    Recheck(usize),
    Drop(usize, Reason),
    /// Keep (or make) `active` the active variant, but run `run` (drop when `None`).
    CatchUp {
        active: usize,
        reason: Reason,
        run: Option<usize>,
    },
}

/// How far a warm-up's costs have been chosen with (see [`DeadlinePolicy::seed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WarmUpChoice {
    /// Nothing pending.
    Done,
    /// A warm-up seeded costs since the last choice: the next adaptive frame chooses afresh.
    Seeded,
    /// The rung those costs chose (or a recheck of them climbed to), still active, the rung
    /// above it not rechecked yet: on a quiet machine that rung is rechecked at once.
    Chosen(usize),
    /// That recheck ran: the next adaptive frame chooses afresh (once) with what it measured.
    Rechecked,
}

/// Chooses per frame the best ladder variant that meets the deadline.
#[derive(Clone, Debug)]
pub struct DeadlinePolicy {
    config: PolicyConfig,
    costs: CostModel,
    active: Option<usize>,
    pending: Option<Pending>,
    miss_pending: bool,
    resized: bool,
    reconfigured: bool,
    /// Where the costs of the last warm-up are in being chosen with.
    warm_up: WarmUpChoice,
    climb: Climb,
    qos: Qos,
    consecutive_drops: u32,
    tallies: Vec<VariantTally>,
    stats: PolicyStats,
    /// Unmeasured rungs are being measured elsewhere (a warm-up): not probed meanwhile.
    measuring_elsewhere: bool,
}

impl DeadlinePolicy {
    /// A policy for a ladder of `variants` rungs (at least one) at frame size `size`.
    pub fn new(variants: usize, size: FrameSize, config: PolicyConfig) -> Self {
        let variants = variants.max(1);
        Self {
            config,
            costs: CostModel::new(variants, size),
            active: None,
            pending: None,
            miss_pending: false,
            resized: false,
            reconfigured: false,
            warm_up: WarmUpChoice::Done,
            climb: Climb::default(),
            qos: Qos::default(),
            consecutive_drops: 0,
            tallies: vec![VariantTally::default(); variants],
            stats: PolicyStats::default(),
            measuring_elsewhere: false,
        }
    }

    /// While a warm-up measures the unmeasured rungs off the streaming thread, no frame probes
    /// them (a probe of a rung of unknown cost may make a frame late).
    pub fn set_measuring_elsewhere(&mut self, measuring: bool) {
        self.measuring_elsewhere = measuring;
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// New settings (live property change): the next adaptive frame chooses its variant
    /// afresh (bounds first), as after a resize.
    pub fn set_config(&mut self, config: PolicyConfig) {
        if config != self.config {
            self.reconfigured = true;
            self.config = config;
        }
    }

    pub fn cost_model(&self) -> &CostModel {
        &self.costs
    }

    /// Seeds a variant's cost at the current size with warm-up measurements. The next adaptive
    /// frame chooses its rung afresh from the costs known then ([`Reason::Measured`]): a live
    /// stream waits on its lightest rung for the warm-up, and the warm-up's five timed runs per
    /// rung are the evidence a climb would otherwise wait a sustain period and a probe for. On
    /// a quiet machine the rung above that choice is then rechecked on the next frame if one of
    /// its warm-up runs fitted (the warm-up ran beside the stream), the frame after it chooses
    /// afresh once more, and a climb there rechecks the rung above in turn.
    pub fn seed(&mut self, variant: usize, samples: &[Duration]) {
        self.costs.seed(variant, samples);
        if !samples.is_empty() && variant < self.costs.variants() {
            self.warm_up = WarmUpChoice::Seeded;
        }
    }

    /// See [`CostModel::set_load`].
    pub fn set_load(&mut self, load: f64) {
        self.costs.set_load(load);
    }

    /// See [`CostModel::set_quiet`].
    pub fn set_quiet(&mut self, quiet: bool) {
        self.costs.set_quiet(quiet);
    }

    /// New negotiated size: costs are re-keyed, the variant is re-chosen on the next frame.
    pub fn set_frame_size(&mut self, size: FrameSize) {
        if self.costs.set_frame_size(size) {
            self.resized = true;
            self.climb = Climb {
                backoff: self.climb.backoff,
                recheck_interval: self.climb.recheck_interval,
                ..Climb::default()
            };
        }
    }

    pub fn active_variant(&self) -> Option<usize> {
        self.active
    }

    pub fn predicted_cost(&self, variant: usize) -> Option<Duration> {
        self.costs.predicted(variant)
    }

    /// Smoothed downstream QoS proportion (1 = keeping up).
    pub fn qos_proportion(&self) -> f64 {
        self.qos.proportion
    }

    /// Upstream QoS event: `jitter_ns` > 0 means the buffer at running time `timestamp` was
    /// that late at the sink. Frames up to the earliest time (timestamp + jitter, as in
    /// `GstBaseTransform`) are dropped; the proportion is smoothed into a long-term quality
    /// signal. Not one more jitter ahead, as `GstVideoDecoder` skips: the frames behind a late
    /// one catch up on a cheaper rung (`Reason::CatchUp`), and a frame past the sink's
    /// lateness is dropped here anyway (`Reason::AlreadyLate`); a decoder's second jitter
    /// dropped frames that would have been shown on time (8 after a 206 ms frame on 2 cores).
    pub fn on_qos(&mut self, proportion: f64, jitter_ns: i64, timestamp: u64) {
        if proportion.is_finite() && proportion > 0.0 {
            self.qos.proportion = ewma(self.qos.proportion, proportion, QOS_ALPHA);
        }
        self.qos.earliest = Some(timestamp.saturating_add_signed(jitter_ns));
    }

    /// Forgets QoS state (part of [`DeadlinePolicy::restart_time`]).
    pub fn reset_qos(&mut self) {
        self.qos = Qos::default();
    }

    /// The stream's time axis starts again (stop / start, flush): forgets what is tied to
    /// running times (QoS, probe and climb times, a pending miss or probe, the drop streak) and
    /// keeps what was learned (costs, active rung, the climb back-off).
    pub fn restart_time(&mut self) {
        self.reset_qos();
        self.climb = Climb {
            backoff: self.climb.backoff,
            recheck_interval: self.climb.recheck_interval,
            ..Climb::default()
        };
        self.pending = None;
        self.miss_pending = false;
        self.consecutive_drops = 0;
    }

    /// The decision for the next frame. `now` is on the same axis as the frame running times.
    pub fn decide(&mut self, now: u64, frame: FrameBudget) -> Decision {
        self.pending = None;
        let budget = self.effective_budget(frame.remaining);
        let period = frame.period.unwrap_or(frame.remaining).max(frame.remaining);
        let sustainable = self.effective_budget(period);
        let choice = if self.is_qos_late(frame) {
            Choice::Drop(self.active.unwrap_or(0), Reason::QosLate)
        } else if frame.remaining.is_zero()
            && frame.may_drop
            && frame.overdue >= self.config.lateness
        {
            // Past its deadline and past the sink's lateness too: it would not be shown.
            Choice::Drop(self.active.unwrap_or(0), Reason::AlreadyLate)
        } else if let Some(fixed) = self.fixed_variant() {
            Choice::Run(fixed, Reason::Fixed)
        } else if frame.period.is_none() && frame.remaining == Duration::MAX {
            Choice::Run(self.bounds().0, Reason::NoDeadline)
        } else {
            let choice = self.adaptive_choice(now, period, sustainable);
            let choice = self.fit_to_frame(choice, budget, sustainable);
            if frame.may_drop {
                self.run_if_likely_on_time(choice, frame)
            } else {
                self.run_instead_of_dropping(choice)
            }
        };
        self.apply(now, choice, (budget, sustainable))
    }

    /// Reports the measured cost of the frame last decided.
    pub fn record(&mut self, variant: usize, cost: Duration, deadline_met: bool) {
        if variant >= self.costs.variants() {
            return;
        }
        self.record_run(variant, cost, deadline_met);
        self.tally(variant, cost);
    }

    /// Whether the element may make a frame with `stand_in` (the weight-free rung) when the
    /// planned rung is still running at the frame's deadline: the policy adapts, and
    /// `stand_in` is within `min-variant` / `max-variant`. A fixed rung is never replaced.
    pub fn may_stand_in(&self, stand_in: usize) -> bool {
        let (best, lightest) = self.bounds();
        self.fixed_variant().is_none() && (best..=lightest).contains(&stand_in)
    }

    /// The frame last decided, on `variant`, was given up on at its deadline, `waited` after it
    /// started, and `stand_in` made it instead in `cost`: a miss of `variant` at least `waited`
    /// slow and at least its predicted cost (a frame given up on at once, planned with no time
    /// left, says nothing of the rung being faster), stepping down as any miss does; a frame of
    /// `stand_in`.
    pub fn record_rescued(
        &mut self,
        variant: usize,
        waited: Duration,
        stand_in: usize,
        cost: Duration,
    ) {
        let n = self.costs.variants();
        if variant >= n || stand_in >= n {
            return;
        }
        let predicted = self.predicted_cost(variant).unwrap_or_default();
        self.record_run(variant, waited.max(predicted), false);
        self.tally(stand_in, cost);
        self.stats.rescued += 1;
    }

    /// The frame last decided was made by `stand_in` in `cost`, because a frame given up on
    /// before it still ran: it says nothing of the planned rung's cost. A late one counts as a
    /// miss (the given-up run holds the cores the scaler needs).
    pub fn record_stand_in(&mut self, stand_in: usize, cost: Duration, deadline_met: bool) {
        if stand_in >= self.costs.variants() {
            return;
        }
        self.pending = None;
        self.consecutive_drops = 0;
        self.tally(stand_in, cost);
        self.stats.rescued += 1;
        if !deadline_met {
            self.stats.misses += 1;
        }
    }

    /// What a frame of `variant` that ran (to its end, or until it was given up on) says: its
    /// cost, the load, a probe's verdict, a miss.
    fn record_run(&mut self, variant: usize, cost: Duration, deadline_met: bool) {
        let pending = self.pending.take().filter(|p| p.variant == variant);
        let probe = pending.is_some_and(|p| p.probe);
        // beside a warm-up a late frame still steps down (below), but moves no load: the load
        // it would set stays until the warm-up ends, and scales the warm-up's costs
        let evidence = if pending.is_some_and(|p| p.remeasure) {
            Evidence::Remeasure
        } else if self.measuring_elsewhere {
            Evidence::Beside
        } else if !deadline_met && !probe {
            Evidence::Missed
        } else {
            Evidence::Routine
        };
        if pending.is_some_and(|p| p.recheck) && self.costs.is_quiet() {
            self.costs.recheck(variant, cost);
            // a warm-up's costs, re-measured in the stream: choose with them as with the warm-up's
            if let WarmUpChoice::Chosen(_) = self.warm_up {
                self.warm_up = WarmUpChoice::Rechecked;
            }
        } else {
            self.costs.observe(variant, cost, evidence);
        }
        self.consecutive_drops = 0;
        if !deadline_met {
            self.stats.misses += 1;
        }
        if probe {
            let budget = pending.map_or(Duration::MAX, |p| p.sustainable);
            // Judged with this probe's cost in the model: one slow sample of a noisy rung
            // does not veto it, a rung measured slow does.
            let confirmed = deadline_met && self.fits_with_headroom(variant, budget);
            self.climb.probe_confirmed = confirmed;
            if confirmed {
                self.climb.recheck_interval = RECHECK_FIRST;
            } else {
                self.climb.fitting_since = None;
            }
        } else if !deadline_met && Some(variant) == self.active {
            self.miss_pending = true;
        }
    }

    /// Frames processed and dropped so far: the counters alone, without the per-rung cost
    /// statistics of [`DeadlinePolicy::stats`] (cheap enough for every frame).
    pub fn processed_and_dropped(&self) -> (u64, u64) {
        (self.stats.processed, self.stats.dropped)
    }

    pub fn stats(&self) -> PolicyStats {
        let mut stats = self.stats.clone();
        stats.active = self.active;
        stats.per_variant = self
            .tallies
            .iter()
            .map(|t| VariantStats {
                frames: t.frames,
                mean_cost: (t.frames > 0).then(|| span(t.total_nanos / t.frames as f64)),
                p95_cost: quantile(t.recent.iter().copied(), COST_QUANTILE).map(span),
            })
            .collect();
        stats
    }

    fn tally(&mut self, variant: usize, cost: Duration) {
        let tally = &mut self.tallies[variant];
        tally.frames += 1;
        tally.total_nanos += nanos(cost);
        tally.recent.push_back(nanos(cost));
        if tally.recent.len() > STATS_WINDOW {
            tally.recent.pop_front();
        }
        self.stats.processed += 1;
    }

    fn effective_budget(&self, remaining: Duration) -> Duration {
        let after_margin = remaining.saturating_sub(self.config.margin);
        span(nanos(after_margin) / self.qos.proportion.max(1.0))
    }

    fn is_qos_late(&self, frame: FrameBudget) -> bool {
        matches!((frame.running_time, self.qos.earliest), (Some(t), Some(e)) if t <= e)
    }

    fn under_qos_pressure(&self) -> bool {
        self.qos.proportion > QOS_PRESSURE
    }

    /// Inclusive index range of allowed variants, best first.
    fn bounds(&self) -> (usize, usize) {
        let last = self.costs.variants() - 1;
        let lightest = self.config.lightest_variant.unwrap_or(last).min(last);
        (self.config.best_variant.min(lightest), lightest)
    }

    fn fixed_variant(&self) -> Option<usize> {
        let last = self.costs.variants() - 1;
        match self.config.fixed_variant {
            Some(v) => Some(v.min(last)),
            None if !self.config.adaptive => Some(self.bounds().0),
            None => None,
        }
    }

    fn predicted(&self, variant: usize) -> Option<f64> {
        self.costs.predicted_nanos(variant)
    }

    /// Its typical cost (EWMA at the current load), ns: which rung is lighter is judged on it.
    fn typical(&self, variant: usize) -> Option<f64> {
        self.costs.typical_nanos(variant)
    }

    fn fits(&self, variant: usize, budget: Duration, factor: f64) -> bool {
        self.predicted(variant)
            .is_some_and(|p| p * factor <= nanos(budget))
    }

    /// Fits with room to spare: its typical cost (EWMA at the current load) `headroom` times
    /// over, and its conservative prediction (the p95 tail) at all. Headroom on the tail as
    /// well would demand it twice and keep a rung that fits at 80% of the budget unused.
    fn fits_with_headroom(&self, variant: usize, budget: Duration) -> bool {
        let typical = self.typical(variant);
        let roomy = typical.is_some_and(|c| c * self.config.headroom <= nanos(budget));
        roomy && self.fits(variant, budget, 1.0)
    }

    /// A variant measured costlier than a better variant: never worth running. Compared on
    /// typical costs (the EWMA): which rung is lighter is a property of the rungs, while the
    /// p95 of a few warm-up runs beside the stream is noise. On the p95, one 53.6 ms run among
    /// 23-29 ms put x4 `dense-pruned` over `dense` (44-48 ms), and the stream probed `dense`
    /// from the weight-free rung for the whole quiet half, never `dense-pruned`.
    fn is_dominated(&self, variant: usize) -> bool {
        let Some(cost) = self.typical(variant) else {
            return false;
        };
        let (best, _) = self.bounds();
        (best..variant).any(|u| self.typical(u).is_some_and(|p| p <= cost))
    }

    fn adaptive_choice(&mut self, now: u64, remaining: Duration, budget: Duration) -> Choice {
        let (best, lightest) = self.bounds();
        let current = match self.active {
            Some(v) if !self.resized && (best..=lightest).contains(&v) => v,
            Some(_) if !self.resized => return self.choose_fresh(budget, Reason::Bounds),
            Some(_) => return self.choose_fresh(budget, Reason::SizeChanged),
            None => return self.choose_fresh(budget, Reason::Initial),
        };
        if self.reconfigured {
            return self.choose_fresh(budget, Reason::Settings);
        }
        match self.warm_up {
            state @ (WarmUpChoice::Seeded | WarmUpChoice::Rechecked) => {
                let choice = self.choose_fresh(budget, Reason::Measured);
                // the warm-up's choice, or a climb on its recheck: the rung above is next, at once
                if let Choice::Run(v, _) = choice
                    && (state == WarmUpChoice::Seeded || v < current)
                {
                    self.warm_up = WarmUpChoice::Chosen(v);
                }
                return choice;
            }
            WarmUpChoice::Chosen(_) | WarmUpChoice::Done => {}
        }
        if std::mem::take(&mut self.miss_pending) {
            return self.step_down(current, budget, Reason::DeadlineMissed);
        }
        if self.predicted(current).is_some_and(|p| p > nanos(budget)) {
            let raw = self.effective_budget_without_qos(remaining);
            let reason = if self.fits(current, raw, 1.0) {
                Reason::QosProportion
            } else {
                Reason::PredictedMiss
            };
            return self.step_down(current, budget, reason);
        }
        self.try_climb(now, current, budget)
    }

    fn effective_budget_without_qos(&self, remaining: Duration) -> Duration {
        remaining.saturating_sub(self.config.margin)
    }

    /// Best variant with headroom, else best that fits, else the lightest allowed if it is not
    /// measured yet (the ladder's order is the best guess until a warm-up or this frame
    /// measures it), else the cheapest known (then probes climb from there).
    fn choose_fresh(&mut self, budget: Duration, reason: Reason) -> Choice {
        self.resized = false;
        self.reconfigured = false;
        self.miss_pending = false;
        self.warm_up = WarmUpChoice::Done; // `Chosen` again by the caller for a warm-up's choice
        let (best, lightest) = self.bounds();
        let allowed = best..=lightest;
        let with_headroom = allowed
            .clone()
            .find(|&v| self.fits_with_headroom(v, budget));
        let fitting = || allowed.clone().find(|&v| self.fits(v, budget, 1.0));
        let untried_lightest = || Some(lightest).filter(|&v| self.predicted(v).is_none());
        let variant = with_headroom
            .or_else(fitting)
            .or_else(untried_lightest)
            .or_else(|| self.cheapest(allowed.clone()))
            .unwrap_or(lightest);
        Choice::Run(variant, reason)
    }

    /// The candidate of lowest typical cost (as in [`DeadlinePolicy::is_dominated`]).
    fn cheapest(&self, candidates: impl Iterator<Item = usize>) -> Option<usize> {
        candidates
            .filter_map(|v| self.typical(v).map(|p| (v, p)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(v, _)| v)
    }

    /// Best variant measured cheaper than `current` that fits; several rungs if needed.
    fn step_down(&mut self, current: usize, budget: Duration, reason: Reason) -> Choice {
        let (best, lightest) = self.bounds();
        // cheaper by its typical cost (as in `is_dominated`) or by its tail: a rung of a lower
        // mean, or a steadier one whose p95 fits where the current rung's does not
        let (current_typical, current_tail) = (
            self.typical(current).unwrap_or(f64::INFINITY),
            self.predicted(current).unwrap_or(f64::INFINITY),
        );
        let cheaper: Vec<usize> = (best..=lightest)
            .filter(|&v| {
                v != current
                    && (self.typical(v).is_some_and(|c| c < current_typical)
                        || self.predicted(v).is_some_and(|p| p < current_tail))
            })
            .collect();
        if let Some(&v) = cheaper.iter().find(|&&v| self.fits(v, budget, 1.0)) {
            return Choice::Run(v, reason);
        }
        let fallback = self
            .cheapest(cheaper.iter().copied().chain([current]))
            .unwrap_or(current);
        if self.fits(fallback, budget, 1.0) {
            return Choice::Run(fallback, reason);
        }
        if lightest != current && self.predicted(lightest).is_none() {
            // Not measured yet (its warm-up still runs): the ladder's order says it is lighter.
            return Choice::Run(lightest, reason);
        }
        if self.consecutive_drops >= self.config.remeasure_after_drops {
            return Choice::Run(fallback, Reason::Remeasure);
        }
        Choice::Drop(fallback, Reason::NothingFits)
    }

    /// The next better rung that is not dominated, within bounds.
    fn next_better(&self, current: usize) -> Option<usize> {
        let (best, _) = self.bounds();
        (best..current).rev().find(|&v| !self.is_dominated(v))
    }

    fn try_climb(&mut self, now: u64, current: usize, budget: Duration) -> Choice {
        let next = self.next_better(current);
        let Some(up) = next.filter(|_| !self.under_qos_pressure()) else {
            self.climb.fitting_since = None;
            return Choice::Run(current, Reason::Steady);
        };
        let probe_due = self
            .climb
            .last_probe
            .is_none_or(|t| now.saturating_sub(t) >= nanos(self.config.probe_interval) as u64);
        if self.recheck_after_warm_up(up, budget) {
            return Choice::Recheck(up);
        }
        if self.predicted(up).is_none() {
            return if probe_due && !self.measuring_elsewhere {
                Choice::Probe(up)
            } else {
                Choice::Run(current, Reason::Steady)
            };
        }
        if !self.fits_with_headroom(up, budget) {
            self.climb.fitting_since = None;
            self.climb.probe_confirmed = false;
            // A rung that fits without the headroom is probed now and then: its estimate may be
            // stale (a warm-up under contention, a load that has gone), and a frame on it still
            // makes the deadline.
            if probe_due && self.fits(up, budget, 1.0) {
                return Choice::Probe(up);
            }
            if self.recheck_due(now, up, budget) {
                // the usual recheck, not the warm-up's: no fresh choice on the frame after it
                // (an x2 one chose `dense` on a frame 14 ms behind, which missed and fell back)
                self.warm_up = WarmUpChoice::Done;
                return Choice::Recheck(up);
            }
            return Choice::Run(current, Reason::Steady);
        }
        let since = *self.climb.fitting_since.get_or_insert(now);
        let mut sustain = nanos(self.config.sustain) as u64 * u64::from(self.climb.backoff);
        let returning = self.climb.return_to.is_some_and(|(rung, fell)| {
            rung == up && since.saturating_sub(fell) <= QUICK_RETURN_SPIKE.as_nanos() as u64
        });
        if returning && self.climb.backoff == 1 {
            sustain = (sustain as f64 * QUICK_RETURN_SHARE) as u64;
        }
        if self.climb.probe_confirmed && now.saturating_sub(since) >= sustain {
            Choice::Run(up, Reason::Headroom)
        } else if probe_due {
            Choice::Probe(up)
        } else {
            Choice::Run(current, Reason::Steady)
        }
    }

    /// Whether to re-measure `up` at once: the rung above a warm-up's choice (or above a rung
    /// such a recheck climbed to), on a quiet machine, if one of its warm-up runs fitted `budget`.
    /// The warm-up ran beside the stream's frames on the same cores, and its few runs put a rung
    /// that takes 22 ms in the stream at 23-51 ms: one frame tells, where a probe (for a rung
    /// that fits, maybe without the headroom) waits a sustain period to climb and a recheck (for
    /// one that does not) waits its first interval too; that kept x4 on the weight-free rung for
    /// 2.6-4 s of a start. A rung none of whose runs fitted is left to those: x2 `dense-wide`
    /// warmed up at 50-53 ms against a 38 ms budget, takes 52 ms in the stream, and its
    /// immediate recheck was a late frame and nothing more.
    fn recheck_after_warm_up(&self, up: usize, budget: Duration) -> bool {
        matches!(self.warm_up, WarmUpChoice::Chosen(_))
            && self.costs.is_quiet()
            && !self.measuring_elsewhere
            && self
                .costs
                .fastest_nanos(up)
                .is_some_and(|c| c <= nanos(budget))
    }

    /// Whether to re-measure `up`, predicted not to fit `budget` (within [`RECHECK_REACH`] until
    /// its first recheck: one cold frame must not rule it out for good): only on a quiet machine,
    /// whose frames show a rung's own cost, at most every `recheck_interval`, which doubles while
    /// rechecks find it too slow. Without it, a rung measured slow once (a slow phase of a shared
    /// machine, a warm-up under contention) would never run again: probes only re-measure rungs
    /// predicted to fit.
    fn recheck_due(&mut self, now: u64, up: usize, budget: Duration) -> bool {
        let reachable = self.climb.rechecked
            || self
                .predicted(up)
                .is_some_and(|p| p <= nanos(budget) * RECHECK_REACH);
        let fits = self.fits(up, budget, 1.0); // probed as it is, not rechecked
        if !self.costs.is_quiet() || self.measuring_elsewhere || !reachable || fits {
            return false;
        }
        let interval = self.climb.recheck_interval;
        let due = *self
            .climb
            .next_recheck
            .get_or_insert(now.saturating_add(interval.as_nanos() as u64));
        now >= due
    }

    /// A frame no rung fits by the conservative prediction still runs the cheapest allowed
    /// rung when its expected (mean) cost makes the frame's own deadline (give or take the
    /// sink's lateness): a drop is a sure loss, while the run is likely shown in time (noisy
    /// costs put the p95 far above the mean).
    fn run_if_likely_on_time(&self, choice: Choice, frame: FrameBudget) -> Choice {
        let allowed = (frame.until_deadline.saturating_add(self.config.lateness))
            .saturating_sub(frame.overdue);
        let limit = nanos(allowed.saturating_sub(self.config.margin));
        let likely = |v: usize| self.costs.expected_nanos(v).is_some_and(|c| c <= limit);
        let (best, lightest) = self.bounds();
        match choice {
            Choice::Drop(v, Reason::NothingFits) if likely(v) => {
                Choice::Run(v, Reason::NothingFits)
            }
            Choice::CatchUp {
                active,
                reason,
                run: None,
            } => Choice::CatchUp {
                active,
                reason,
                run: self.cheapest(best..=lightest).filter(|&v| likely(v)),
            },
            other => other,
        }
    }

    /// For a frame that must not be dropped: the cheapest allowed rung runs instead.
    fn run_instead_of_dropping(&self, choice: Choice) -> Choice {
        let (best, lightest) = self.bounds();
        let cheapest = self.cheapest(best..=lightest).unwrap_or(lightest);
        match choice {
            Choice::Drop(v, Reason::NothingFits) => Choice::Run(v, Reason::NothingFits),
            Choice::CatchUp {
                active,
                reason,
                run: None,
            } => Choice::CatchUp {
                active,
                reason,
                run: Some(cheapest),
            },
            other => other,
        }
    }

    /// A frame behind the schedule (less than a frame duration left) that the active variant
    /// would make later still runs the best cheaper variant that fits, or is dropped: the
    /// queue drains in one frame instead of costing the stream a rung for a sustain period.
    fn fit_to_frame(&self, choice: Choice, budget: Duration, sustainable: Duration) -> Choice {
        // Live, a frame has a little less than the period left when it arrives (39.4 of 40 ms):
        // "behind", queued behind a slow frame, is under 90% of it. A frame that is not behind
        // runs what was chosen for the sustainable budget. Held to its own 0.5 ms shorter budget,
        // a rung whose p95 fell in between (x4 `dense-pruned`, warmed up at 17-38 ms) was chosen
        // and never run: each frame caught up on `bicubic`, and each probe of it was vetoed, for
        // the whole quiet half of a run.
        let behind = nanos(budget) < 0.9 * nanos(sustainable);
        let (active, reason) = match choice {
            Choice::Run(v, r) if r != Reason::Remeasure => (v, r),
            Choice::Probe(v) if behind && self.predicted(v).is_some_and(|p| p > nanos(budget)) => {
                match self.active {
                    Some(active) => (active, Reason::Steady),
                    None => return choice,
                }
            }
            // A recheck expects to miss the prediction; only a frame that is not behind takes
            // that chance.
            Choice::Recheck(_) if behind => match self.active {
                Some(active) => (active, Reason::Steady),
                None => return choice,
            },
            _ => return choice,
        };
        let Some(active_cost) = self.predicted(active) else {
            return choice;
        };
        let fits_frame = match behind {
            true => active_cost <= nanos(budget),
            false => active_cost <= nanos(budget.max(sustainable)),
        };
        if fits_frame {
            return Choice::Run(active, reason);
        }
        let (best, lightest) = self.bounds();
        let cheaper_fitting = (best..=lightest).find(|&v| {
            self.predicted(v).is_some_and(|p| p < active_cost) && self.fits(v, budget, 1.0)
        });
        Choice::CatchUp {
            active,
            reason,
            run: cheaper_fitting,
        }
    }

    fn apply(&mut self, now: u64, choice: Choice, budgets: (Duration, Duration)) -> Decision {
        let (budget, sustainable) = budgets;
        let recheck = matches!(choice, Choice::Recheck(_));
        let (variant, drop, probe, reason, keep) = match choice {
            Choice::Run(v, r) => (v, false, false, r, Some((v, r))),
            Choice::Probe(v) | Choice::Recheck(v) => (v, false, true, Reason::Probe, None),
            Choice::Drop(v, r @ (Reason::QosLate | Reason::AlreadyLate)) => {
                (v, true, false, r, None)
            }
            Choice::Drop(v, r) => (v, true, false, r, Some((v, r))),
            Choice::CatchUp {
                active,
                reason,
                run,
            } => {
                let variant = run.unwrap_or(active);
                (
                    variant,
                    run.is_none(),
                    false,
                    Reason::CatchUp,
                    Some((active, reason)),
                )
            }
        };
        self.track_drops(drop, reason);
        if probe {
            self.climb.last_probe = Some(now);
            self.stats.probes += 1;
        }
        if recheck {
            self.climb.rechecked = true;
            let interval = (self.climb.recheck_interval * 2).min(RECHECK_MAX);
            self.climb.recheck_interval = interval;
            self.climb.next_recheck = Some(now.saturating_add(interval.as_nanos() as u64));
        }
        let switch = keep.and_then(|(v, r)| self.switch_to(now, v, r, sustainable));
        if !drop {
            self.pending = Some(Pending {
                variant,
                probe,
                remeasure: reason == Reason::Remeasure,
                recheck,
                sustainable,
            });
        }
        Decision {
            variant,
            drop,
            probe,
            reason,
            predicted_cost: self.costs.predicted(variant),
            budget,
            switch,
        }
    }

    fn track_drops(&mut self, drop: bool, reason: Reason) {
        if drop {
            self.stats.dropped += 1;
            if reason == Reason::NothingFits {
                self.consecutive_drops += 1;
            }
        }
    }

    fn switch_to(
        &mut self,
        now: u64,
        variant: usize,
        reason: Reason,
        budget: Duration,
    ) -> Option<VariantSwitch> {
        self.relax_backoff(now);
        let from = self.active;
        if from == Some(variant) {
            // kept across a restart or a resize, which reset the climb state
            self.climb.active_since.get_or_insert(now);
            return None;
        }
        self.active = Some(variant);
        if matches!(self.warm_up, WarmUpChoice::Chosen(v) if v != variant) {
            // left the warm-up's choice (a fall, a climb): the rung above waits its turn
            self.warm_up = WarmUpChoice::Done;
        }
        self.climb.fitting_since = None;
        self.climb.probe_confirmed = false;
        // the rung above is another one, or was just left: its rechecks start a new wait
        self.climb.next_recheck = None;
        self.climb.rechecked = false;
        let fell_back = matches!(
            reason,
            Reason::DeadlineMissed | Reason::PredictedMiss | Reason::QosProportion
        );
        let held = self
            .climb
            .active_since
            .is_some_and(|t| now.saturating_sub(t) >= QUICK_RETURN_HELD.as_nanos() as u64);
        self.climb.active_since = Some(now);
        // only after one late frame (a spike): a rung predicted to miss saw a load building
        self.climb.return_to = match (reason == Reason::DeadlineMissed, from) {
            (true, Some(from)) if held => Some((from, now)),
            // still below the rung to return to (fell further, or climbed part of the way)
            _ if self.climb.return_to.is_some_and(|(r, _)| r < variant) => self.climb.return_to,
            _ => None,
        };
        if reason == Reason::Headroom {
            self.climb.last_climb = Some(now);
        } else if fell_back && self.climb.last_climb.is_some() {
            // Fell back soon after a climb: that rung is at the edge, wait longer next time.
            self.climb.backoff = (self.climb.backoff * 2).min(MAX_CLIMB_BACKOFF);
            self.climb.last_climb = None;
        }
        if from.is_some() {
            self.stats.switches += 1;
        }
        Some(VariantSwitch {
            from,
            to: variant,
            reason,
            predicted_cost: self.costs.predicted(variant),
            budget,
        })
    }

    /// A climb that held for a whole sustain period succeeded: back to the normal period.
    fn relax_backoff(&mut self, now: u64) {
        let sustain = nanos(self.config.sustain) as u64 * u64::from(self.climb.backoff);
        if let Some(at) = self.climb.last_climb
            && now.saturating_sub(at) >= sustain
        {
            self.climb.last_climb = None;
            self.climb.backoff = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MS: u64 = 1_000_000;
    const PERIOD: Duration = Duration::from_millis(40);
    const SMALL: FrameSize = FrameSize {
        width: 320,
        height: 180,
    };
    /// Per-variant costs (ms) of the test ladder at `SMALL` and load 1, best first.
    const LADDER: [f64; 3] = [30.0, 18.0, 6.0];

    fn ms(value: f64) -> Duration {
        Duration::from_secs_f64(value / 1000.0)
    }

    fn frames_in(span: Duration) -> usize {
        (span.as_nanos() / PERIOD.as_nanos()) as usize
    }

    /// Deterministic uniform noise in [-1, 1] (64-bit LCG).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct Frame {
        decision: Decision,
        cost: Option<Duration>,
        met: bool,
    }

    /// Non-live simulation: frame i at time i x 40 ms with a one-frame budget; the cost
    /// function gives the frame's cost in ms; the deadline is met when cost <= 40 ms.
    struct Sim {
        policy: DeadlinePolicy,
        frames: Vec<Frame>,
    }

    impl Sim {
        fn new(seeds_ms: &[Option<f64>], config: PolicyConfig) -> Self {
            let mut policy = DeadlinePolicy::new(seeds_ms.len(), SMALL, config);
            for (variant, seed) in seeds_ms.iter().enumerate() {
                if let Some(cost) = seed {
                    policy.seed(variant, &[ms(*cost); 5]);
                }
            }
            Self {
                policy,
                frames: Vec::new(),
            }
        }

        fn seeded(costs_ms: &[f64], config: PolicyConfig) -> Self {
            let seeds: Vec<Option<f64>> = costs_ms.iter().map(|c| Some(*c)).collect();
            Self::new(&seeds, config)
        }

        fn now(&self) -> u64 {
            self.frames.len() as u64 * 40 * MS
        }

        fn run(&mut self, count: usize, mut cost_ms: impl FnMut(usize, usize) -> f64) {
            for _ in 0..count {
                let index = self.frames.len();
                let now = self.now();
                let decision = self
                    .policy
                    .decide(now, FrameBudget::non_live(PERIOD, Some(now)));
                let (mut cost, mut met) = (None, false);
                if !decision.drop {
                    let spent = ms(cost_ms(index, decision.variant));
                    met = spent <= PERIOD;
                    self.policy.record(decision.variant, spent, met);
                    cost = Some(spent);
                }
                self.frames.push(Frame {
                    decision,
                    cost,
                    met,
                });
            }
        }

        /// `run` while a warm-up measures the rungs elsewhere (no probes; frames beside it).
        fn run_beside_warm_up(&mut self, count: usize, cost_ms: impl FnMut(usize, usize) -> f64) {
            self.policy.set_measuring_elsewhere(true);
            self.run(count, cost_ms);
            self.policy.set_measuring_elsewhere(false);
        }

        fn from(&self, start: usize) -> &[Frame] {
            &self.frames[start..]
        }

        fn processed_on(&self, variant: usize) -> usize {
            let on = |f: &&Frame| !f.decision.drop && f.decision.variant == variant;
            self.frames.iter().filter(on).count()
        }
    }

    fn misses(frames: &[Frame]) -> usize {
        frames.iter().filter(|f| !f.decision.drop && !f.met).count()
    }

    /// Switches of the active variant, the first frame's choice excluded.
    fn switches(frames: &[Frame]) -> Vec<(usize, VariantSwitch)> {
        let switch = |(i, f): (usize, &Frame)| f.decision.switch.map(|s| (i, s));
        let all = frames.iter().enumerate().filter_map(switch);
        all.filter(|(_, s)| s.from.is_some()).collect()
    }

    fn probes(frames: &[Frame]) -> Vec<usize> {
        let probe = |(i, f): (usize, &Frame)| f.decision.probe.then_some(i);
        frames.iter().enumerate().filter_map(probe).collect()
    }

    fn loaded(load: f64) -> impl Fn(usize, usize) -> f64 {
        move |_, variant| LADDER[variant] * load
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let samples = (10..30).map(f64::from);
        assert_eq!(quantile(samples.clone(), 0.95), Some(28.0));
        assert_eq!(quantile(samples, 0.5), Some(19.0));
        assert_eq!(quantile(std::iter::empty(), 0.95), None);
        assert_eq!(quantile([7.0].into_iter(), 0.95), Some(7.0));
    }

    #[test]
    fn cost_model_tracks_ewma_and_p95() {
        let mut model = CostModel::new(2, SMALL);
        assert_eq!(model.predicted(0), None);
        model.seed(0, &[ms(10.0), ms(10.0), ms(10.0)]);
        assert!(model.is_measured(0));
        assert!(!model.is_measured(1));
        assert_eq!(model.predicted(0), Some(ms(10.0)));
        // One sample at twice the intrinsic cost: load 1 -> 1.2; normalised 20 / 1.2 becomes
        // the p95 of the window, predicted under the current load.
        model.observe(0, ms(20.0), Evidence::Routine);
        assert!((model.load() - 1.2).abs() < 1e-9);
        let expected = 20.0;
        let predicted = model.predicted(0).unwrap().as_secs_f64() * 1000.0;
        assert!(
            (predicted - expected).abs() < 1e-3,
            "{predicted} vs {expected}"
        );
    }

    #[test]
    fn a_rung_faster_than_its_reference_does_not_read_as_a_machine_faster_than_idle() {
        // The weight-free rung's reference came from frames that ran beside the warm-up (3 ms);
        // alone it takes 2 ms. The learned rung was warmed up at 34-44 ms against a 38 ms budget
        // and really takes 40 ms. Read as a load of 0.67, the cheap rung's frames predicted the
        // learned one at 30 ms, and the stream probed it and missed, again and again.
        let mut sim = Sim::new(&[None, Some(3.0)], PolicyConfig::default());
        sim.policy.seed(0, &[44.0, 44.0, 34.5, 37.6, 36.0].map(ms));
        sim.run(250, |_, v| [40.0, 2.0][v]);
        assert_eq!(sim.policy.cost_model().load(), 1.0);
        assert_eq!(sim.processed_on(0), 0, "{:?}", probes(&sim.frames));
        assert_eq!(misses(&sim.frames), 0);

        // One libtorch thread of two (the governor's baseline, about 1.9): the scaler does not
        // slow down, and its frames must not pull the learned rungs' load back to 1.
        let mut fewer = DeadlinePolicy::new(2, SMALL, PolicyConfig::default());
        fewer.seed(0, &[ms(25.0); 5]);
        fewer.seed(1, &[ms(2.0); 5]);
        fewer.set_load(1.9);
        for i in 0..100u64 {
            let d = fewer.decide(
                i * 40 * MS,
                FrameBudget::non_live(PERIOD, Some(i * 40 * MS)),
            );
            assert_eq!((d.variant, d.drop, d.probe), (1, false, false), "frame {i}");
            fewer.record(1, ms(2.0), true);
        }
        assert_eq!(fewer.cost_model().load(), 1.9);
        assert_eq!(fewer.predicted_cost(0), Some(ms(47.5)));
    }

    #[test]
    fn a_lighter_rung_with_one_slow_warm_up_run_is_not_dominated_by_a_heavier_one() {
        // x4 on 2 cores (a bench run's warm-up): `dense` 44-48 ms, `dense-pruned` 23-29 ms with
        // one run at 53.6 ms (under twice the median, so it stays in the window), bicubic 3 ms.
        // By the p95, `dense-pruned` looked costlier than `dense`: the stream, quiet on bicubic,
        // rechecked `dense` (a miss each time) and never `dense-pruned`, which takes 22 ms.
        let mut sim = Sim::new(&[None, None, Some(3.0)], PolicyConfig::default());
        sim.policy.seed(0, &[44.0, 48.0, 44.0, 48.0, 46.0].map(ms));
        sim.policy.seed(1, &[23.0, 26.0, 28.8, 27.5, 53.6].map(ms));
        sim.policy.set_quiet(true);
        sim.run(250, |_, v| [46.0, 22.0, 3.0][v]);
        let ups = switches(&sim.frames);
        assert_eq!(ups.first().map(|(_, s)| s.to), Some(1), "{ups:?}");
        assert!(ups[0].0 < 150, "climbed at frame {}", ups[0].0);
        assert!(sim.processed_on(1) > 100, "{}", sim.processed_on(1));
        assert_eq!(sim.policy.active_variant(), Some(1));
    }

    #[test]
    fn on_a_quiet_machine_the_warm_up_costs_are_rechecked_at_once_and_chosen_with() {
        // A bench run's warm-up beside the stream: `dense-pruned` 17.7-51.1 ms (22 ms in the
        // stream), `dense` 52-62 ms (55), bicubic measured by the stream at 2 ms. By the warm-up's
        // p95 `dense-pruned` does not fit, and the stream stayed on bicubic for the first recheck
        // (2 s) and a sustain period (2 s) more. Quiet, `dense-pruned` is rechecked on the next
        // frame, and the frame after it switches (as on the warm-up's costs); `dense` is then
        // rechecked on the usual schedule, not at once again (none of its warm-up runs fitted).
        for quiet in [true, false] {
            let mut sim = Sim::new(&[None, None, Some(2.0)], PolicyConfig::default());
            sim.policy.set_quiet(quiet);
            sim.run_beside_warm_up(10, |_, v| [55.0, 22.0, 2.0][v]);
            sim.policy.seed(0, &[52.0, 53.5, 62.5, 56.0, 56.0].map(ms));
            sim.policy.seed(1, &[23.2, 17.7, 51.1, 32.2, 35.9].map(ms));
            sim.run(240, |_, v| [55.0, 22.0, 2.0][v]);
            let ups = switches(&sim.frames);
            if quiet {
                assert_eq!(probes(&sim.frames)[0], 11);
                assert_eq!(ups[0].0, 12, "{ups:?}");
                assert_eq!((ups[0].1.to, ups[0].1.reason), (1, Reason::Measured));
                assert_eq!(ups.len(), 1, "{ups:?}");
                // dense's rechecks: 2 s after the switch, then backing off
                let dense: Vec<usize> = probes(&sim.frames)[1..].to_vec();
                assert_eq!(
                    dense.first(),
                    Some(&(13 + frames_in(RECHECK_FIRST))),
                    "{dense:?}"
                );
                assert_eq!(misses(&sim.frames), dense.len());
            } else {
                // no recheck without the quiet signal: the warm-up's p95 stands
                assert!(ups.is_empty(), "{ups:?}");
                assert_eq!(misses(&sim.frames), 0);
            }
        }
    }

    #[test]
    fn rungs_that_fit_the_warm_up_only_without_headroom_are_rechecked_at_once_one_after_another() {
        // A warm-up beside the stream put both learned rungs within the budget but short of the
        // headroom (`dense-pruned` 31-33 ms, 20 in the stream; `dense` 33-35 ms, 25 in the
        // stream): the choice was the weight-free rung. A probe of `dense-pruned` then confirmed
        // it and the climb waited a sustain period (2 s), and `dense` as long again after it: on
        // the x4 bench, 2.6 s on the weight-free rung. Quiet, each rung above the choice is
        // rechecked at once and chosen with: `dense` four frames after the warm-up.
        let mut sim = Sim::new(&[None, None, Some(1.2)], PolicyConfig::default());
        sim.policy.set_quiet(true);
        sim.run_beside_warm_up(10, |_, v| [25.0, 20.0, 1.2][v]);
        sim.policy.seed(0, &[33.0, 34.0, 35.0, 33.5, 34.0].map(ms));
        sim.policy.seed(1, &[31.0, 32.0, 33.0, 31.5, 32.0].map(ms));
        sim.run(100, |_, v| [25.0, 20.0, 1.2][v]);
        assert_eq!(
            sim.frames[10].decision.variant, 2,
            "{:?}",
            sim.frames[10].decision
        );
        let ups: Vec<(usize, usize, Reason)> = switches(&sim.frames)
            .iter()
            .map(|(i, s)| (*i, s.to, s.reason))
            .collect();
        assert_eq!(ups, [(12, 1, Reason::Measured), (14, 0, Reason::Measured)]);
        assert_eq!(probes(&sim.frames), [11, 13]);
        assert_eq!(misses(&sim.frames), 0);
    }

    #[test]
    fn a_warm_up_choice_made_under_a_passing_load_is_rechecked_at_once_when_quiet() {
        // x2 bench: the warm-up's costs came in while the stream's frames read a load of 2.2 and
        // no quiet signal yet, and the choice was the weight-free rung. The load eased, `dense`
        // fitted with the headroom again, and the climb waited for a confirmed probe and a
        // sustain period: 2.5 s on the weight-free rung. Once quiet, it is rechecked at once.
        let mut sim = Sim::new(&[Some(60.0), Some(1.2)], PolicyConfig::default());
        sim.run(10, |_, _| 1.2);
        sim.run(10, |_, _| 2.6); // another process, then gone
        let busy = sim.policy.cost_model().load();
        assert!(busy > 1.8, "{busy}");
        sim.policy.seed(0, &[40.0, 41.0, 42.0, 40.5, 41.0].map(ms));
        sim.run(1, |_, v| [20.0, 1.2][v]);
        assert_eq!(
            sim.frames[20].decision.variant, 1,
            "{:?}",
            sim.frames[20].decision
        );
        sim.policy.set_quiet(true);
        sim.run(100, |_, v| [20.0, 1.2][v]);
        assert_eq!(probes(&sim.frames), [21]);
        let ups = switches(&sim.frames);
        assert_eq!(
            (ups[0].0, ups[0].1.to, ups[0].1.reason),
            (22, 0, Reason::Measured)
        );
        assert_eq!(misses(&sim.frames), 0);
    }

    #[test]
    fn the_streams_frames_beside_a_warm_up_are_no_load_reading() {
        // x2 bench: the weight-free frames took 2.2x as long while the warm-up ran beside them,
        // the load read 2.2, and the warm-up's `dense` (20-24 ms) was seen at 53: the choice was
        // the weight-free rung. That contention is the element's own: the warm-up's costs are
        // chosen with as measured.
        let mut sim = Sim::new(&[None, None], PolicyConfig::default());
        sim.run_beside_warm_up(13, |i, _| if i < 3 { 1.0 } else { 2.2 });
        assert!(sim.policy.cost_model().load() < 1.01);
        sim.policy.seed(0, &[24.0, 20.9, 55.1, 20.0, 24.4].map(ms));
        sim.run(50, |_, v| [20.0, 1.0][v]);
        let ups = switches(&sim.frames);
        assert_eq!(
            (ups[0].0, ups[0].1.to, ups[0].1.reason),
            (13, 0, Reason::Measured)
        );
        assert_eq!(misses(&sim.frames), 0);
    }

    #[test]
    fn a_late_frame_beside_a_warm_up_moves_no_load() {
        // A rung measured before the warm-up (a resize, a widened ladder) misses once beside it:
        // a miss sets the load at once, and frames beside a warm-up do not bring it back, so the
        // warm-up's costs would be scaled by it (here 35x) when they come in.
        let mut sim = Sim::new(&[None, Some(2.0)], PolicyConfig::default());
        sim.run(3, |_, _| 2.0);
        sim.run_beside_warm_up(10, |i, _| if i == 6 { 70.0 } else { 4.0 });
        assert!(!sim.frames[6].met);
        let load = sim.policy.cost_model().load();
        assert!(load < 1.01, "load {load}");
    }

    #[test]
    fn a_frame_beside_a_warm_up_is_no_reference_for_its_rung() {
        // The stream's first frame is a cold reference; the next one replaces it, unless it ran
        // beside the warm-up (3 ms against 1): taken as the reference, later frames that another
        // process doubles (2 ms) would read as a load under 1, and the load would not show.
        let mut sim = Sim::new(&[None], PolicyConfig::default());
        sim.run_beside_warm_up(10, |i, _| if i == 0 { 1.5 } else { 3.0 });
        sim.run(1, |_, _| 1.0);
        sim.run(20, |_, _| 2.0);
        let load = sim.policy.cost_model().load();
        assert!(load > 1.8, "load {load}");
    }

    #[test]
    fn a_rung_whose_warm_up_never_fitted_is_not_rechecked_at_once() {
        // x2 on a quiet bench: `dense-wide` warmed up at 50-53 ms against a 38 ms budget and
        // takes 52 ms in the stream. Its immediate recheck was a late frame that told nothing
        // new: it waits for the usual first recheck, 2 s after the warm-up chose `dense`.
        let mut sim = Sim::new(&[None, None, Some(1.0)], PolicyConfig::default());
        sim.policy.set_quiet(true);
        sim.run_beside_warm_up(10, |_, v| [52.0, 20.0, 1.0][v]);
        sim.policy.seed(0, &[53.2, 50.5, 52.9, 51.7, 52.0].map(ms));
        sim.policy.seed(1, &[21.2, 20.9, 20.6, 19.2, 18.6].map(ms));
        sim.run(100, |_, v| [52.0, 20.0, 1.0][v]);
        let ups = switches(&sim.frames);
        assert_eq!(
            (ups[0].0, ups[0].1.to, ups[0].1.reason),
            (10, 1, Reason::Measured)
        );
        let rechecks = probes(&sim.frames);
        assert_eq!(
            rechecks.first(),
            Some(&(11 + frames_in(RECHECK_FIRST))),
            "{rechecks:?}"
        );
        assert_eq!(misses(&sim.frames), rechecks.len());
        // the usual recheck: the frame after it is no fresh choice (on a live frame behind the
        // schedule, one chose `dense`, missed, and fell back)
        let after = sim.frames[rechecks[0] + 1].decision;
        assert_eq!((after.variant, after.reason), (1, Reason::Steady));
    }

    #[test]
    fn a_fall_long_after_the_warm_up_waits_for_the_usual_recheck() {
        // The warm-up chose the best rung (nothing above it to recheck). Twenty seconds later
        // one frame takes 60 ms: down to bicubic. The warm-up's immediate recheck is spent on
        // its own choice only: the way back is the usual one (a quick return, not a "measured"
        // choice on the next frame).
        let mut sim = Sim::new(&[None, Some(2.0)], PolicyConfig::default());
        sim.policy.set_quiet(true);
        sim.run_beside_warm_up(5, |_, v| [20.0, 2.0][v]);
        sim.policy.seed(0, &[ms(20.0); 5]);
        sim.run(600, |i, v| match (i, v) {
            (500, 0) => 60.0,
            (_, 0) => 20.0,
            _ => 2.0,
        });
        let ups = switches(&sim.frames);
        let reasons: Vec<(usize, Reason)> = ups.iter().map(|(i, s)| (*i, s.reason)).collect();
        assert_eq!(reasons[0], (5, Reason::Measured), "{reasons:?}");
        assert_eq!(reasons[1], (501, Reason::DeadlineMissed), "{reasons:?}");
        assert_eq!(reasons[2].1, Reason::Headroom, "{reasons:?}");
        assert!(reasons[2].0 > 501 + 5, "{reasons:?}");
        assert_eq!(reasons.len(), 3, "{reasons:?}");
    }

    #[test]
    fn one_warm_up_run_far_over_the_others_does_not_become_the_tail() {
        // x4 dense-pruned's warm-up on 2 busy cores: one run at 53.7 ms among 18-23 ms
        let runs = [20.1, 23.0, 53.7, 18.8, 18.2].map(ms);
        let mut model = CostModel::new(3, SMALL);
        model.seed(0, &runs);
        let predicted = model.predicted(0).unwrap();
        assert!(
            predicted <= ms(23.0) && predicted >= ms(20.0),
            "{predicted:?}"
        );
        // costs that are slow most of the time stay slow: nothing is left out
        model.seed(1, &[20.0, 50.0, 52.0, 19.0, 55.0].map(ms));
        assert!(model.predicted(1).unwrap() >= ms(52.0));
        // too few runs to tell an outlier: all of them count
        model.seed(2, &[ms(10.0), ms(40.0)]);
        assert!(model.predicted(2).unwrap() >= ms(39.0));
        // a real frame that slow still counts (the window is the rung's recent frames)
        model.observe(0, ms(53.7), Evidence::Routine);
        assert!(model.predicted(0).unwrap() > ms(40.0));
    }

    #[test]
    fn a_miss_sets_the_load_to_the_slowdown_it_shows() {
        let mut model = CostModel::new(2, SMALL);
        model.seed(0, &[ms(10.0); 4]);
        model.seed(1, &[ms(4.0); 4]);
        model.observe(0, ms(30.0), Evidence::Missed);
        assert!((model.load() - 3.0).abs() < 1e-9);
        // The rung that did not run is predicted three times slower too.
        assert_eq!(model.predicted(1), Some(ms(12.0)));
        model.observe(1, ms(4.0), Evidence::Remeasure);
        assert!((model.load() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn budget_helpers() {
        assert_eq!(frame_duration(25, 1), Some(PERIOD));
        assert_eq!(
            frame_duration(30000, 1001),
            Some(Duration::from_nanos(33_366_666))
        );
        assert_eq!(frame_duration(0, 1), None);
        assert_eq!(frame_duration(25, 0), None);
        // Running time 1 s, latency 100 ms, now 1.07 s: 30 ms left.
        let live = FrameBudget::live(1000 * MS, ms(100.0), 1070 * MS, None);
        assert_eq!(live.remaining, ms(30.0));
        assert_eq!(live.running_time, Some(1000 * MS));
        // Latency beyond one frame duration is not sustainable throughput.
        let capped = FrameBudget::live(1000 * MS, ms(100.0), 1000 * MS, Some(PERIOD));
        assert_eq!(capped.remaining, PERIOD);
        let late = FrameBudget::live(1000 * MS, ms(100.0), 1200 * MS, Some(PERIOD));
        assert!(late.remaining.is_zero());
        assert_eq!(FrameBudget::non_live(PERIOD, None).remaining, PERIOD);
        assert_eq!(
            processing_latency(Some(PERIOD), Some(ms(90.0)), ms(2.0)),
            PERIOD
        );
        assert_eq!(processing_latency(None, Some(ms(90.0)), ms(2.0)), ms(92.0));
        assert!(!latency_changed_materially(PERIOD, ms(41.0)));
        assert!(!latency_changed_materially(ms(5.0), ms(5.9)));
        assert!(latency_changed_materially(PERIOD, ms(50.0)));
    }

    #[test]
    fn margin_and_qos_proportion_shrink_the_budget() {
        let mut policy = DeadlinePolicy::new(1, SMALL, PolicyConfig::default());
        let decision = policy.decide(0, FrameBudget::non_live(PERIOD, Some(0)));
        assert_eq!(decision.budget, ms(38.0));
        for _ in 0..40 {
            policy.on_qos(2.0, -(MS as i64), 0);
        }
        let decision = policy.decide(40 * MS, FrameBudget::non_live(PERIOD, Some(40 * MS)));
        assert!((decision.budget.as_secs_f64() * 1000.0 - 19.0).abs() < 0.01);
    }

    #[test]
    fn unbounded_budget_runs_the_best_variant() {
        let mut policy = DeadlinePolicy::new(3, SMALL, PolicyConfig::default());
        for (variant, cost) in LADDER.iter().enumerate() {
            policy.seed(variant, &[ms(*cost); 5]);
        }
        for i in 0..100 {
            let decision = policy.decide(i * 40 * MS, FrameBudget::unbounded(None));
            assert_eq!((decision.variant, decision.drop), (0, false));
            policy.record(0, ms(300.0), true);
        }
    }

    #[test]
    fn a_frame_already_late_is_dropped() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(5, loaded(1.0));
        // Running time 200 ms, latency 40 ms, but the element only gets it at 250 ms.
        let budget = FrameBudget::live(200 * MS, PERIOD, 250 * MS, Some(PERIOD));
        let decision = sim.policy.decide(250 * MS, budget);
        assert!(decision.drop);
        assert_eq!(decision.reason, Reason::AlreadyLate);
        assert_eq!(decision.switch, None);
        assert_eq!(sim.policy.active_variant(), Some(0));
    }

    #[test]
    fn a_frame_behind_schedule_catches_up_without_switching() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(5, loaded(1.0));
        // 15 ms left of a 40 ms frame: the heavy rung would be late, the light one is not.
        let behind = FrameBudget::live(200 * MS, PERIOD, 225 * MS, Some(PERIOD));
        let decision = sim.policy.decide(225 * MS, behind);
        assert_eq!((decision.variant, decision.drop), (2, false));
        assert_eq!(decision.reason, Reason::CatchUp);
        assert_eq!(decision.switch, None);
        sim.policy.record(2, ms(6.0), true);
        assert_eq!(sim.policy.active_variant(), Some(0));
        // 3 ms left: nothing makes it, the frame is dropped, the active rung stays.
        let hopeless = FrameBudget::live(240 * MS, PERIOD, 277 * MS, Some(PERIOD));
        let decision = sim.policy.decide(277 * MS, hopeless);
        assert!(decision.drop);
        assert_eq!((decision.reason, decision.switch), (Reason::CatchUp, None));
        // On schedule again: back on the heavy rung at once.
        sim.run(1, loaded(1.0));
        assert_eq!(sim.frames.last().unwrap().decision.variant, 0);
    }

    #[test]
    fn sudden_load_spike_steps_down_at_once() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(100, loaded(1.0));
        assert_eq!(sim.processed_on(0), 100);
        assert!(switches(&sim.frames).is_empty());
        sim.run(100, loaded(2.0));
        // One miss on the heavy rung, then the rung that fits twice the load.
        assert!(!sim.frames[100].met);
        let after = sim.frames[101].decision;
        assert_eq!(after.variant, 1);
        assert_eq!(after.reason, Reason::DeadlineMissed);
        let switch = after.switch.expect("a switch event");
        assert_eq!((switch.from, switch.to), (Some(0), 1));
        assert_eq!(misses(sim.from(100)), 1);
        // 60 ms on the heavy rung never fits: it is not even probed.
        assert!(sim.from(101).iter().all(|f| f.decision.variant == 1));
    }

    #[test]
    fn climbs_back_after_the_load_goes_away() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(100, loaded(1.0));
        sim.run(100, loaded(2.0));
        sim.run(300, loaded(1.0));
        let ups: Vec<_> = switches(sim.from(200))
            .into_iter()
            .filter(|(_, s)| s.reason == Reason::Headroom)
            .collect();
        assert_eq!(ups.len(), 1, "{ups:?}");
        let (at, up) = ups[0];
        assert_eq!((up.from, up.to), (Some(1), 0));
        let sustain = frames_in(PolicyConfig::default().sustain);
        assert!(
            at >= sustain && at <= 2 * sustain,
            "climbed after {at} frames"
        );
        // Probed in between, never more often than the probe interval.
        let probed = probes(&sim.frames[200..200 + at]);
        assert!(!probed.is_empty());
        let interval = frames_in(PolicyConfig::default().probe_interval);
        assert!(probed.windows(2).all(|w| w[1] - w[0] >= interval));
        assert_eq!(misses(sim.from(200)), 0);
        assert!(sim.from(200 + at).iter().all(|f| f.decision.variant == 0));
    }

    #[test]
    fn slow_drift_steps_down_before_missing() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(1000, |i, v| LADDER[v] * (1.0 + 1.2 * i as f64 / 1000.0));
        assert_eq!(misses(&sim.frames), 0);
        let moves = switches(&sim.frames);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(moves.iter().all(|(_, s)| s.reason == Reason::PredictedMiss));
        assert!(moves.iter().all(|(_, s)| s.to > s.from.unwrap()));
        assert_eq!(sim.policy.active_variant(), Some(2));
    }

    #[test]
    fn noisy_costs_at_the_edge_do_not_oscillate() {
        // Heavy rung 34 ms +-20%: about 6% of its frames would miss 40 ms.
        let mut noise = Noise(7);
        let mut sim = Sim::seeded(&[34.0, 20.0, 6.0], PolicyConfig::default());
        sim.run(2000, |_, v| {
            [34.0, 20.0, 6.0][v] * (1.0 + 0.2 * noise.next())
        });
        let moves = switches(&sim.frames);
        assert!(moves.len() <= 1, "{moves:?}");
        assert!(misses(&sim.frames) <= 2, "{} misses", misses(&sim.frames));
        assert_eq!(sim.policy.active_variant(), Some(1));
    }

    #[test]
    fn noisy_costs_that_fit_stay_on_the_best_rung() {
        let mut noise = Noise(11);
        let mut sim = Sim::seeded(&[28.0, 18.0, 6.0], PolicyConfig::default());
        sim.run(2000, |_, v| {
            [28.0, 18.0, 6.0][v] * (1.0 + 0.15 * noise.next())
        });
        assert!(switches(&sim.frames).is_empty());
        assert_eq!(misses(&sim.frames), 0);
        assert_eq!(sim.processed_on(0), 2000);
    }

    #[test]
    fn load_changes_every_six_seconds_cost_one_switch_each() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        let flips = 2000 / 150;
        sim.run(2000, |i, v| {
            let load = if (i / 150) % 2 == 1 { 1.4 } else { 1.0 };
            LADDER[v] * load
        });
        let moves = switches(&sim.frames);
        assert!(moves.len() <= flips, "{} switches", moves.len());
        assert!(
            moves.len() >= flips - 2,
            "{} switches: not following",
            moves.len()
        );
        assert!(misses(&sim.frames) <= flips / 2 + 1);
    }

    #[test]
    fn failed_climbs_back_off() {
        // The heavy rung is fast for 10 frames, then slow (e.g. thermal): every climb fails.
        let run = Cell::new(0);
        let mut sim = Sim::seeded(&[28.0, 18.0, 6.0], PolicyConfig::default());
        sim.run(3000, |_, v| {
            run.set(if v == 0 { run.get() + 1 } else { 0 });
            if v == 0 && run.get() > 10 {
                42.0
            } else {
                [28.0, 18.0, 6.0][v]
            }
        });
        let climbs: Vec<usize> = switches(&sim.frames)
            .into_iter()
            .filter(|(_, s)| s.reason == Reason::Headroom)
            .map(|(i, _)| i)
            .collect();
        let gaps: Vec<usize> = climbs.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] + 5 >= g[0]), "{gaps:?}");
        let sustain = frames_in(PolicyConfig::default().sustain);
        assert!(gaps.last().is_some_and(|&g| g >= 4 * sustain), "{gaps:?}");
        assert!(
            climbs.len() <= 3000 / (2 * sustain),
            "{} climbs",
            climbs.len()
        );
    }

    #[test]
    fn resolution_change_rechooses_without_a_miss() {
        let pixels = Cell::new(1.0);
        let cost = |_: usize, v: usize| LADDER[v] * pixels.get();
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(50, cost);
        sim.policy.set_frame_size(FrameSize::new(640, 360));
        pixels.set(4.0);
        assert!(!sim.policy.cost_model().is_measured(2));
        sim.run(100, cost);
        let first = sim.frames[50].decision;
        assert_eq!((first.variant, first.reason), (2, Reason::SizeChanged));
        assert_eq!(misses(sim.from(50)), 0);
        assert!(sim.policy.cost_model().is_measured(2));
        // Back to the first size: its measured costs are still there.
        sim.policy.set_frame_size(SMALL);
        pixels.set(1.0);
        sim.run(50, cost);
        let back = sim.frames[150].decision;
        assert_eq!((back.variant, back.reason), (0, Reason::SizeChanged));
        assert_eq!(misses(sim.from(150)), 0);
    }

    #[test]
    fn fixed_variant_never_adapts() {
        let config = PolicyConfig {
            fixed_variant: Some(0),
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, config);
        sim.run(200, loaded(2.0));
        assert_eq!(sim.processed_on(0), 200);
        assert!(
            sim.frames
                .iter()
                .all(|f| f.decision.reason == Reason::Fixed)
        );
        assert_eq!(misses(&sim.frames), 200);
        assert!(switches(&sim.frames).is_empty());
        let stats = sim.policy.stats();
        assert_eq!((stats.dropped, stats.misses), (0, 200));
    }

    #[test]
    fn adaptive_off_runs_the_best_allowed_variant() {
        let config = PolicyConfig {
            adaptive: false,
            best_variant: 1,
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, config);
        sim.run(100, loaded(3.0));
        assert_eq!(sim.processed_on(1), 100);
    }

    #[test]
    fn bounds_are_honoured() {
        let light_only = PolicyConfig {
            best_variant: 1,
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, light_only);
        sim.run(300, loaded(0.5));
        assert_eq!(sim.processed_on(1), 300, "variant 0 is out of bounds");

        let no_lightest = PolicyConfig {
            lightest_variant: Some(1),
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, no_lightest.clone());
        sim.run(100, loaded(3.0));
        assert_eq!(sim.processed_on(2), 0, "variant 2 is out of bounds");
        assert!(sim.policy.stats().dropped > 50);

        // Narrowing the bounds at run time moves the active variant on the next frame.
        sim.policy.set_config(PolicyConfig {
            best_variant: 2,
            lightest_variant: None,
            ..no_lightest
        });
        sim.run(1, loaded(1.0));
        let decision = sim.frames[100].decision;
        assert_eq!((decision.variant, decision.reason), (2, Reason::Bounds));
        assert!(decision.switch.is_some());
    }

    #[test]
    fn drops_when_nothing_fits_and_recovers() {
        let config = PolicyConfig::default();
        let every = config.remeasure_after_drops as usize + 1;
        let mut sim = Sim::seeded(&LADDER, config);
        sim.run(20, loaded(1.0));
        sim.run(300, loaded(8.0)); // even the lightest rung takes 48 ms
        let overloaded = &sim.frames[40..320];
        let dropped = overloaded.iter().filter(|f| f.decision.drop).count();
        assert!(
            dropped >= overloaded.len() * (every - 1) / every - 1,
            "{dropped}"
        );
        assert!(overloaded.iter().all(|f| f.decision.variant == 2));
        let remeasured: Vec<usize> = (40..320)
            .filter(|&i| sim.frames[i].decision.reason == Reason::Remeasure)
            .collect();
        assert!(
            remeasured.windows(2).all(|w| w[1] - w[0] == every),
            "{remeasured:?}"
        );
        assert!(
            overloaded
                .iter()
                .filter(|f| f.decision.drop)
                .all(|f| f.decision.reason == Reason::NothingFits)
        );
        // Load gone: the next re-measurement resumes processing, then it climbs to the top.
        sim.run(400, loaded(1.0));
        let resumed = sim.from(320).iter().position(|f| !f.decision.drop).unwrap();
        assert!(resumed <= every);
        let tail = &sim.frames[320 + every + 1..];
        let late_drops = tail.iter().filter(|f| f.decision.drop).count();
        assert_eq!(late_drops, 0);
        assert_eq!(sim.policy.active_variant(), Some(0));
        assert_eq!(misses(sim.from(320)), 0);
    }

    #[test]
    fn qos_proportion_reduces_quality_and_blocks_climbs() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(10, loaded(1.0));
        for _ in 0..200 {
            let now = sim.now();
            sim.policy
                .on_qos(1.6, -5 * MS as i64, now.saturating_sub(40 * MS));
            sim.run(1, loaded(1.0));
        }
        let moves = switches(&sim.frames);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].1.reason, Reason::QosProportion);
        assert_eq!(moves[0].1.to, 1);
        assert!(sim.from(moves[0].0).iter().all(|f| f.decision.variant == 1));
        assert!(sim.frames.iter().all(|f| !f.decision.drop));
        // Downstream keeps up again: climbs back.
        for _ in 0..200 {
            let now = sim.now();
            sim.policy
                .on_qos(0.9, -5 * MS as i64, now.saturating_sub(40 * MS));
            sim.run(1, loaded(1.0));
        }
        assert_eq!(sim.policy.active_variant(), Some(0));
    }

    #[test]
    fn sustained_qos_pressure_blocks_climbing() {
        let costs = [20.0, 12.0, 4.0];
        let mut sim = Sim::seeded(&costs, PolicyConfig::default());
        sim.run(50, |_, v| costs[v]);
        sim.run(50, |_, v| costs[v] * 2.5);
        assert_eq!(sim.policy.active_variant(), Some(1));
        // The load is gone and the heavy rung would fit with headroom even in the budget
        // shrunk by proportion 1.1, but downstream still asks for less.
        let qos = |sim: &mut Sim, proportion: f64, frames: usize| {
            for _ in 0..frames {
                let now = sim.now();
                sim.policy
                    .on_qos(proportion, -5 * MS as i64, now.saturating_sub(40 * MS));
                sim.run(1, |_, v| costs[v]);
            }
        };
        qos(&mut sim, 1.1, 300);
        assert!(sim.from(101).iter().all(|f| f.decision.variant == 1));
        qos(&mut sim, 0.95, 200);
        assert_eq!(sim.policy.active_variant(), Some(0));
    }

    #[test]
    fn without_a_deadline_the_best_allowed_variant_runs() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(5, loaded(4.0));
        for _ in 0..3 {
            let decision = sim.policy.decide(0, FrameBudget::unbounded(None));
            assert_eq!((decision.variant, decision.drop), (0, false));
            assert_eq!(decision.reason, Reason::NoDeadline);
            sim.policy.record(0, ms(200.0), true);
        }
        assert_eq!(sim.policy.active_variant(), Some(0));
    }

    #[test]
    fn new_settings_choose_afresh_without_waiting_to_climb() {
        let config = PolicyConfig {
            fixed_variant: Some(2),
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, config);
        sim.run(10, loaded(1.0));
        assert_eq!(sim.policy.active_variant(), Some(2));
        sim.policy.set_config(PolicyConfig::default());
        sim.run(1, loaded(1.0));
        let decision = sim.frames[10].decision;
        assert_eq!((decision.variant, decision.reason), (0, Reason::Settings));
        assert!(decision.switch.is_some());
        // The same settings again change nothing.
        sim.policy.set_config(PolicyConfig::default());
        sim.run(1, loaded(1.0));
        assert_eq!(sim.frames[11].decision.reason, Reason::Steady);
    }

    #[test]
    fn frames_kept_by_the_budget_run_the_cheapest_rung_instead_of_dropping() {
        let mut policy = DeadlinePolicy::new(3, SMALL, PolicyConfig::default());
        for (variant, cost) in LADDER.iter().enumerate() {
            policy.seed(variant, &[ms(*cost); 5]);
        }
        let mut ran = Vec::new();
        for i in 0..100u64 {
            let now = i * 40 * MS;
            let budget = FrameBudget::non_live(PERIOD, Some(now)).keeping_every_frame();
            let decision = policy.decide(now, budget);
            assert!(!decision.drop, "frame {i}: {decision:?}");
            let cost = ms(LADDER[decision.variant] * 8.0);
            policy.record(decision.variant, cost, cost <= PERIOD);
            ran.push(decision.variant);
        }
        assert!(ran[2..].iter().all(|&v| v == 2), "{ran:?}");
        // Downstream QoS still drops a frame it reports late.
        policy.on_qos(1.0, 20 * MS as i64, 4000 * MS);
        let budget = FrameBudget::non_live(PERIOD, Some(4000 * MS)).keeping_every_frame();
        let decision = policy.decide(4000 * MS, budget);
        assert!(decision.drop && decision.reason == Reason::QosLate);
    }

    #[test]
    fn noisy_costs_run_the_lightest_rung_rather_than_drop_when_it_is_likely_on_time() {
        // The lightest rung takes 30 ms, one frame in five 70 ms: its p95 does not fit 40 ms,
        // its mean does. Each frame has the pipeline latency (80 ms) to its deadline.
        let mut policy = DeadlinePolicy::new(3, SMALL, PolicyConfig::default());
        for (variant, cost) in [120.0, 90.0, 30.0].iter().enumerate() {
            policy.seed(variant, &[ms(*cost); 5]);
        }
        let (mut finish, mut dropped, mut late) = (0u64, 0, 0);
        for i in 0..500u64 {
            let running_time = i * 40 * MS;
            let now = finish.max(running_time);
            let budget = FrameBudget::live(running_time, 2 * PERIOD, now, Some(PERIOD));
            let decision = policy.decide(now, budget);
            if decision.drop {
                dropped += 1;
                continue;
            }
            let cost = ms(if i % 5 == 4 { 70.0 } else { 30.0 });
            finish = now + cost.as_nanos() as u64;
            let met = finish <= running_time + 80 * MS;
            late += usize::from(!met);
            policy.record(decision.variant, cost, met);
        }
        assert!(dropped <= 5, "{dropped} dropped");
        assert_eq!(late, 0);
    }

    #[test]
    fn a_frame_expected_within_the_sinks_lateness_runs() {
        let decide = |lateness_ms: u64| {
            let config = PolicyConfig {
                lateness: Duration::from_millis(lateness_ms),
                ..PolicyConfig::default()
            };
            let mut policy = DeadlinePolicy::new(1, SMALL, config);
            policy.seed(0, &[ms(45.0); 5]);
            // 30 ms to the deadline: the only rung is expected 15 ms late.
            policy.decide(0, FrameBudget::live(0, ms(30.0), 0, Some(PERIOD)))
        };
        assert!(decide(0).drop);
        let within = decide(20);
        assert!(!within.drop, "{within:?}");
    }

    #[test]
    fn a_late_frame_within_the_sinks_lateness_runs_and_beyond_it_is_dropped() {
        let config = PolicyConfig {
            lateness: Duration::from_millis(20),
            ..PolicyConfig::default()
        };
        let mut sim = Sim::seeded(&LADDER, config.clone());
        sim.run(5, loaded(1.0));
        // Deadline 240 ms (running time 200 + latency 40).
        let at = |now_ms: u64| FrameBudget::live(200 * MS, PERIOD, now_ms * MS, Some(PERIOD));
        // 10 ms late on arrival: 10 ms of the sink's 20 left, the 6 ms rung is shown in time.
        let within = sim.policy.decide(250 * MS, at(250));
        assert!(!within.drop, "{within:?}");
        assert_eq!(within.variant, 2);
        sim.policy.record(2, ms(6.0), false);
        // 25 ms late: past the sink's lateness, the sink would throw it away.
        let beyond = sim.policy.decide(265 * MS, at(265));
        assert!(beyond.drop, "{beyond:?}");
        assert_eq!(beyond.reason, Reason::AlreadyLate);
        // 15 ms late with only the 30 ms rung allowed: not expected within the 5 ms left.
        let mut heavy = Sim::seeded(&LADDER[..1], config);
        heavy.run(5, loaded(1.0));
        assert!(heavy.policy.decide(255 * MS, at(255)).drop);
    }

    #[test]
    fn a_noisy_rung_that_fits_is_climbed_back_to() {
        // The better rung takes 24 or 33 ms in turn: typical 28.5 (x1.25 fits 38 ms), tail
        // 33 (fits, but not 1.25 times over): it fits and must be used.
        let noisy = |i: usize| if i.is_multiple_of(2) { 24.0 } else { 33.0 };
        let mut policy = DeadlinePolicy::new(2, SMALL, PolicyConfig::default());
        policy.seed(0, &[ms(24.0), ms(33.0), ms(24.0), ms(33.0), ms(24.0)]);
        policy.seed(1, &[ms(16.0); 5]);
        let mut sim = Sim {
            policy,
            frames: Vec::new(),
        };
        sim.run(20, |i, v| [noisy(i), 16.0][v]);
        sim.run(20, |i, v| [noisy(i), 16.0][v] * 2.0);
        assert_eq!(sim.policy.active_variant(), Some(1));
        sim.run(400, |i, v| [noisy(i), 16.0][v]);
        assert_eq!(sim.policy.active_variant(), Some(0));
        assert_eq!(misses(sim.from(40)), 0);
    }

    #[test]
    fn qos_late_frames_are_dropped_without_switching() {
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(10, loaded(1.0));
        // The sink saw frame 9 (running time 360 ms) 50 ms late: earliest = 360 + 50, past
        // frame 10 (400 ms), not frame 11 (440 ms).
        sim.policy.on_qos(1.0, 50 * MS as i64, 360 * MS);
        sim.run(3, loaded(1.0));
        let late: Vec<Reason> = sim.from(10).iter().map(|f| f.decision.reason).collect();
        assert_eq!(late, [Reason::QosLate, Reason::Steady, Reason::Steady]);
        assert!(sim.frames[10].decision.drop && sim.frames[10].decision.switch.is_none());
        assert_eq!(sim.policy.active_variant(), Some(0));
        assert_eq!(sim.policy.stats().dropped, 1);
    }

    #[test]
    fn a_failed_probe_does_not_climb_and_is_repeated_while_it_fits() {
        // The heavy rung was not warmed up; it really takes 36 ms: fits the 38 ms budget, but
        // without headroom. It is probed once a second (its estimate may go stale; a frame on
        // it still makes the deadline) and never climbed to.
        let mut sim = Sim::new(&[None, Some(18.0), Some(6.0)], PolicyConfig::default());
        sim.run(500, |_, v| [36.0, 18.0, 6.0][v]);
        let expected: Vec<usize> = (0..20).map(|k| 1 + 25 * k).collect();
        assert_eq!(probes(&sim.frames), expected);
        assert!(
            probes(&sim.frames)
                .iter()
                .all(|&i| sim.frames[i].decision.variant == 0)
        );
        assert!(switches(&sim.frames).is_empty());
        assert_eq!(misses(&sim.frames), 0);
        assert_eq!(sim.policy.active_variant(), Some(1));
    }

    #[test]
    fn a_rung_measured_too_slow_once_is_probed_again_and_climbed_to_when_it_fits() {
        // Seeded at 36 ms (a warm-up under contention: fits, without headroom); it really takes
        // 24 ms. Probes refresh the estimate, and the stream climbs.
        let mut sim = Sim::new(
            &[Some(36.0), Some(18.0), Some(6.0)],
            PolicyConfig::default(),
        );
        sim.run(10, |_, v| [36.0, 18.0, 6.0][v]);
        assert_eq!(sim.policy.active_variant(), Some(1));
        sim.run(300, |_, v| [24.0, 18.0, 6.0][v]);
        assert_eq!(sim.policy.active_variant(), Some(0));
        assert_eq!(misses(&sim.frames), 0);
    }

    #[test]
    fn a_quiet_machine_rechecks_a_rung_measured_too_slow_and_climbs_when_it_is_fast_now() {
        // The learned rung was measured at 60 ms (a slow phase of a shared machine): it does
        // not fit the 38 ms budget at all, so no probe would ever run it again. It really
        // takes 20 ms now. On a quiet machine it is re-measured after RECHECK_FIRST, and the
        // stream climbs; without the quiet signal (CUDA, a loaded machine) it stays down.
        for quiet in [true, false] {
            let mut sim = Sim::new(&[Some(60.0), Some(3.0)], PolicyConfig::default());
            sim.policy.set_quiet(quiet);
            sim.run(500, |_, v| [20.0, 3.0][v]);
            let probed = probes(&sim.frames);
            assert_eq!(misses(&sim.frames), 0, "quiet {quiet}");
            if quiet {
                // first evaluated at frame 1 (frame 0 chose the rung)
                assert_eq!(probed[0], 1 + frames_in(RECHECK_FIRST), "{probed:?}");
                let ups = switches(&sim.frames);
                assert_eq!(ups.len(), 1, "{ups:?}");
                assert!(ups[0].0 < 200, "climbed at frame {}", ups[0].0);
                assert_eq!(sim.policy.active_variant(), Some(0));
            } else {
                assert!(probed.is_empty(), "{probed:?}");
                assert_eq!(sim.policy.active_variant(), Some(1));
            }
        }
    }

    #[test]
    fn a_live_frame_arriving_a_little_after_its_timestamp_may_recheck() {
        // Live, a frame reaches the element a little after its running time (here 0.6 ms), so
        // its budget is a little under the period; it is not behind, and the recheck runs.
        let mut policy = DeadlinePolicy::new(2, SMALL, PolicyConfig::default());
        policy.seed(0, &[ms(60.0); 5]);
        policy.seed(1, &[ms(3.0); 5]);
        policy.set_quiet(true);
        let latency = PERIOD;
        let mut rechecked = None;
        for i in 0..200u64 {
            let rt = i * 40 * MS;
            let now = rt + 600_000;
            let d = policy.decide(now, FrameBudget::live(rt, latency, now, Some(PERIOD)));
            if d.probe && d.variant == 0 {
                rechecked = Some(i);
                break;
            }
            policy.record(d.variant, ms(3.0), true);
        }
        assert_eq!(rechecked, Some(1 + frames_in(RECHECK_FIRST) as u64));
    }

    #[test]
    fn a_cold_first_frame_is_not_its_rungs_cost() {
        // A live start: the weight-free rung (GStreamer's scaler) makes the frames beside the
        // warm-up, its first one cold (12 ms: the scaler's first run) and then 25 us; the
        // learned rung above is measured at 1.2 ms and the stream climbs to it. Its cost is
        // the warm frames', not the cold one's (in the p95 of its window, and most of its mean
        // after ten frames): a stall of the learned rung then steps down to it at once.
        let mut sim = Sim::new(&[None, None], PolicyConfig::default());
        sim.run_beside_warm_up(10, |i, _| if i == 0 { 12.0 } else { 0.025 });
        let predicted = sim.policy.cost_model().predicted(1).unwrap();
        assert!(predicted < ms(0.03), "{predicted:?}");
        sim.policy.seed(0, &[ms(1.2); 5]);
        sim.run(10, |_, v| [1.2, 0.025][v]);
        assert_eq!(sim.policy.active_variant(), Some(0));
        sim.run(2, |i, v| if i == 20 { 350.0 } else { [1.2, 0.025][v] });
        let down: Vec<_> = switches(&sim.frames)
            .into_iter()
            .map(|(i, s)| (i, s.to, s.reason))
            .collect();
        assert_eq!(down[1..], [(21, 1, Reason::DeadlineMissed)], "{down:?}");
    }

    #[test]
    fn a_cold_recheck_does_not_rule_a_rung_out() {
        // The first recheck runs cold (90 ms, over twice the budget); later frames take 20 ms.
        // The rung is rechecked again (4 s later) and climbed to; a restart keeps the back-off.
        let mut sim = Sim::new(&[Some(60.0), Some(3.0)], PolicyConfig::default());
        sim.policy.set_quiet(true);
        let mut first = true;
        sim.run(400, |_, v| match v {
            0 if first => {
                first = false;
                90.0
            }
            0 => 20.0,
            _ => 3.0,
        });
        let probed = probes(&sim.frames);
        assert_eq!(&probed[..2], &[51, 151], "{probed:?}");
        assert_eq!(sim.policy.active_variant(), Some(0));

        let mut slow = Sim::new(&[Some(60.0), Some(3.0)], PolicyConfig::default());
        slow.policy.set_quiet(true);
        slow.run(200, |_, v| [60.0, 3.0][v]); // rechecks at frames 51 and 151: the wait is 8 s now
        slow.policy.restart_time();
        slow.run(300, |_, v| [60.0, 3.0][v]);
        assert_eq!(probes(&slow.frames)[2], 200 + 8 * 25); // not 2 s after the restart
    }

    #[test]
    fn rechecks_of_a_rung_that_stays_too_slow_back_off_to_once_a_minute() {
        // Really 60 ms: each recheck misses its frame, so they come 2, 4, 8, 16, 32, 60 and 60 s
        // apart (the first 2 s after frame 1, the first that could climb); hopeless rungs
        // (above twice the budget) are never rechecked.
        let mut sim = Sim::new(&[Some(60.0), Some(3.0)], PolicyConfig::default());
        sim.policy.set_quiet(true);
        sim.run(frames_in(Duration::from_secs(240)), |_, v| [60.0, 3.0][v]);
        let probed = probes(&sim.frames);
        let gaps: Vec<usize> = std::iter::once(probed[0])
            .chain(probed.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let mut expected: Vec<usize> = [2, 4, 8, 16, 32, 60, 60].map(|s| s * 25).to_vec();
        expected[0] += 1;
        assert_eq!(gaps, expected);
        assert_eq!(misses(&sim.frames), probed.len());
        assert_eq!(sim.policy.active_variant(), Some(1));

        let mut hopeless = Sim::new(&[Some(90.0), Some(3.0)], PolicyConfig::default());
        hopeless.policy.set_quiet(true);
        hopeless.run(1000, |_, v| [90.0, 3.0][v]);
        assert!(probes(&hopeless.frames).is_empty());
    }

    #[test]
    fn a_confirmed_probe_climbs_after_the_sustain_period() {
        let mut sim = Sim::new(&[None, Some(18.0), Some(6.0)], PolicyConfig::default());
        sim.run(200, |_, v| [24.0, 18.0, 6.0][v]);
        let config = PolicyConfig::default();
        let probed = probes(&sim.frames);
        let interval = frames_in(config.probe_interval);
        assert_eq!(probed[0], 1);
        assert!(
            probed.windows(2).all(|w| w[1] - w[0] >= interval),
            "{probed:?}"
        );
        // Fitting since frame 2 (after the first probe measured it).
        let ups = switches(&sim.frames);
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].0, 2 + frames_in(config.sustain));
        assert_eq!(ups[0].1.reason, Reason::Headroom);
        assert!(probed.iter().all(|&p| p < ups[0].0));
    }

    #[test]
    fn a_better_rung_that_measures_cheaper_dominates() {
        // Manifest order says 1 is better than 2 and worse than 0, but 1 is the costliest.
        let costs = [12.0, 30.0, 6.0];
        let mut sim = Sim::seeded(&costs, PolicyConfig::default());
        sim.run(50, |_, v| costs[v]);
        sim.run(100, |_, v| costs[v] * 4.0);
        sim.run(300, |_, v| costs[v]);
        assert_eq!(sim.frames[51].decision.variant, 2);
        assert_eq!(sim.processed_on(1), 0);
        assert_eq!(sim.policy.active_variant(), Some(0));
    }

    #[test]
    fn stats_match_what_ran() {
        let mut noise = Noise(3);
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(100, |_, v| LADDER[v] * (1.0 + 0.1 * noise.next()));
        sim.run(100, |_, v| LADDER[v] * 8.0);
        let stats = sim.policy.stats();
        for (variant, per) in stats.per_variant.iter().enumerate() {
            assert_eq!(per.frames as usize, sim.processed_on(variant));
        }
        let dropped = sim.frames.iter().filter(|f| f.decision.drop).count();
        assert_eq!(stats.dropped as usize, dropped);
        assert_eq!(stats.processed as usize, sim.frames.len() - dropped);
        assert_eq!(stats.switches as usize, switches(&sim.frames).len());
        assert_eq!(stats.misses as usize, misses(&sim.frames));
        let heavy = &stats.per_variant[0];
        let on_heavy = sim
            .frames
            .iter()
            .filter(|f| !f.decision.drop && f.decision.variant == 0);
        let costs: Vec<f64> = on_heavy.map(|f| nanos(f.cost.unwrap())).collect();
        let expected = costs.iter().sum::<f64>() / costs.len() as f64;
        let mean = nanos(heavy.mean_cost.unwrap());
        assert!((mean - expected).abs() < 1.0, "{mean} vs {expected}");
        let mut sorted = costs.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (sorted.len() * 95).div_ceil(100);
        let p95 = nanos(heavy.p95_cost.unwrap());
        assert!(
            (p95 - sorted[rank - 1]).abs() < 1.0,
            "{p95} vs {}",
            sorted[rank - 1]
        );
        assert!(p95 < sorted[sorted.len() - 1], "one spike is above the p95");
    }

    /// Live simulation: frame i arrives at running time i x 40 ms, frames queue behind a
    /// slow one, the sink renders at running time + latency. Returns the on-time share and the
    /// share of frames run on the best variant that fits the budget with the default headroom.
    fn live_on_time_share(config: PolicyConfig, load: impl Fn(usize) -> f64) -> (f64, f64) {
        let mut policy = DeadlinePolicy::new(3, SMALL, config);
        for (variant, cost) in LADDER.iter().enumerate() {
            policy.seed(variant, &[ms(*cost); 5]);
        }
        let latency = PERIOD;
        let (mut finish, mut on_time, mut best) = (0u64, 0usize, 0usize);
        let count = 2000;
        for i in 0..count {
            let running_time = i as u64 * 40 * MS;
            let now = finish.max(running_time);
            let budget = FrameBudget::live(running_time, latency, now, Some(PERIOD));
            let decision = policy.decide(now, budget);
            if decision.drop {
                continue;
            }
            let fits = |v: &usize| LADDER[*v] * load(i) * 1.25 <= 38.0;
            best += usize::from((0..3).find(fits) == Some(decision.variant));
            let cost = ms(LADDER[decision.variant] * load(i));
            finish = now + cost.as_nanos() as u64;
            let met = finish <= running_time + latency.as_nanos() as u64;
            policy.record(decision.variant, cost, met);
            on_time += usize::from(met);
        }
        (on_time as f64 / count as f64, best as f64 / count as f64)
    }

    #[test]
    fn live_adaptation_keeps_frames_on_time_where_a_fixed_rung_cannot() {
        // 1.5 x load: the heavy rung takes 45 ms, the middle one 27 ms (fits with headroom).
        let spike = |i: usize| if (500..1500).contains(&i) { 1.5 } else { 1.0 };
        let (adaptive, best) = live_on_time_share(PolicyConfig::default(), spike);
        assert!(adaptive >= 0.99, "adaptive on time: {adaptive}");
        assert!(
            best >= 0.95,
            "best fitting variant chosen for {best} of the frames"
        );
        let fixed_heavy = PolicyConfig {
            fixed_variant: Some(0),
            ..PolicyConfig::default()
        };
        let (fixed, _) = live_on_time_share(fixed_heavy, spike);
        assert!(fixed < 0.8, "fixed heavy on time: {fixed}");
    }

    #[test]
    fn a_frame_given_up_on_is_a_miss_of_its_rung_and_a_frame_of_the_one_that_made_it() {
        let last = LADDER.len() - 1;
        let mut rescued = Sim::seeded(&LADDER, PolicyConfig::default());
        rescued.run(20, loaded(1.0));
        let mut missed = Sim::seeded(&LADDER, PolicyConfig::default());
        missed.run(20, loaded(1.0));
        let now = rescued.now();
        let budget = FrameBudget::non_live(PERIOD, Some(now));
        let d = rescued.policy.decide(now, budget);
        assert_eq!(missed.policy.decide(now, budget), d);
        assert_eq!(d.variant, 0);
        // the heavy rung still ran 45 ms after the frame was planned; the last rung made it
        rescued.policy.record_rescued(0, ms(45.0), last, ms(2.0));
        missed.policy.record(0, ms(45.0), false);
        // the policy learns what a miss of that cost teaches: the same next decision
        let next = now + 40 * MS;
        let budget = FrameBudget::non_live(PERIOD, Some(next));
        let after = rescued.policy.decide(next, budget);
        assert_eq!(after, missed.policy.decide(next, budget));
        assert_eq!((after.variant, after.reason), (1, Reason::DeadlineMissed));
        assert_eq!(
            rescued.policy.cost_model().load(),
            missed.policy.cost_model().load()
        );
        // ... and counts the frame for the rung that made it
        let (r, m) = (rescued.policy.stats(), missed.policy.stats());
        assert_eq!((r.processed, r.misses, r.rescued), (21, 1, 1));
        assert_eq!((m.processed, m.misses, m.rescued), (21, 1, 0));
        assert_eq!(r.per_variant[0].frames, 20);
        assert_eq!(r.per_variant[last].frames, 1);
        assert_eq!(r.per_variant[last].mean_cost, Some(ms(2.0)));
        assert_eq!(m.per_variant[0].frames, 21);
    }

    #[test]
    fn a_frame_made_while_a_given_up_run_goes_on_says_nothing_of_the_planned_rung() {
        let last = LADDER.len() - 1;
        let mut sim = Sim::seeded(&LADDER, PolicyConfig::default());
        sim.run(20, loaded(1.0));
        let before = (sim.policy.predicted_cost(0), sim.policy.cost_model().load());
        for k in 0..3 {
            let now = sim.now() + k * 40 * MS;
            let d = sim
                .policy
                .decide(now, FrameBudget::non_live(PERIOD, Some(now)));
            assert_eq!((d.variant, d.drop, d.switch), (0, false, None));
            sim.policy.record_stand_in(last, ms(3.0), k != 2);
        }
        assert_eq!(
            (sim.policy.predicted_cost(0), sim.policy.cost_model().load()),
            before
        );
        let stats = sim.policy.stats();
        // the late one (k = 2) is a miss, and nothing more
        assert_eq!((stats.processed, stats.misses, stats.rescued), (23, 1, 3));
        assert_eq!(stats.per_variant[0].frames, 20);
        assert_eq!(stats.per_variant[last].frames, 3);
        // the rung's next frame is an ordinary one
        let now = sim.now() + 3 * 40 * MS;
        let d = sim
            .policy
            .decide(now, FrameBudget::non_live(PERIOD, Some(now)));
        assert_eq!((d.variant, d.reason), (0, Reason::Steady));
    }

    #[test]
    fn only_an_adapting_policy_may_stand_a_rung_in_within_its_bounds() {
        let last = LADDER.len() - 1;
        let policy = |config: PolicyConfig| DeadlinePolicy::new(LADDER.len(), SMALL, config);
        assert!(policy(PolicyConfig::default()).may_stand_in(last));
        let fixed = PolicyConfig {
            fixed_variant: Some(0),
            ..PolicyConfig::default()
        };
        assert!(!policy(fixed).may_stand_in(last));
        let not_adaptive = PolicyConfig {
            adaptive: false,
            ..PolicyConfig::default()
        };
        assert!(!policy(not_adaptive).may_stand_in(last));
        let above_it = PolicyConfig {
            lightest_variant: Some(1),
            ..PolicyConfig::default()
        };
        assert!(!policy(above_it.clone()).may_stand_in(last));
        assert!(policy(above_it).may_stand_in(1));
    }

    #[test]
    fn one_slow_frame_on_a_quiet_machine_steps_down_one_rung_not_to_the_lightest() {
        let ladder = [26.0, 22.0, 3.0];
        let steps = |quiet: bool| {
            let mut sim = Sim::seeded(&ladder, PolicyConfig::default());
            sim.policy.set_quiet(quiet);
            sim.run(20, |_, v| ladder[v]);
            // one 60 ms frame of the best rung (2.3x its cost), then the usual costs
            sim.run(1, |_, v| if v == 0 { 60.0 } else { ladder[v] });
            sim.run(1, |_, v| ladder[v]);
            assert!(!sim.frames[20].met);
            let d = sim.frames[21].decision;
            assert_eq!(d.reason, Reason::DeadlineMissed);
            d.variant
        };
        // quiet: the next lighter rung, whose costs say nothing of a slower machine
        assert_eq!(steps(true), 1);
        // another process may have taken the cores: what fits 2.3x the load
        assert_eq!(steps(false), 2);
    }

    #[test]
    fn a_rung_whose_tail_fits_the_period_but_not_the_frames_arrival_delay_still_runs() {
        // Live frames reach the element 0.5 ms after their running time: 37.5 ms of budget each,
        // against 38 for the sustainable one. The learned rung's warm-up had one slow run (37.9).
        let mut policy = DeadlinePolicy::new(2, SMALL, PolicyConfig::default());
        policy.seed(0, &[ms(20.0), ms(20.0), ms(17.0), ms(37.9), ms(19.0)]);
        policy.seed(1, &[ms(3.0); 5]);
        policy.set_quiet(true);
        let mut ran = [0usize; 2];
        for k in 0..100u64 {
            let rt = k * 40 * MS;
            let now = rt + MS / 2;
            let d = policy.decide(now, FrameBudget::live(rt, PERIOD, now, Some(PERIOD)));
            assert!(!d.drop);
            ran[d.variant] += 1;
            policy.record(d.variant, ms([20.0, 3.0][d.variant]), true);
        }
        assert_eq!(ran, [100, 0]);
    }
}
