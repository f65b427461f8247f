//! Structured logs: to journald when the service runs under systemd (its
//! stderr is the journal stream), to stderr otherwise, in
//! `tracing_subscriber`'s own line format. `STRATA_LOG` sets the filter,
//! with `tracing`'s directive syntax (`info`, `debug`,
//! `info,strata::decision=warn`, …). Neither sink is trusted to make client
//! text safe: [`escape`] does that before an event is logged.
//!
//! Stderr is not the production path: under systemd the journald layer is
//! used, and allowed requests go to the audit trail, not to a log. So the
//! stock formatter is used there rather than a faster hand-written one.

pub mod escape;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for a service called `name`. Returns a
/// description of where logs go, for the first log line.
pub fn init(name: &str) -> &'static str {
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|e| {
        if std::env::var_os("STRATA_LOG").is_some() {
            eprintln!("{name}: ignoring STRATA_LOG ({e}); using \"info\"");
        }
        EnvFilter::new("info")
    });
    if libsystemd::logging::connected_to_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // No field prefix: `strata_decision` becomes the journal field
                // STRATA_DECISION, which is what operators filter on.
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(name.to_string());
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                return "journald";
            }
            Err(e) => eprintln!("{name}: cannot reach journald ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .init();
    "stderr"
}
