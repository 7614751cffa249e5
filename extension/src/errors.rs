//! Error reporting in pg_cron's style: lowercase message, specific SQLSTATE, hint where useful.

use coherence_core::detect::DetectError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Raise a detector error as an SQL error; never returns.
pub fn raise(err: DetectError) -> ! {
    let (code, hint) = match &err {
        DetectError::InvalidParameter(_) => (
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "Defaults: window 4 hours, ratio_threshold 1.5, sigmas 2.5, pct_threshold 30; see docs/detection.md.",
        ),
        DetectError::ParameterMismatch => (
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "Use the same detector parameters on every row of a group.",
        ),
        DetectError::OutOfMemory => (
            PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
            "A detector's working memory grows with the points of one series or group; analyse a shorter time range or fewer points per group, or add memory.",
        ),
        DetectError::TooLarge(_) => (
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "Use a longer window (the seed's is interval '4 hours') or a shorter time range.",
        ),
        DetectError::Corrupt(_) => (
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            "The serialized state comes from another version of coherence; re-run the query.",
        ),
    };
    ErrorReport::new(code, err.to_string(), "coherence")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Raise an invalid-parameter error with a hint.
pub fn invalid_parameter(msg: &str, hint: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        msg.to_string(),
        "coherence",
    )
    .set_hint(hint)
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
