// SPDX-License-Identifier: MPL-2.0
//! What `lightsrscale` tells the application about its deadline policy: the `stats` property
//! structure, the `lightsrscale-variant` element message and the QoS quality level.

use std::time::Duration;

use crate::policy::{PolicyStats, VariantSwitch};

/// Name of the element message posted at each change of the active variant.
pub const VARIANT_MESSAGE: &str = "lightsrscale-variant";
/// Name of the structure the `stats` property returns.
pub const STATS_STRUCTURE: &str = "lightsrscale-stats";

fn nanos(span: Option<Duration>) -> u64 {
    span.map_or(0, |s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX))
}

/// What the policy knows beyond its counters, for the `stats` structure.
pub struct Outlook {
    pub load: f64,
    pub qos_proportion: f64,
    pub latency: Duration,
    /// Predicted cost per variant at the current size and load.
    pub predicted: Vec<Option<Duration>>,
}

/// `lightsrscale-stats`: counters, the machine load, and per variant (best first) frames,
/// mean / p95 / predicted cost in ns (0 = unknown).
pub fn stats_structure(names: &[String], stats: &PolicyStats, outlook: &Outlook) -> gst::Structure {
    let active = stats
        .active
        .and_then(|v| names.get(v))
        .cloned()
        .unwrap_or_default();
    let variants = names.iter().enumerate().map(|(i, name)| {
        let per = stats.per_variant.get(i).cloned().unwrap_or_default();
        gst::Structure::builder("variant")
            .field("name", name)
            .field("frames", per.frames)
            .field("mean-cost", nanos(per.mean_cost))
            .field("p95-cost", nanos(per.p95_cost))
            .field(
                "predicted-cost",
                nanos(outlook.predicted.get(i).copied().flatten()),
            )
            .build()
    });
    gst::Structure::builder(STATS_STRUCTURE)
        .field("active-variant", active)
        .field("processed", stats.processed)
        .field("dropped", stats.dropped)
        .field("switches", stats.switches)
        .field("probes", stats.probes)
        .field("misses", stats.misses)
        .field("rescued", stats.rescued)
        .field("load", outlook.load)
        .field("qos-proportion", outlook.qos_proportion)
        .field("latency", nanos(Some(outlook.latency)))
        .field("variants", gst::Array::new(variants))
        .build()
}

/// `lightsrscale-variant`: from (empty on the first frame), to, their ladder indices (from
/// -1 on the first frame), reason, predicted cost and budget (ns), running time, load.
pub fn variant_message(
    names: &[String],
    switch: &VariantSwitch,
    running_time: Option<u64>,
    load: f64,
) -> gst::Structure {
    let name = |v: usize| names.get(v).cloned().unwrap_or_default();
    gst::Structure::builder(VARIANT_MESSAGE)
        .field("from", switch.from.map(name).unwrap_or_default())
        .field("to", name(switch.to))
        .field("from-index", switch.from.map_or(-1, |v| v as i32))
        .field("to-index", switch.to as i32)
        .field("reason", switch.reason.as_str())
        .field("predicted-cost", nanos(switch.predicted_cost))
        .field("budget", nanos(Some(switch.budget)))
        .field("running-time", running_time.unwrap_or(u64::MAX))
        .field("load", load)
        .build()
}

/// QoS quality level of a variant: 1000000 for the best rung down to 0 for the lightest.
pub fn quality(variant: usize, variants: usize) -> i32 {
    let last = variants.saturating_sub(1);
    if last == 0 {
        return 1_000_000;
    }
    (1_000_000 * (last - variant.min(last)) / last) as i32
}
