//! `coherence-ingest`: feeds Coherence's tables.
//!
//! Subcommands:
//! * `simulate`: the seeded flight simulator (the seed's demo scenario, or millions of rows
//!   for benchmarks), written with COPY and idempotent.
//! * `datadog`: Datadog metrics and events, incremental and exactly once.
//! * `prometheus`: PromQL range queries from Prometheus (or any server with its HTTP API).
//! * `alert`: incidents to Slack and PagerDuty, each delivery once.
//! * `serve`: the live incident view (one page, a JSON API, updates pushed from NOTIFY).

mod alert;
mod config;
mod db;
mod ingest;
mod serve;
mod simulate;
mod sources;

use sources::{datadog, prometheus};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "coherence-ingest",
    version,
    about = "Feed Coherence's tables in PostgreSQL (Datadog, Prometheus, the seeded flight simulator), deliver alerts, serve the live incident view.",
    long_about = "Feed Coherence's tables (coherence.metrics, coherence.signal_events) in PostgreSQL.\n\n\
        The database is given by --database-url or DATABASE_URL, as a URL \
        (postgresql://user@host:5432/db) or a libpq key=value string \
        (host=/tmp port=5432 user=postgres dbname=coherence). The database must have the \
        coherence extension installed (CREATE EXTENSION coherence).",
    after_help = "Examples:\n  coherence-ingest simulate                       # the seed's 48h demo scenario, 2 hosts\n  coherence-ingest simulate --seed 7 --hosts 10   # other data, more hosts\n  coherence-ingest simulate --hosts 334 --scale 10000000   # ~10M rows for benchmarks"
)]
struct Cli {
    /// PostgreSQL connection (URL or key=value string).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log filter, e.g. info, debug, coherence_ingest=debug.
    #[arg(long, env = "COHERENCE_LOG", default_value = "info", global = true)]
    log: String,

    /// Log format on stderr: text (colours only on a terminal) or json (one object a line,
    /// for journald/Loki/Datadog log pipelines).
    #[arg(long, env = "COHERENCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the seeded synthetic scenario (the "flight simulator") into the database.
    Simulate(simulate::SimulateArgs),
    /// Ingest Datadog metrics and events (incremental, exactly once, read-only towards Datadog).
    ///
    /// Environment: DD_API_KEY, DD_APP_KEY, DD_SITE (or DATADOG_API_KEY, DATADOG_APP_KEY,
    /// DATADOG_SITE), DATABASE_URL. The config file maps Datadog queries to metric names.
    #[command(
        after_help = "Examples:\n  coherence-ingest datadog -c ingestor/coherence.example.toml --since 48h --once\n  coherence-ingest datadog -c coherence.toml            # daemon: a pass every 60s"
    )]
    Datadog(datadog::DatadogArgs),
    /// Ingest Prometheus range queries (PromQL), every series with its labels, exactly once.
    ///
    /// The config's [prometheus] section names the server (url), the step, the label that is the
    /// host (default instance) and the queries with the metric names they are stored under.
    #[command(
        after_help = "Examples:\n  coherence-ingest prometheus -c coherence.toml --since 6h --once\n  coherence-ingest prometheus -c coherence.toml         # daemon: a pass every 60s\n\nFeeds fail alone: see SELECT * FROM coherence.ingest_status;"
    )]
    Prometheus(prometheus::PrometheusArgs),
    /// Deliver incidents (risk >= 0.8 by default) to Slack and PagerDuty, exactly once.
    ///
    /// LISTENs on coherence_incidents and catches up on start. Destinations are in the config's
    /// [alert] section; webhook URLs and routing keys come from the environment variables it names.
    #[command(
        after_help = "Examples:\n  SLACK_WEBHOOK_URL=... PAGERDUTY_ROUTING_KEY=... coherence-ingest alert -c ingestor/coherence.example.toml\n  coherence-ingest alert -c coherence.toml --once     # deliver what is due and exit"
    )]
    Alert(alert::AlertArgs),
    /// Serve the live incident view: one page, a JSON API, updates pushed as they happen.
    ///
    /// Incidents (open first) with timeline, narrative, hypotheses, causal graph and a plot per
    /// member metric (series, expected band, anomalies, error events, time to exhaustion).
    /// New, updated and resolved incidents reach open pages from LISTEN coherence_incidents
    /// (server-sent events, no polling). Connect as a login role granted coherence_reader.
    /// Binds 127.0.0.1:8080; any non-loopback address requires a token. See docs/live-view.md.
    #[command(
        after_help = "Examples:\n  DATABASE_URL=postgresql://viewer@localhost/coherence coherence-ingest serve\n  coherence-ingest serve --bind 127.0.0.1:0          # any free port; the URL is printed\n  COHERENCE_SERVE_TOKEN=$(openssl rand -hex 16) coherence-ingest serve --bind 0.0.0.0:8080"
    )]
    Serve(serve::ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    use std::io::IsTerminal;
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }

    let result = match cli.command {
        Command::Simulate(args) => simulate::run(cli.database_url.as_deref(), args)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Datadog(args) => datadog::run(cli.database_url.as_deref(), args).await,
        Command::Prometheus(args) => prometheus::run(cli.database_url.as_deref(), args).await,
        Command::Alert(args) => alert::run(cli.database_url.as_deref(), args)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(cli.database_url.as_deref(), args)
            .await
            .map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coherence-ingest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
