//! The `chathub-proxy` command: parse arguments, load config, run, and turn an
//! error into an exit code (2 for bad configuration, 1 for anything else).

use anyhow::Context;
use chathub_proxy::config::{self, Config, ConfigError};
use chathub_proxy::{server, telemetry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chathub-proxy",
    version,
    about = "Adds the ChatHub chat panel to every HTML page of a site, as a streaming reverse proxy"
)]
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
    if matches!(cli.command, Some(Command::Demo { .. })) {
        // The demo account's password travels the way real ones do, through
        // the environment. Set before the runtime starts any thread.
        // SAFETY: single-threaded at this point; nothing reads the environment concurrently.
        unsafe {
            std::env::set_var(
                chathub_proxy::demo::DEMO_PASSWORD_ENV,
                chathub_proxy::demo::DEMO_PASSWORD,
            )
        };
    }
    // `run` reads its config before the runtime exists, so that
    // server.worker_threads can size it.
    let preloaded = match cli.command {
        None | Some(Command::Run) => match load(cli.config.as_deref()) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprint!("{e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // One worker means a current-thread runtime: everything on the main
    // thread, with no hand-off between it (in `block_on`) and a worker thread;
    // 2–4 % less CPU per request in the load benchmark (bench/README.md).
    let mut builder = match preloaded.as_ref().and_then(|c| c.server.worker_threads) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli, preloaded));
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

async fn dispatch(cli: Cli, preloaded: Option<Config>) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let cfg = match preloaded {
                Some(cfg) => cfg,
                None => load(cli.config.as_deref())?,
            };
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
            telemetry::init(&config::LogConfig {
                format: config::LogFormat::Text,
                filter: "info".into(),
            });
            run_emulator(listen, seed.as_deref())
                .await
                .context("emulator")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => {
            telemetry::init(&config::LogConfig {
                format: config::LogFormat::Text,
                filter: "info".into(),
            });
            run_demo(listen).await.context("demo")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { target } => {
            let cfg = load(cli.config.as_deref())?;
            telemetry::init(&cfg.log);
            let out = mint_for(cfg, &target).await?;
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
    let _ = writeln!(
        s,
        "listen: {}",
        cfg.server
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "admin: {}",
        cfg.admin_listen
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into())
    );
    let _ = writeln!(s, "widget: {}", cfg.inject.widget_url);
    for a in &cfg.accounts {
        let _ = writeln!(s, "account {}: {} {:?}", a.name, a.base_url, a.credentials);
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let hosts: Vec<String> = r.hosts.iter().map(|h| h.to_string()).collect();
        let default = if cfg.default_route == Some(i) {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "route {}{}: hosts [{}] path {} -> {} inject={} preserve_host={}",
            r.name,
            default,
            hosts.join(", "),
            if r.path_prefix.is_empty() {
                "/"
            } else {
                &r.path_prefix
            },
            r.upstream,
            r.inject,
            r.preserve_host
        );
        if let Some(chat) = &r.chat {
            let _ = writeln!(
                s,
                "  chat: account {} organization {:?} operator {:?}",
                chat.account.name, chat.organization, chat.operator
            );
        }
    }
    s
}

/// The `emulator` command: serve until Ctrl-C or SIGTERM.
async fn run_emulator(
    listen: std::net::SocketAddr,
    seed: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use chathub_proxy::emulator::{Emulator, Seed};
    let seed = match seed {
        Some(p) => Seed::from_file(p)?,
        None => Seed::demo(),
    };
    let emu = Emulator::start(listen, seed).await?;
    println!("ChatHub EMULATOR (not the real service) on {}", emu.url());
    shutdown_signal().await?;
    emu.shutdown();
    Ok(())
}

/// The `demo` command: emulator, demo site and proxy on loopback.
async fn run_demo(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use chathub_proxy::{
        demo,
        emulator::{Emulator, Seed},
    };
    let loopback: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let emu = Emulator::start(loopback, Seed::demo()).await?;
    let (site_addr, site) = demo::start_demo_site(loopback).await?;
    let cfg = config::from_toml_str(&demo::demo_config_toml(site_addr, &emu, listen))?;
    let running = server::start(cfg).await?;
    let url = format!(
        "http://{}/",
        running.addrs.first().copied().unwrap_or(listen)
    );
    println!();
    println!("  chathub-proxy demo is running.");
    println!("  Open {url} in a browser: the demo site, through the proxy, with the chat panel.");
    println!(
        "  ChatHub is played by the local EMULATOR at {} (not the real service).",
        emu.url()
    );
    println!("  Ctrl-C stops it.");
    println!();
    shutdown_signal().await?;
    running.shutdown().await;
    site.shutdown();
    emu.shutdown();
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// The `token` command: mint through the configured account and route, exactly
/// as a page load would, and print what came back (the token itself only on a
/// terminal request: it is a secret, so it is printed once, never logged).
async fn mint_for(cfg: Config, target: &str) -> anyhow::Result<String> {
    use chathub_proxy::{metrics::Metrics, route::RouteTable, session, token::Tokens};
    let (host, path) = match target.split_once('/') {
        Some((h, p)) => (h.to_owned(), format!("/{p}")),
        None => (target.to_owned(), "/".to_owned()),
    };
    let routes = RouteTable::new(&cfg);
    let route = routes
        .lookup(&host, &path)
        .cloned()
        .with_context(|| format!("no route for {host}{path}"))?;
    let tokens = Tokens::new(&cfg, std::sync::Arc::new(Metrics::new()))?;
    tokens.resolve().await?;
    let issued = tokens
        .token_for(&route, &session::new_id(), None)
        .await
        .map_err(|e| {
            anyhow::anyhow!("no token for route `{}`: {e} ({})", route.name, e.reason())
        })?;
    Ok(format!(
        "route: {}\nexpires_at: {}\ntoken: {}",
        route.name,
        issued.expires_at,
        issued.token.expose()
    ))
}
