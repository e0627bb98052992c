// SPDX-License-Identifier: MPL-2.0
//! GStreamer plugin `lightsrscale`: neural super-resolution of video through libtorch.
//!
//! * [`engine`]: bundle loading and TorchScript inference (no GStreamer types);
//! * [`convert`]: video frames <-> RGB tensors (no GStreamer types);
//! * [`policy`]: the deadline policy choosing a ladder rung per frame (no GStreamer types);
//! * [`cpushare`]: what other processes take of the CPUs, and the thread count per frame;
//! * the `lightsrscale` element: GStreamer glue around both.

use gst::glib;

pub mod convert;
pub mod cpushare;
pub mod engine;
mod lightsrscale;
pub mod omp;
pub mod policy;

#[doc(hidden)]
pub use lightsrscale::{cuda_buffer_pool_for, is_shared_cuda_pool};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    lightsrscale::register(plugin)
}

gst::plugin_define!(
    lightsrscale,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
