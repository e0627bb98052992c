// SPDX-License-Identifier: MPL-2.0
//! The `lightsrscale` element: super-resolution upscaling with a TorchScript model ladder.

use gst::{glib, prelude::*};

mod caps;
mod cuda;
#[doc(hidden)]
pub use cuda::{buffer_pool_for as cuda_buffer_pool_for, is_shared_pool as is_shared_cuda_pool};
mod imp;
mod inference;
mod pinned;
mod report;
mod scheduler;

glib::wrapper! {
    pub struct LightSrScale(ObjectSubclass<imp::LightSrScale>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // libtorch's own thread count, read before any element sets one
    imp::libtorch_default_threads();
    gst::Element::register(
        Some(plugin),
        "lightsrscale",
        gst::Rank::NONE,
        LightSrScale::static_type(),
    )
}
