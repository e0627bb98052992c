// SPDX-License-Identifier: MPL-2.0
//! Deadline scheduling glue of the `lightsrscale` element: maps the properties onto the
//! [`crate::policy`] settings, places each frame on the policy's time axis (live: running
//! time + pipeline latency; otherwise the frame duration), asks the policy per frame, records
//! what the frame cost, warms the rungs up at caps time, and reports switches, drops and
//! latency changes on the bus. The GStreamer virtual methods live in [`super::imp`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gst::{prelude::*, subclass::prelude::*};
use gst_base::prelude::*;

use super::{
    imp::{CAT, DEFAULT_BOUND, FrameJob, LightSrScale, Settings, State, lock},
    report,
};
use crate::{
    convert::FrameFormat,
    engine::{Ladder, Variant, manifest::AUTO},
    policy::{self, Decision, FrameBudget, PolicyConfig},
};

/// Warm-up per rung at caps time: compiling runs not timed, then timed runs.
const WARM_UP_DISCARDED: usize = 2;
const WARM_UP_TIMED: usize = 5;
/// Total warm-up time after which the remaining rungs are left to be measured by probes.
const WARM_UP_LIMIT: Duration = Duration::from_secs(4);

/// Live-pipeline facts from the LATENCY query and event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timing {
    /// Upstream is live (from the last LATENCY query).
    pub(super) live: bool,
    pub(super) upstream_min: Duration,
    /// The pipeline latency the sinks render with (LATENCY event).
    pub(super) pipeline_latency: Option<Duration>,
    /// Processing latency this element last answered.
    pub(super) answered: Option<Duration>,
}

/// When one frame is due, on the policy's time axis.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameClock {
    running_time: Option<u64>,
    now: u64,
    budget: FrameBudget,
    /// Live: running time by which the frame must be out.
    deadline: Option<u64>,
}

/// One frame's decision and what to tell the application about it.
pub(super) struct FramePlan {
    pub(super) job: FrameJob,
    pub(super) decision: Decision,
    names: Vec<String>,
    /// `active-variant` changed.
    renamed: bool,
    processed: u64,
    dropped: u64,
    load: f64,
    qos_proportion: f64,
}

/// Maps the variant properties onto the deadline policy's settings for `ladder`: the ONE
/// place where the properties choose variants (the policy picks per frame within them).
///
/// `variant=auto` lets the policy adapt between `max-variant` (best allowed) and
/// `min-variant` (lightest allowed), or run the best allowed with `adaptive=false`; a name
/// fixes that rung.
pub(super) fn policy_config(ladder: &Ladder, settings: &Settings) -> Result<PolicyConfig, String> {
    let names: Vec<&str> = ladder.variants.iter().map(|v| v.name()).collect();
    if names.is_empty() {
        return Err(format!("ladder x{} is empty", ladder.scale));
    }
    let index = |property: &str, name: &str, unset: &str| {
        if name == unset {
            return Ok(None);
        }
        names.iter().position(|n| *n == name).map(Some).ok_or_else(|| {
            let unset = if unset.is_empty() { "\"\"" } else { unset };
            format!(
                "{property}={name} is not in the x{} ladder of this bundle (it has: {}); use {property}={unset} or one of those",
                ladder.scale,
                names.join(", ")
            )
        })
    };
    let fixed = index("variant", &settings.variant, AUTO)?;
    let best = index("max-variant", &settings.max_variant, DEFAULT_BOUND)?.unwrap_or(0);
    let lightest = index("min-variant", &settings.min_variant, DEFAULT_BOUND)?;
    if let Some(lightest) = lightest.filter(|l| *l < best) {
        return Err(format!(
            "max-variant={} is lighter than min-variant={} (the x{} ladder, best first: {}); swap them",
            names[best],
            names[lightest],
            ladder.scale,
            names.join(", ")
        ));
    }
    Ok(PolicyConfig {
        adaptive: settings.adaptive,
        fixed_variant: fixed,
        best_variant: best,
        lightest_variant: lightest,
        margin: Duration::from_nanos(settings.deadline_margin),
        lateness: Duration::from_nanos(settings.max_lateness),
        ..PolicyConfig::default()
    })
}

