//! The command line (DESIGN §3): serve by default, plus the operator's
//! key and account commands and `migrate-to`. Flags go before or after the
//! subcommand, and a flag beats its environment variable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use pakkt_core::account::AccountName;
use pakkt_core::id::ApiKeyId;
use pakkt_core::quota::{
    DEFAULT_MAX_AGENTS, DEFAULT_MAX_API_KEYS, DEFAULT_MAX_FIREWALL_RULES, DEFAULT_MAX_IP_ENTRIES, DEFAULT_MAX_WEBHOOKS,
    Quotas,
};
use pakkt_core::ratelimit::{
    AgentLimits, DEFAULT_AGENT_REPORTS_PER_SECOND, DEFAULT_AGENT_SYNCS_PER_SECOND, DEFAULT_LIMIT_PER_MINUTE,
};
use pakkt_core::{Error, ErrorKind};
use pakkt_store::{CopyError, Database, copy_database};

use crate::cache::KEY_CACHE_TTL;
use crate::connections::{self, ConnectionLimits};
use crate::serve::{DEFAULT_CONNECTIONS, ServeConfig, TlsFiles, bind, open_core, shutdown_signal};

/// PAKKT's control-plane server.
#[derive(Debug, Parser)]
#[command(name = "pakkt-server", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings shared by every command.
#[derive(Debug, Args)]
pub struct Global {
    /// Address to listen on.
    #[arg(long, global = true, env = "PAKKT_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Database: a file path (SQLite, created on first start), sqlite://PATH or postgres://…
    #[arg(long, global = true, env = "PAKKT_DATABASE_URL", default_value = "pakkt.db", value_name = "URL")]
    pub database: String,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, global = true, env = "PAKKT_TLS_CERT", requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, global = true, env = "PAKKT_TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics on this address instead of at /metrics on
    /// the API's listener (keeps them off a public address).
    #[arg(long, global = true, env = "PAKKT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Requests per rolling minute per API key (0 = no limit).
    #[arg(long, global = true, env = "PAKKT_RATE_LIMIT", default_value_t = DEFAULT_LIMIT_PER_MINUTE, value_name = "N")]
    pub rate_limit: u32,
    /// Database connections this process may hold at once (1–1000; a
    /// PostgreSQL replica holds one more to listen for changes).
    #[arg(
        long,
        global = true,
        env = "PAKKT_DB_CONNECTIONS",
        default_value_t = DEFAULT_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..=1000),
        value_name = "N"
    )]
    pub db_connections: u32,
    /// Close a connection after this many seconds without a request in
    /// flight (1–3600).
    #[arg(
        long,
        global = true,
        env = "PAKKT_IDLE_TIMEOUT",
        default_value_t = connections::DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600),
        value_name = "SECONDS"
    )]
    pub idle_timeout: u64,
    /// Close a connection whose request headers are not complete this many
    /// seconds after it opened or after the request's first byte (1–600).
    #[arg(
        long,
        global = true,
        env = "PAKKT_HEADER_TIMEOUT",
        default_value_t = connections::DEFAULT_HEADER_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=600),
        value_name = "SECONDS"
    )]
    pub header_timeout: u64,
    /// Connections open at once (1–1000000). At the cap, the connection
    /// idle the longest is closed to make room; the new one is refused only
    /// when every connection has a request in flight.
    #[arg(
        long,
        global = true,
        env = "PAKKT_MAX_CONNECTIONS",
        default_value_t = connections::DEFAULT_MAX_CONNECTIONS as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000),
        value_name = "N"
    )]
    pub max_connections: u64,
    /// Sync calls per second per agent, on average (0 = no limit); an
    /// agent may make 30 s worth at once.
    #[arg(
        long,
        global = true,
        env = "PAKKT_AGENT_SYNCS_PER_SECOND",
        default_value_t = DEFAULT_AGENT_SYNCS_PER_SECOND,
        value_name = "N"
    )]
    pub agent_syncs_per_second: u32,
    /// Metrics reports per second per agent, on average (0 = no limit); an
    /// agent may send 30 s worth at once.
    #[arg(
        long,
        global = true,
        env = "PAKKT_AGENT_REPORTS_PER_SECOND",
        default_value_t = DEFAULT_AGENT_REPORTS_PER_SECOND,
        value_name = "N"
    )]
    pub agent_reports_per_second: u32,
    /// What one account may hold.
    #[command(flatten)]
    pub quotas: QuotaFlags,
}

