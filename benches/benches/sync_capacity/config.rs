//! What the environment asks the bench for.

use std::time::Duration;

/// What the environment asks for.
#[derive(Debug)]
pub struct Config {
    pub agents: usize,
    pub measure: Duration,
    /// The PostgreSQL server to create the bench's database on; `None` for
    /// SQLite.
    pub postgres: Option<String>,
    pub replicas: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let agents = usize::try_from(number("PAKKT_BENCH_AGENTS", 10_000)?).map_err(|e| e.to_string())?;
        let measure = Duration::from_secs(number("PAKKT_BENCH_SECONDS", 60)?);
        let replicas = usize::try_from(number("PAKKT_BENCH_REPLICAS", 1)?).map_err(|e| e.to_string())?;
        let postgres = std::env::var("PAKKT_BENCH_DATABASE").ok().filter(|v| !v.is_empty());
        if agents == 0 || measure.is_zero() || replicas == 0 {
            return Err("PAKKT_BENCH_AGENTS, PAKKT_BENCH_SECONDS and PAKKT_BENCH_REPLICAS must be at least 1".into());
        }
        if let Some(url) = &postgres
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("PAKKT_BENCH_DATABASE must be a postgres:// URL (leave it unset for SQLite)".into());
        }
        if replicas > 1 && postgres.is_none() {
            return Err(format!(
                "PAKKT_BENCH_REPLICAS={replicas} needs a database the replicas share: \
                 set PAKKT_BENCH_DATABASE=postgres://… (SQLite serves one replica)"
            ));
        }
        Ok(Self { agents, measure, postgres, replicas })
    }
}

/// The number in variable `name`, or `default` when it is unset.
fn number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}
