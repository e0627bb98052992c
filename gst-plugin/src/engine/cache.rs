// SPDX-License-Identifier: MPL-2.0
//! The process-wide bundle cache: every element of a process that uses the same bundle on the
//! same device shares one loaded copy (16 streams, one set of weights).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, Weak},
};

use tch::Device;

use super::{Bundle, BundleSource, EngineError};

type Key = (String, Device);

/// Weak entries: a bundle is freed when the last element using it stops.
static BUNDLES: LazyLock<Mutex<HashMap<Key, Weak<Bundle>>>> = LazyLock::new(Default::default);

/// The loaded bundle for (source, device), loading it if no element holds it yet.
pub fn load_shared(source: &BundleSource, device: Device) -> Result<Arc<Bundle>, EngineError> {
    let key = (source.identity(), device);
    // Held while loading, so two elements starting together load the bundle once.
    let mut bundles = BUNDLES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    bundles.retain(|_, weak| weak.strong_count() > 0);
    if let Some(bundle) = bundles.get(&key).and_then(Weak::upgrade) {
        return Ok(bundle);
    }
    let bundle = Arc::new(Bundle::load(source, device)?);
    bundles.insert(key, Arc::downgrade(&bundle));
    Ok(bundle)
}
