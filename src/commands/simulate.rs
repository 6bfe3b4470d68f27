//! `kubestep simulate`: a simulated cluster's audit events, to a file or to a webhook.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kubestep_sim::webhook::{Batcher, SendReport, WebhookOptions};

use super::client::ClientArgs;
use kubestep_sim::{GroundTruth, SCENARIOS, SimulateOptions, log_line, simulate};

/// Arguments of `kubestep simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// What happens in the cluster: rollout, operator, hot-loop, fight, conflicts, slow, or mixed.
    #[arg(long, default_value = "mixed", value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    scenario: String,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the cluster busy until at least this many events.
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Write JSON lines (the log backend's format) to this file instead of standard output.
    #[arg(long, value_name = "FILE", conflicts_with = "to")]
    out: Option<PathBuf>,
    /// Post EventList batches to this webhook URL, as the API server does.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Write the ground truth (what the analyses should find) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    #[command(flatten)]
    webhook: WebhookArgs,
}

/// How `--to` posts (the API server's `--audit-webhook-batch-*` settings).
#[derive(clap::Args, Clone)]
pub struct WebhookArgs {
    /// Events per EventList.
    #[arg(long, default_value_t = 400)]
    batch_size: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Attempts per batch before it is dropped.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Wait before the first retry; each next one waits 1.5 times longer (Retry-After wins).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    retry_backoff: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

impl WebhookArgs {
    /// The defaults, for callers that post to their own server.
    pub fn quick() -> Self {
        WebhookArgs {
            batch_size: 400,
            concurrency: 4,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(500),
            client: ClientArgs::default(),
        }
    }

    /// The webhook options for `url`.
    pub fn options(&self, url: &str) -> anyhow::Result<WebhookOptions> {
        let agent = self.client.agent(Duration::from_secs(30))?;
        let token = self.client.token()?;
        Ok(WebhookOptions {
            url: url.to_owned(),
            batch_size: self.batch_size.max(1),
            concurrency: self.concurrency.max(1),
            max_attempts: self.max_attempts.max(1),
            initial_backoff: self.retry_backoff,
            token,
            agent,
        })
    }
}

/// Plays `options` and posts every event to the webhook; returns the truth and what sending did.
pub fn post_simulation(
    options: &SimulateOptions,
    webhook: WebhookOptions,
) -> anyhow::Result<(GroundTruth, SendReport)> {
    let mut batcher = Batcher::new(webhook);
    let truth = simulate(options, &mut |event| batcher.push(&event)).map_err(anyhow::Error::msg)?;
    Ok((truth, batcher.finish()))
}

/// Simulates and writes or posts the events.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let options = SimulateOptions {
        scenario: args.scenario.clone(),
        seed: args.seed,
        events: args.events,
        ..SimulateOptions::new("mixed")
    };
    let truth = match &args.to {
        Some(url) => {
            let (truth, report) = post_simulation(&options, args.webhook.options(url)?)?;
            eprintln!(
                "posted {} events in {} batches to {url} in {:.2}s: {:.0} events/s, ack p50 {:.1} ms, p99 {:.1} ms, {} retries",
                report.events,
                report.batches,
                report.elapsed.as_secs_f64(),
                report.events_per_second(),
                report.latency_ms(0.5),
                report.latency_ms(0.99),
                report.retries
            );
            if report.dropped_batches > 0 {
                bail!(
                    "{} batches ({} events) were dropped after {} attempts; last error: {}",
                    report.dropped_batches,
                    report.dropped_events,
                    args.webhook.max_attempts,
                    report.last_error.unwrap_or_default()
                );
            }
            truth
        }
        None => {
            let mut out: Box<dyn Write> = match &args.out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut failure = None;
            let truth = simulate(&options, &mut |event| {
                if failure.is_none()
                    && let Err(e) = writeln!(out, "{}", log_line(&event))
                {
                    failure = Some(e);
                }
            })
            .map_err(anyhow::Error::msg)?;
            if let Some(e) = failure {
                return Err(e).context("writing the events");
            }
            out.flush().context("writing the events")?;
            truth
        }
    };
    if let Some(path) = &args.truth {
        std::fs::write(path, serde_json::to_string_pretty(&truth)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
