//! `coherence.correlate`: the temporal correlator (coherence-core::correlate) over jsonb.

use crate::errors::invalid_parameter;
use coherence_core::correlate::{
    correlate_fleet, CorrelateParams, Fleet, Sample, Signal, LEAD_HORIZON_US,
};
use pgrx::prelude::*;
use pgrx::JsonB;

#[pg_extern(immutable, strict, parallel_safe, name = "correlate")]
fn correlate_v6(
    signals: JsonB,
    samples: default!(JsonB, "'[]'::jsonb"),
    tolerance: default!(Interval, "'5 minutes'"),
    min_errors: default!(i32, 3),
    join_gap: default!(Interval, "'0'"),
    fleet: default!(JsonB, "'{}'::jsonb"),
) -> JsonB {
    let signals: Vec<Signal> = serde_json::from_value(signals.0).unwrap_or_else(|e| {
        invalid_parameter(
            &format!("signals is not an array of signal objects: {e}"),
            "Each signal needs id, host, kind ('error' or 'anomaly'), start and end (Unix microseconds).",
        )
    });
    let samples: Vec<Sample> = serde_json::from_value(samples.0).unwrap_or_else(|e| {
        invalid_parameter(
            &format!("samples is not an array of sample objects: {e}"),
            "Each sample needs host, metric, ts (Unix microseconds) and value.",
        )
    });
    if tolerance.months() != 0
        || tolerance.as_micros() <= 0
        || tolerance.as_micros() > i64::MAX as i128
    {
        invalid_parameter(
            "tolerance must be a positive interval without months",
            "The seed's tolerance is interval '5 minutes'.",
        );
    }
    if min_errors < 1 {
        invalid_parameter("min_errors must be at least 1", "The default is 3.");
    }
    if join_gap.months() != 0 || join_gap.as_micros() < 0 || join_gap.as_micros() > i64::MAX as i128
    {
        invalid_parameter(
            "join_gap must be an interval of at least 0 without months",
            "coherence.run_detection() passes its close_after (default interval '30 minutes'); 0 joins nothing.",
        );
    }
    let fleet: Fleet = serde_json::from_value(fleet.0).unwrap_or_else(|e| {
        invalid_parameter(
            &format!("fleet is not an object of metric names and host counts: {e}"),
            "E.g. '{\"cpu\": 12, \"memory\": 12}': how many hosts report each metric (coherence.run_detection() counts them in coherence.series_state).",
        )
    });
    let p = CorrelateParams {
        tolerance_us: tolerance.as_micros() as i64,
        min_errors: min_errors as u64,
        join_gap_us: join_gap.as_micros() as i64,
    };
    let incidents = correlate_fleet(&signals, &samples, &fleet, &p, &mut || {
        pgrx::check_for_interrupts!();
    });
    JsonB(serde_json::to_value(incidents).expect("incidents serialize"))
}

/// How far before an incident lead evidence looks (the core's `LEAD_HORIZON_US`):
/// `run_detection` passes each host's anomalies from that long before its first anomaly in the
/// range up to the range as history signals.
#[pg_extern(immutable, parallel_safe)]
fn lead_horizon() -> Interval {
    Interval::from_micros(LEAD_HORIZON_US)
}

/// The entry point of `coherence.correlate` before 0.6.0 (4 arguments, no join gap): not in
/// the install script, but its C symbol stays in the library so a database still at an older
/// version keeps working between the new library's install and `ALTER EXTENSION coherence
/// UPDATE`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn correlate(signals: JsonB, samples: JsonB, tolerance: Interval, min_errors: i32) -> JsonB {
    correlate_v6(
        signals,
        samples,
        tolerance,
        min_errors,
        Interval::from_micros(0),
        JsonB(serde_json::json!({})),
    )
}