/// The per-account quotas (`docs/deployment.md`, Limits). A create over
/// one answers 422 naming the flag; 0 allows none.
#[derive(Debug, Args)]
#[command(next_help_heading = "Quotas")]
pub struct QuotaFlags {
    /// Agents per account.
    #[arg(long, global = true, env = "PAKKT_MAX_AGENTS", default_value_t = DEFAULT_MAX_AGENTS, value_name = "N")]
    pub max_agents: u32,
    /// API keys per account, made in the panel or by `keys create` (the
    /// bootstrap key is always allowed).
    #[arg(long, global = true, env = "PAKKT_MAX_KEYS", default_value_t = DEFAULT_MAX_API_KEYS, value_name = "N")]
    pub max_keys: u32,
    /// IP list entries per agent, both lists together (the default is
    /// the engine's capacity).
    #[arg(
        long,
        global = true,
        env = "PAKKT_MAX_IP_ENTRIES",
        default_value_t = DEFAULT_MAX_IP_ENTRIES,
        value_name = "N"
    )]
    pub max_ip_entries: u32,
    /// Firewall rules per agent, system rules aside.
    #[arg(
        long,
        global = true,
        env = "PAKKT_MAX_FIREWALL_RULES",
        default_value_t = DEFAULT_MAX_FIREWALL_RULES,
        value_name = "N"
    )]
    pub max_firewall_rules: u32,
    /// Webhooks per account (applies once webhooks exist).
    #[arg(long, global = true, env = "PAKKT_MAX_WEBHOOKS", default_value_t = DEFAULT_MAX_WEBHOOKS, value_name = "N")]
    pub max_webhooks: u32,
}

impl QuotaFlags {
    /// The quotas these flags set.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            agents: self.max_agents,
            api_keys: self.max_keys,
            ip_entries: self.max_ip_entries,
            firewall_rules: self.max_firewall_rules,
            webhooks: self.max_webhooks,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Suspend or resume accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Print the OpenAPI spec (what `/api/v1/openapi.json` serves).
    Openapi,
    /// Copy the whole database (--database) into an empty one at URL, e.g.
    /// from SQLite to PostgreSQL.
    ///
    /// Stop the servers first: writes made while the copy runs are not in
    /// the copy. The source is read as one snapshot and the target written
    /// in one transaction, so either everything lands or nothing does.
    /// Opening a database applies any pending migration, so the source is
    /// upgraded to this build's schema and the target gets it. Then start
    /// the servers with `--database URL`.
    #[command(name = "migrate-to")]
    MigrateTo {
        /// The target: postgres://…, sqlite://PATH or a file path. It must
        /// hold no PAKKT data.
        #[arg(value_name = "URL")]
        url: String,
    },
}

/// `keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and the account if needed); the key is the last line of the output.
    Create {
        /// The account's name.
        #[arg(long, value_name = "NAME")]
        account: AccountName,
    },
    /// Revoke an API key by its ID.
    Revoke {
        /// The key's ID, as `keys create` printed it.
        #[arg(value_name = "KEY_ID")]
        key_id: ApiKeyId,
    },
}

/// `accounts …`.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Suspend an account: its keys answer 402.
    Suspend {
        /// The account's name.
        #[arg(value_name = "NAME")]
        name: AccountName,
    },
    /// Resume a suspended account.
    Resume {
        /// The account's name.
        #[arg(value_name = "NAME")]
        name: AccountName,
    },
}

