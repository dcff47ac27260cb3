//! How the gateway's long-running tasks (pull sources, the de-duplication snapshot, the
//! tracker) wait between rounds and notice that the gateway is stopping: every task holds a
//! `watch::Receiver<bool>` that turns `true` once, at shutdown.

use std::time::Duration;

/// Waits `d` or until stop; returns true when stopping.
pub async fn pause(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
