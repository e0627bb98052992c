// SPDX-License-Identifier: MPL-2.0
//! The default bundle compiled into the plugin by build.rs (`model/bundles/default/`).

include!(concat!(env!("OUT_DIR"), "/embedded_bundle.rs"));

/// Bytes of one embedded file, by its name inside the bundle directory.
pub fn file(name: &str) -> Option<&'static [u8]> {
    EMBEDDED_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