impl Cli {
    /// Runs the command; `Ok` carries the process's exit code.
    pub async fn run(self) -> Result<ExitCode> {
        let g = self.global;
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let bootstrap_api_key = std::env::var("PAKKT_BOOTSTRAP_API_KEY").ok().filter(|k| !k.is_empty());
                let tls = match (g.tls_cert, g.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                    _ => None,
                };
                let config = ServeConfig {
                    listen: g.listen,
                    database: g.database,
                    tls,
                    rate_limit: g.rate_limit,
                    db_connections: g.db_connections,
                    bootstrap_api_key,
                    metrics_listen: g.metrics_listen,
                    connections: ConnectionLimits {
                        header_timeout: std::time::Duration::from_secs(g.header_timeout),
                        idle_timeout: std::time::Duration::from_secs(g.idle_timeout),
                        max_connections: usize::try_from(g.max_connections).unwrap_or(usize::MAX),
                    },
                    agent_syncs_per_second: g.agent_syncs_per_second,
                    agent_reports_per_second: g.agent_reports_per_second,
                    quotas: g.quotas.quotas(),
                };
                bind(&config).await?.run(shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Openapi => {
                println!("{}", crate::api::spec_json());
                Ok(ExitCode::SUCCESS)
            }
            Command::MigrateTo { url } => migrate_to(&g.database, &url).await,
            Command::Keys(KeysCommand::Create { account }) => {
                let core =
                    open_core(&g.database, g.rate_limit, g.db_connections, g.quotas.quotas(), AgentLimits::default())
                        .await?;
                let outcome = core.create_api_key(&account).await;
                core.store().inner().close().await;
                let (record, key) = outcome?;
                println!("Created API key {} for account {account}. It is shown only once:", record.id);
                println!("{}", key.expose());
                Ok(ExitCode::SUCCESS)
            }
            Command::Keys(KeysCommand::Revoke { key_id }) => {
                let core =
                    open_core(&g.database, g.rate_limit, g.db_connections, g.quotas.quotas(), AgentLimits::default())
                        .await?;
                let outcome = core.revoke_api_key(key_id).await;
                core.store().inner().close().await;
                report(outcome, &format!("Revoked API key {key_id}."))
            }
            Command::Accounts(AccountsCommand::Suspend { name }) => {
                let core =
                    open_core(&g.database, g.rate_limit, g.db_connections, g.quotas.quotas(), AgentLimits::default())
                        .await?;
                let outcome = core.set_suspended(&name, true).await;
                core.store().inner().close().await;
                report(outcome, &format!("Suspended account {name}: its keys answer 402."))
            }
            Command::Accounts(AccountsCommand::Resume { name }) => {
                let core =
                    open_core(&g.database, g.rate_limit, g.db_connections, g.quotas.quotas(), AgentLimits::default())
                        .await?;
                let outcome = core.set_suspended(&name, false).await;
                core.store().inner().close().await;
                report(outcome, &format!("Resumed account {name}."))
            }
        }
    }
}