/// Rungs the policy may run, to warm up lightest first (so the cheap ones are measured
/// within the time limit): a fixed one, the best allowed without adaptation, else all those
/// within the bounds.
fn warm_up_order(config: &PolicyConfig, variants: usize) -> Vec<usize> {
    let last = variants.saturating_sub(1);
    let lightest = config.lightest_variant.unwrap_or(last).min(last);
    let best = config.best_variant.min(lightest);
    match config.fixed_variant {
        Some(fixed) => vec![fixed.min(last)],
        None if !config.adaptive => vec![best],
        None => (best..=lightest).rev().collect(),
    }
}

fn running_time_of(segment: &gst::Segment, pts: Option<gst::ClockTime>) -> Option<u64> {
    let segment = segment.downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(pts?).map(|t| t.nseconds())
}

impl LightSrScale {
    /// When the frame in `buffer` is due: live, against the clock and the pipeline latency;
    /// otherwise its running time is the time axis and its duration the budget.
    fn frame_clock(&self, buffer: &gst::BufferRef, frame_duration: Option<Duration>) -> FrameClock {
        let obj = self.obj();
        let running_time = running_time_of(&obj.segment(), buffer.pts());
        let frame_duration = frame_duration.or_else(|| buffer.duration().map(Duration::from));
        let timing = *lock(&self.timing);
        let live_now = obj.current_running_time().filter(|_| timing.live);
        if let (Some(now), Some(rt)) = (live_now, running_time) {
            // The sinks render at running time + pipeline latency; that latency is at least
            // upstream's plus ours, unless no sink syncs (then the bin distributes 0).
            let ours = policy::processing_latency(frame_duration, None, Duration::ZERO);
            let latency =
                (timing.upstream_min + ours).max(timing.pipeline_latency.unwrap_or_default());
            let now = now.nseconds();
            return FrameClock {
                running_time,
                now,
                budget: FrameBudget::live(rt, latency, now, frame_duration),
                deadline: Some(rt.saturating_add(latency.as_nanos() as u64)),
            };
        }
        let now = running_time.unwrap_or_else(|| self.epoch.elapsed().as_nanos() as u64);
        let budget = match frame_duration {
            Some(duration) => FrameBudget::non_live(duration, running_time),
            None => FrameBudget::unbounded(running_time),
        };
        // Not live: no frame is worthless for being slow; only downstream QoS drops.
        let budget = budget.keeping_every_frame();
        FrameClock {
            running_time,
            now,
            budget,
            deadline: None,
        }
    }

    /// Whether a frame that took `cost` made its deadline.
    pub(super) fn deadline_met(&self, clock: &FrameClock, cost: Duration) -> bool {
        match (clock.deadline, self.obj().current_running_time()) {
            (Some(deadline), Some(now)) => now.nseconds() <= deadline,
            _ => cost <= clock.budget.remaining,
        }
    }

    /// Asks the policy what to do with the next frame, and takes what that needs.
    pub(super) fn plan_frame(
        &self,
        buffer: &gst::BufferRef,
    ) -> Result<(FramePlan, FrameClock), String> {
        let mut state = lock(&self.state);
        let state = state.as_mut().ok_or("not started")?;
        let negotiated = state.negotiated.as_mut().ok_or("no caps negotiated")?;
        let clock = self.frame_clock(buffer, negotiated.frame_duration);
        let decision = negotiated.policy.decide(clock.now, clock.budget);
        let variant = negotiated
            .variants
            .get(decision.variant)
            .cloned()
            .ok_or("the policy chose a variant outside the ladder")?;
        let active = negotiated.policy.active_variant();
        let active_name = active.and_then(|v| negotiated.variants.get(v));
        let active_name = active_name.map(|v| v.name().to_string());
        let renamed = active_name
            .filter(|name| *name != negotiated.reported)
            .map(|name| negotiated.reported = name)
            .is_some();
        let stats = negotiated.policy.stats();
        let plan = FramePlan {
            job: FrameJob {
                input: negotiated.input,
                output: negotiated.output,
                variant,
            },
            decision,
            names: negotiated.names(),
            renamed,
            processed: stats.processed,
            dropped: stats.dropped,
            load: negotiated.policy.cost_model().load(),
            qos_proportion: negotiated.policy.qos_proportion(),
        };
        Ok((plan, clock))
    }

    pub(super) fn record(&self, variant: usize, cost: Duration, met: bool) {
        if let Some(negotiated) = lock(&self.state)
            .as_mut()
            .and_then(|s| s.negotiated.as_mut())
        {
            negotiated.policy.record(variant, cost, met);
        }
    }

