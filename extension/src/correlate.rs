//! `coherence.correlate`: the temporal correlator (coherence-core::correlate) over jsonb.

use crate::errors::invalid_parameter;
use coherence_core::correlate::{correlate_with, CorrelateParams, Sample, Signal};
use pgrx::prelude::*;
use pgrx::JsonB;

#[pg_extern(immutable, strict, parallel_safe)]
fn correlate(
    signals: JsonB,
    samples: default!(JsonB, "'[]'::jsonb"),
    tolerance: default!(Interval, "'5 minutes'"),
    min_errors: default!(i32, 3),
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
    let p = CorrelateParams {
        tolerance_us: tolerance.as_micros() as i64,
        min_errors: min_errors as u64,
    };
    let incidents = correlate_with(&signals, &samples, &p, &mut || {
        pgrx::check_for_interrupts!();
    });
    JsonB(serde_json::to_value(incidents).expect("incidents serialize"))
}