/// `migrate-to`: copies `source` into the empty database at `target` and
/// prints the rows copied per table.
async fn migrate_to(source: &str, target: &str) -> Result<ExitCode> {
    let (shown_source, shown_target) = (redacted(source), redacted(target));
    if same_database(source, target) {
        bail!(
            "{shown_target} is the database being copied (--database {shown_source}): \
             migrate-to copies into another, empty database"
        );
    }
    // Opening a missing SQLite file would create it: a mistyped source
    // would "copy" an empty database.
    if let Some(path) = sqlite_path(source).filter(|p| !p.exists()) {
        bail!(
            "the source database {} does not exist: pass the database to copy with --database \
             (or PAKKT_DATABASE_URL)",
            path.display()
        );
    }
    // An SQLite target that does not exist yet is created by opening it;
    // a failed copy removes it again, leaving things as they were.
    let created = sqlite_path(target).filter(|p| !p.exists());
    let remove_created = || {
        if let Some(path) = &created {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    };
    // The target first: a URL it cannot use stops the command before the
    // source is touched.
    let to = match Database::open(target).await {
        Ok(to) => to,
        Err(e) => {
            remove_created();
            return Err(e).with_context(|| format!("cannot open the target {shown_target}"));
        }
    };
    let from = match Database::open(source).await {
        Ok(from) => from,
        Err(e) => {
            to.close().await;
            remove_created();
            return Err(e).with_context(|| format!("cannot open the source {shown_source}"));
        }
    };
    let copied = copy_database(&from, &to).await;
    from.close().await;
    to.close().await;
    if copied.is_err() {
        remove_created();
    }
    match copied {
        Ok(report) => {
            for t in &report.tables {
                println!("{:<16} {:>10} rows", t.table, t.rows);
            }
            println!(
                "Copied {} rows from {shown_source} to {shown_target}. Start the servers with --database {shown_target}.",
                report.total()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(CopyError::TargetNotEmpty { table }) => bail!(
            "the target {shown_target} is not empty (table {table} has rows): migrate-to only fills an empty \
             database; nothing was written"
        ),
        Err(e) => Err(e).with_context(|| format!("migrate-to {shown_target} failed; nothing was written there")),
    }
}

/// The file an SQLite URL names (as `Database::open` reads it), `None`
/// for other URLs.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        Some(rest) => rest.split_once('?').map_or(rest, |(path, _)| path),
        None if !url.contains("://") => url,
        None => return None,
    };
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Whether two URLs name one database: the same SQLite file (however
/// written), or the same PostgreSQL URL.
fn same_database(a: &str, b: &str) -> bool {
    fn postgres(url: &str) -> Option<&str> {
        url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).map(|u| u.trim_end_matches('/'))
    }
    match (sqlite_path(a), sqlite_path(b)) {
        (Some(a), Some(b)) => a == b || canonical(&a).is_some_and(|a| canonical(&b) == Some(a)),
        _ => postgres(a).is_some() && postgres(a) == postgres(b),
    }
}

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// `url` with any password replaced, for printing.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    // A password may also come as a query parameter.
    match shown.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => shown,
    }
}

/// Prints the outcome of an operator command: exit 1 for something that
/// does not exist, an error for anything else. Running servers see the
/// change within [`KEY_CACHE_TTL`]; the command returns once they do.
fn report(outcome: Result<(), Error>, done: &str) -> Result<ExitCode> {
    match outcome {
        Ok(()) => {
            std::thread::sleep(KEY_CACHE_TTL);
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("pakkt-server: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_urls() {
        assert_eq!(sqlite_path("pakkt.db"), Some(PathBuf::from("pakkt.db")));
        assert_eq!(
            sqlite_path("sqlite:///var/lib/pakkt/pakkt.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/pakkt/pakkt.db"))
        );
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
        assert!(same_database("pakkt.db", "sqlite://pakkt.db"));
        assert!(same_database("postgres://u@h/db", "postgresql://u@h/db/"));
        assert!(!same_database("postgres://u@h/db", "postgres://u@h/other"));
        assert!(!same_database("pakkt.db", "postgres://u@h/db"));
        assert_eq!(redacted("postgres://pakkt:s3cret@db:5432/pakkt"), "postgres://pakkt:***@db:5432/pakkt");
        assert_eq!(redacted("postgres://pakkt@db/pakkt"), "postgres://pakkt@db/pakkt");
        assert_eq!(redacted("/var/lib/pakkt/pakkt.db"), "/var/lib/pakkt/pakkt.db");
        assert_eq!(
            redacted("postgres://db/pakkt?user=pakkt&password=s3cret&sslmode=require"),
            "postgres://db/pakkt?user=pakkt&password=***&sslmode=require"
        );
    }
}
