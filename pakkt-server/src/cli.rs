//! The command line (DESIGN §3): serve by default, plus the operator's
//! key and account commands. Flags go before or after the subcommand, and
//! a flag beats its environment variable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use pakkt_core::account::AccountName;
use pakkt_core::id::ApiKeyId;
use pakkt_core::ratelimit::DEFAULT_LIMIT_PER_MINUTE;
use pakkt_core::{Error, ErrorKind};

use crate::cache::KEY_CACHE_TTL;
use crate::serve::{ServeConfig, TlsFiles, bind, open_core, shutdown_signal};

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
                    bootstrap_api_key,
                    metrics_listen: g.metrics_listen,
                };
                bind(&config).await?.run(shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Openapi => {
                println!("{}", crate::api::spec_json());
                Ok(ExitCode::SUCCESS)
            }
            Command::Keys(KeysCommand::Create { account }) => {
                let core = open_core(&g.database, g.rate_limit).await?;
                let outcome = core.create_api_key(&account).await;
                core.store().inner().close().await;
                let (record, key) = outcome?;
                println!("Created API key {} for account {account}. It is shown only once:", record.id);
                println!("{}", key.expose());
                Ok(ExitCode::SUCCESS)
            }
            Command::Keys(KeysCommand::Revoke { key_id }) => {
                let core = open_core(&g.database, g.rate_limit).await?;
                let outcome = core.revoke_api_key(key_id).await;
                core.store().inner().close().await;
                report(outcome, &format!("Revoked API key {key_id}."))
            }
            Command::Accounts(AccountsCommand::Suspend { name }) => {
                let core = open_core(&g.database, g.rate_limit).await?;
                let outcome = core.set_suspended(&name, true).await;
                core.store().inner().close().await;
                report(outcome, &format!("Suspended account {name}: its keys answer 402."))
            }
            Command::Accounts(AccountsCommand::Resume { name }) => {
                let core = open_core(&g.database, g.rate_limit).await?;
                let outcome = core.set_suspended(&name, false).await;
                core.store().inner().close().await;
                report(outcome, &format!("Resumed account {name}."))
            }
        }
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
