//! A fake Datadog API for benchmarks (`make bench`): serves synthetic `/api/v1/query` and
//! `/api/v1/events` responses in the recorded bodies' shape on loopback and prints its URL.
//! The same server the integration tests use (tests/common/fake_datadog.rs).

#[path = "../tests/common/fake_datadog.rs"]
mod fake_datadog;

#[tokio::main]
async fn main() {
    let fake = fake_datadog::FakeDatadog::start(fake_datadog::Mode::Synthetic).await;
    println!("{}", fake.url);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Serve until killed.
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}
