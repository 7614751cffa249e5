//! Sources on top of the ingest runtime (`crate::ingest`): each owns its config section, its
//! parser (with its tests) and how one chunk of one feed is fetched.

pub mod datadog;
pub mod prometheus;
