//! Database connection helpers.

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, NoTls};

/// Connects and checks that the coherence extension is installed.
pub async fn connect(url: Option<&str>) -> Result<Client> {
    let Some(url) = url else {
        bail!(
            "no database given: set DATABASE_URL or pass --database-url \
             (e.g. postgresql://postgres@localhost:5432/coherence); `make psql` shows the local one"
        );
    };
    let config: tokio_postgres::Config = url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL connection string")?;
    let (client, conn) = config
        .connect(NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!("postgres connection error: {e}");
        }
    });
    let has_ext = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'coherence'",
            &[],
        )
        .await
        .context("cannot query pg_extension")?
        .is_some();
    if !has_ext {
        bail!("the coherence extension is not installed in this database: run CREATE EXTENSION coherence;");
    }
    Ok(client)
}
