//! Small shared pieces of the network connectors: an HTTP server on a thread of its own,
//! and the wall clock that live sources stamp arrivals with.

use std::net::TcpListener;
use std::thread::JoinHandle;

/// Milliseconds since the Unix epoch by the system clock: when a live source received
/// something (see the engine's `future` module).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Serves `app` on `listener` (already bound, non-blocking) from a thread named `name`
/// with a single-threaded Tokio runtime of its own, so the engine's threads never run
/// HTTP. Failures are logged with `what` (e.g. "admin HTTP").
pub fn serve_http(
    name: &str,
    what: &'static str,
    listener: TcpListener,
    app: axum::Router,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "{what}: cannot start its runtime");
                return;
            }
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!(error = %e, "{what} stopped");
                    }
                }
                Err(e) => tracing::error!(error = %e, "{what}: cannot use the listener"),
            }
        });
    })
}
