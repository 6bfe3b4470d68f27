//! The flags `import` and `serve` share: which session events go to, how automatic sessions end,
//! and how events become records.

use std::time::Duration;

use anyhow::{Context, bail};
use kubestep_ingest::actor::ActorRule;
use kubestep_ingest::normalize::{DEFAULT_MAX_OBJECT_BYTES, NormalizeConfig};
use kubestep_schemas::session::validate_session_name;

/// Session and record settings.
#[derive(clap::Args)]
pub struct RecordingArgs {
    /// Record into this named session instead of automatic ones.
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    /// An automatic session ends after this long without events.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    idle_gap: Duration,
    /// Objects larger than this many bytes are stored as a stub that keeps their metadata.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_OBJECT_BYTES)]
    max_object_bytes: usize,
    /// Name the actor of matching requests: `REGEX=NAME`, matched against `username|user_agent`. Repeatable.
    #[arg(long = "actor-rule", value_name = "REGEX=NAME")]
    actor_rules: Vec<String>,
}

/// The flags, checked.
pub struct Recording {
    /// The named session, if any.
    pub session: Option<String>,
    /// `--idle-gap` in microseconds.
    pub idle_gap_us: i64,
    /// How events become records.
    pub normalize: NormalizeConfig,
}

impl RecordingArgs {
    /// Checks the flags: a valid session name, parseable actor rules, a positive idle gap.
    pub fn resolve(&self) -> anyhow::Result<Recording> {
        if let Some(session) = &self.session {
            validate_session_name(session)?;
        }
        let actor_rules = self.actor_rules.iter().map(|r| ActorRule::parse(r)).collect::<Result<Vec<_>, _>>()?;
        let idle_gap_us = i64::try_from(self.idle_gap.as_micros()).context("--idle-gap is too large")?;
        if idle_gap_us <= 0 {
            bail!("--idle-gap must be longer than zero");
        }
        Ok(Recording {
            session: self.session.clone(),
            idle_gap_us,
            normalize: NormalizeConfig { max_object_bytes: self.max_object_bytes, actor_rules },
        })
    }
}