    /// DEBUG log of the decision inputs; bus messages and notifications (no lock held).
    pub(super) fn report(&self, plan: &FramePlan, clock: &FrameClock) {
        let d = &plan.decision;
        gst::debug!(
            CAT,
            imp = self,
            "rt {:?} now {} remaining {:?} period {:?} load {:.2} qos {:.2} -> {} {}{} ({}), \
             predicted {:?}, budget {:?}",
            clock.running_time,
            clock.now,
            clock.budget.remaining,
            clock.budget.period,
            plan.load,
            plan.qos_proportion,
            if d.drop { "drop" } else { "run" },
            plan.names.get(d.variant).map_or("?", String::as_str),
            if d.probe { " (probe)" } else { "" },
            d.reason,
            d.predicted_cost,
            d.budget
        );
        let obj = self.obj();
        if let Some(switch) = &d.switch {
            let structure =
                report::variant_message(&plan.names, switch, clock.running_time, plan.load);
            gst::info!(CAT, imp = self, "switch: {structure}");
            let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
        }
        let quality_changed = d.switch.is_some_and(|s| s.from.is_some());
        if d.drop || quality_changed {
            self.post_qos(plan, clock);
        }
        if plan.renamed {
            obj.notify("active-variant");
        }
    }

    /// QoS message with processed / dropped counts, as the plugin writer's guide asks on a
    /// drop or a quality change. Jitter: how far the predicted cost exceeds the budget.
    fn post_qos(&self, plan: &FramePlan, clock: &FrameClock) {
        let obj = self.obj();
        let d = &plan.decision;
        let predicted = d.predicted_cost.unwrap_or_default().as_nanos() as i64;
        let jitter = predicted - d.budget.as_nanos().min(i64::MAX as u128) as i64;
        let variants = plan.names.len();
        let active = d.switch.map_or(d.variant, |s| s.to);
        let live = clock.deadline.is_some();
        let rt = clock.running_time.map(gst::ClockTime::from_nseconds);
        let message = gst::message::Qos::builder(live)
            .running_time(rt)
            .stream_time(rt)
            .timestamp(rt)
            .duration(
                clock
                    .budget
                    .period
                    .and_then(|d| gst::ClockTime::try_from(d).ok()),
            )
            .values(
                jitter,
                plan.qos_proportion,
                report::quality(active, variants),
            )
            .stats(
                gst::format::Buffers::from_u64(plan.processed),
                gst::format::Buffers::from_u64(plan.dropped),
            )
            .src(&*obj)
            .build();
        let _ = obj.post_message(message);
    }

    /// Runs each rung to warm up on a blank frame of the negotiated formats (compiling runs
    /// untimed, then timed ones): the policy's first cost estimates. Bounded by
    /// [`WARM_UP_LIMIT`]; rungs not reached are measured later by probes.
    fn warm_up(
        &self,
        variants: &[Arc<Variant>],
        order: &[usize],
        infos: (&gst_video::VideoInfo, &gst_video::VideoInfo),
        formats: (FrameFormat, FrameFormat),
    ) -> Result<Vec<(usize, Vec<Duration>)>, String> {
        let blank =
            |info: &gst_video::VideoInfo| gst::Buffer::from_mut_slice(vec![0u8; info.size()]);
        let inframe = gst_video::VideoFrame::from_buffer_readable(blank(infos.0), infos.0)
            .map_err(|_| "cannot map a warm-up input frame")?;
        let mut outframe = gst_video::VideoFrame::from_buffer_writable(blank(infos.1), infos.1)
            .map_err(|_| "cannot map a warm-up output frame")?;
        let started = Instant::now();
        let mut seeds = Vec::new();
        for &v in order {
            if started.elapsed() > WARM_UP_LIMIT {
                break;
            }
            let job = FrameJob {
                input: formats.0,
                output: formats.1,
                variant: variants[v].clone(),
            };
            let mut samples = Vec::with_capacity(WARM_UP_TIMED);
            for run in 0..WARM_UP_DISCARDED + WARM_UP_TIMED {
                let t = Instant::now();
                let mut out = outframe.as_mut_video_frame_ref();
                self.upscale_frame(&job, &inframe.as_video_frame_ref(), &mut out)?;
                if run >= WARM_UP_DISCARDED {
                    samples.push(t.elapsed());
                }
                if started.elapsed() > WARM_UP_LIMIT && !samples.is_empty() {
                    break;
                }
            }
            gst::debug!(
                CAT,
                imp = self,
                "warm-up {}: {samples:?}",
                variants[v].name()
            );
            seeds.push((v, samples));
        }
        if seeds.len() < order.len() {
            gst::info!(
                CAT,
                imp = self,
                "warm-up stopped after {:?}: {} rung(s) left to probes",
                started.elapsed(),
                order.len() - seeds.len()
            );
        }
        Ok(seeds)
    }

