//! `kubestep demo`: the whole product in one command, no cluster needed. A simulated cluster's
//! audit events go through the real webhook path into a fresh recording, which is then analysed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use kubestep_ingest::server::{ServeConfig, Server};
use kubestep_sim::SimulateOptions;

use super::simulate::{WebhookArgs, post_simulation};

/// The session the demo records into.
const SESSION: &str = "demo";

/// Arguments of `kubestep demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Record into this directory (it must not hold a recording yet); default: a new temporary one.
    #[arg(short = 'd', long = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// About this many simulated audit events.
    #[arg(long, default_value_t = 6000)]
    events: u64,
    /// Random seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn fresh_dir(requested: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match requested {
        Some(dir) => dir,
        None => {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            std::env::temp_dir().join(format!("kubestep-demo-{stamp}-{}", std::process::id()))
        }
    };
    if dir.join("operations").exists() {
        bail!("{} already holds a recording; give the demo a new directory", dir.display());
    }
    Ok(dir)
}

/// Runs the demo and prints what KubeStep found.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data = fresh_dir(args.data)?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;

    // 1. The ingest service, on a free loopback port, recording into the named session.
    let mut config = ServeConfig::new(data.clone());
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.session = Some(SESSION.into());
    let server = runtime.block_on(Server::bind(config))?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");
    println!("Recording a simulated cluster through the audit webhook at {base}/audit into {}", data.display());

    // 2. The simulated cluster posts its audit events as the API server's webhook backend would.
    let options = SimulateOptions { seed: args.seed, events: Some(args.events), ..SimulateOptions::new("mixed") };
    let (truth, report) = post_simulation(&options, WebhookArgs::quick().options(&format!("{base}/audit"))?)?;
    if report.dropped_batches > 0 {
        bail!("the service refused {} batches: {}", report.dropped_batches, report.last_error.unwrap_or_default());
    }
    println!(
        "Posted {} audit events (scenarios {}) in {} batches: {:.0} events/s, ack p99 {:.1} ms",
        report.events,
        {
            let mut names = truth.scenarios.clone();
            names.sort();
            names.dedup();
            names.join(", ")
        },
        report.batches,
        report.events_per_second(),
        report.latency_ms(0.99)
    );

    // 3. Stop the session (its events are in Parquet when this returns), then the service.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut answer =
        agent.post(&format!("{base}/sessions/{SESSION}/stop")).send_empty().context("stopping the session")?;
    if !answer.status().is_success() {
        bail!("stopping the session: {}", answer.body_mut().read_to_string().unwrap_or_default());
    }
    let _ = stop.send(());
    runtime.block_on(serving).context("the service stopped abnormally")??;
    println!("Session {SESSION:?} stopped and stored in {:.1}s.\n", started.elapsed().as_secs_f64());

    // 4. What KubeStep sees.
    runtime.block_on(async {
        let ctx = kubestep_query::open_recording(&data).await?;
        println!("$ kubestep sessions");
        super::sessions::print_from_rows(&ctx, crate::OutputFormat::Text).await?;
        println!("\n$ kubestep analyze {SESSION}");
        let options = kubestep_query::analyze::AnalyzeOptions::all();
        let report = kubestep_query::analyze::analyze(&ctx, SESSION, &options).await?;
        print!("{}", super::analyze::render_text(&report, &options));
        println!("$ kubestep analyze causality --session {SESSION}");
        let causality_options =
            kubestep_query::causality::CausalityOptions { max_chains: 3, whole_graph: false, ..Default::default() };
        let chains = kubestep_query::causality::causality(&ctx, SESSION, &causality_options).await?;
        println!("{}", super::causality::render_text(&chains));
        anyhow::Ok(())
    })?;
    let d = data.display();
    println!("Explore further:");
    println!("  kubestep report {SESSION} -d {d} -o {SESSION}-report.html   # the timeline, open it in a browser");
    println!("  kubestep replay {SESSION} -d {d} --writes-only --diff | less");
    println!("  kubestep replay {SESSION} -d {d} --object Deployment/shop/api --diff");
    println!("  kubestep replay {SESSION} -d {d} -i");
    println!("  kubestep analyze {SESSION} -d {d} --format json");
    println!("  kubestep analyze causality --session {SESSION} -d {d} --format dot | dot -Tsvg > chains.svg");
    println!("  kubestep sql -d {d} \"SELECT actor_id, count(*) AS writes FROM writes GROUP BY 1 ORDER BY 2 DESC\"");
    Ok(ExitCode::SUCCESS)
}
