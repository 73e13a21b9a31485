//! The `chathub-proxy` command: parse arguments, load config, run, and turn an
//! error into an exit code (2 for bad configuration, 1 for anything else).

use anyhow::Context;
use chathub_proxy::config::{self, Config, ConfigError};
use chathub_proxy::{server, telemetry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "chathub-proxy", version, about = "Adds the ChatHub chat panel to every HTML page of a site, as a streaming reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (default: ./config.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print the resolved routes, secrets redacted.
    CheckConfig,
    /// Run the local ChatHub EMULATOR (not the real service).
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Seed file (TOML or JSON) with companies, organizations and operators.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Run the built-in demo: emulator, demo site and proxy on loopback.
    Demo {
        /// Address the proxy listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Mint (or show) a token through the configured account and route for HOST[/PATH].
    Token {
        /// e.g. `www.example.com/shop`
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(cfg) = e.downcast_ref::<ConfigError>() {
                eprint!("{cfg}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let cfg = load(cli.config.as_deref())?;
            telemetry::init(&cfg.log);
            server::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let cfg = load(cli.config.as_deref())?;
            print!("{}", describe(&cfg));
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulator { listen, seed } => {
            telemetry::init(&config::LogConfig { format: config::LogFormat::Text, filter: "info".into() });
            pending::run_emulator(listen, seed.as_deref()).await.context("emulator")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => {
            telemetry::init(&config::LogConfig { format: config::LogFormat::Text, filter: "info".into() });
            pending::run_demo(listen).await.context("demo")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { target } => {
            let cfg = load(cli.config.as_deref())?;
            telemetry::init(&cfg.log);
            let out = pending::cli_token(&cfg, &target).await?;
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    config::load(path)
}

/// The resolved configuration as `check-config` prints it. Secrets are never
/// printed: credentials show only where they come from.
fn describe(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "configuration OK");
    let _ = writeln!(s, "listen: {}", cfg.server.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "admin: {}", cfg.admin_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));
    let _ = writeln!(s, "widget: {}", cfg.inject.widget_url);
    for a in &cfg.accounts {
        let _ = writeln!(s, "account {}: {} {:?}", a.name, a.base_url, a.credentials);
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let hosts: Vec<String> = r.hosts.iter().map(|h| h.to_string()).collect();
        let default = if cfg.default_route == Some(i) { " (default)" } else { "" };
        let _ = writeln!(
            s,
            "route {}{}: hosts [{}] path {} -> {} inject={} preserve_host={}",
            r.name,
            default,
            hosts.join(", "),
            if r.path_prefix.is_empty() { "/" } else { &r.path_prefix },
            r.upstream,
            r.inject,
            r.preserve_host
        );
        if let Some(chat) = &r.chat {
            let _ = writeln!(s, "  chat: account {} organization {:?} operator {:?}", chat.account.name, chat.organization, chat.operator);
        }
    }
    s
}

/// Commands whose library side is still being written.
mod pending {
    pub async fn run_emulator(_: std::net::SocketAddr, _: Option<&std::path::Path>) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
    pub async fn run_demo(_: std::net::SocketAddr) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
    pub async fn cli_token(_: &chathub_proxy::config::Config, _: &str) -> anyhow::Result<String> {
        anyhow::bail!("not implemented yet")
    }
}