    /// Warms up the rungs the policy may run that have no cost at this size yet: at caps
    /// time, and after a property change widened the choice. No lock is held meanwhile.
    pub(super) fn warm_up_pending(&self) -> Result<(), String> {
        let (order, variants, infos, formats) = {
            let mut state = lock(&self.state);
            let Some(n) = state.as_mut().and_then(|s| s.negotiated.as_mut()) else {
                return Ok(());
            };
            let measured = |v: usize| n.policy.cost_model().is_measured(v);
            let order: Vec<usize> = warm_up_order(n.policy.config(), n.variants.len())
                .into_iter()
                .filter(|&v| !n.warmed[v] && !measured(v))
                .collect();
            if order.is_empty() {
                return Ok(());
            }
            for &v in &order {
                n.warmed[v] = true;
            }
            (
                order,
                n.variants.clone(),
                n.infos.clone(),
                (n.input, n.output),
            )
        };
        let seeds = self.warm_up(&variants, &order, (&infos.0, &infos.1), formats)?;
        gst::info!(
            CAT,
            imp = self,
            "warm-up at {}x{}: {}",
            formats.0.width,
            formats.0.height,
            seeds
                .iter()
                .map(|(v, samples)| format!("{} {samples:?}", variants[*v].name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(n) = lock(&self.state)
            .as_mut()
            .and_then(|s| s.negotiated.as_mut())
        {
            for (variant, samples) in &seeds {
                n.policy.seed(*variant, samples);
            }
        }
        Ok(())
    }

    /// This element's processing latency: one frame duration (what a synchronous element may
    /// take per frame); zero before caps.
    pub(super) fn processing_latency(&self) -> Duration {
        let state = lock(&self.state);
        let negotiated = state.as_ref().and_then(|s| s.negotiated.as_ref());
        let frame_duration = negotiated.and_then(|n| n.frame_duration);
        policy::processing_latency(frame_duration, None, Duration::ZERO)
    }

    /// Posts a latency message when the processing latency changed materially since the last
    /// LATENCY query this element answered (the bin then queries again).
    pub(super) fn check_latency(&self) {
        let latency = self.processing_latency();
        let answered = lock(&self.timing).answered;
        if let Some(old) = answered.filter(|old| policy::latency_changed_materially(*old, latency))
        {
            gst::debug!(CAT, imp = self, "processing latency {old:?} -> {latency:?}");
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
        }
    }

    /// Pushes new property values into the running policy; an invalid one is reported and
    /// left out (it fails the next negotiation with the same message).
    pub(super) fn update_policy(&self) {
        let settings = lock(&self.settings).clone();
        let refused = {
            let mut guard = lock(&self.state);
            let Some(State {
                bundle,
                negotiated: Some(negotiated),
            }) = guard.as_mut()
            else {
                return;
            };
            let Some(ladder) = bundle.ladder(negotiated.scale) else {
                return;
            };
            policy_config(ladder, &settings)
                .map(|config| negotiated.policy.set_config(config))
                .err()
        };
        if let Some(why) = refused {
            gst::warning!(CAT, imp = self, "{why}");
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{why}"));
        }
    }

    pub(super) fn stats(&self) -> gst::Structure {
        let latency = lock(&self.timing).answered.unwrap_or_default();
        let state = lock(&self.state);
        let Some(negotiated) = state.as_ref().and_then(|s| s.negotiated.as_ref()) else {
            let empty = policy::PolicyStats::default();
            let outlook = report::Outlook {
                load: 1.0,
                qos_proportion: 1.0,
                latency,
                predicted: Vec::new(),
            };
            return report::stats_structure(&[], &empty, &outlook);
        };
        let p = &negotiated.policy;
        let outlook = report::Outlook {
            load: p.cost_model().load(),
            qos_proportion: p.qos_proportion(),
            latency,
            predicted: (0..negotiated.variants.len())
                .map(|v| p.predicted_cost(v))
                .collect(),
        };
        report::stats_structure(&negotiated.names(), &p.stats(), &outlook)
    }
}
