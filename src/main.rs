//! The `rrdp-proxy` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::server::RunArgs;

use rrdp_proxy::config::{parse_duration, parse_size, Config};

/// A caching reverse proxy for RPKI RRDP repositories.
///
/// It polls each repository's upstream notification, fetches and SHA-256-verifies every
/// snapshot and delta it references, stores them durably, and only then publishes the new
/// notification to clients, so a client never sees a notification whose files are missing.
/// When the upstream fails, clients keep getting the last consistent repository.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The configuration file (TOML); see docs/configuration.md.
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        default_value = "proxy.toml"
    )]
    config: PathBuf,

    /// Take the listening sockets over from the running rrdp-proxy (same server.upgrade_sock)
    /// instead of binding them: start the new process with this flag, then send the old one
    /// SIGQUIT. No connection is refused in between. See docs/operations.md.
    #[arg(long)]
    upgrade: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration file and exit: 0 if valid, 1 with the key and the reason of
    /// the first error.
    Check,
    /// Run one round for every repository and exit: fetch and verify the upstream, publish it
    /// to the cache, write the exports (export_rrdp, export_rsync), collect garbage. A
    /// drop-in for a krill-sync cron job. Exit status: 0 all published (new or unchanged),
    /// 1 bad configuration, 2 an upstream failed or was refused (what was exported stays),
    /// 3 a local failure (cache, export directory, another run holding the lock).
    Sync,
    /// Run only the built-in demo Publication Server (a generated repository that publishes a
    /// new serial every interval).
    Demo {
        /// Address to listen on; files are published under http://ADDR/rrdp/.
        #[arg(long, default_value = "127.0.0.1:3001")]
        listen: std::net::SocketAddr,
        /// Time between new serials, e.g. "5s".
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Generate a large repository instead: a snapshot of about this size (e.g. "500MiB"),
        /// for benchmarks.
        #[arg(long, value_parser = parse_size)]
        snapshot_size: Option<u64>,
        /// With --snapshot-size: how many deltas (1 KiB to 1 MiB each) to list.
        #[arg(long, default_value_t = 150)]
        deltas: usize,
        /// Serve this many repositories: the first under /rrdp/, small ones under /rrdp-2/,
        /// /rrdp-3/, … (an origin for an edge node fronting many CAs).
        #[arg(long, default_value_t = 1)]
        repositories: usize,
    },
}

/// The event log at `level` (RUST_LOG overrides it), the access log on or off.
fn init_logging(level: &str, access: bool) {
    let default = if access {
        level.to_string()
    } else {
        format!("{level},access=off")
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}

fn main() -> ExitCode {
    rrdp_proxy::heap::limit_arenas();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => match Config::load(&cli.config) {
            Ok(config) => {
                println!("{}: ok", cli.config.display());
                for line in config.summary() {
                    println!("  {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                ExitCode::FAILURE
            }
        },
        Some(Command::Sync) => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", cli.config.display());
                    return ExitCode::from(rrdp_proxy::ops::oneshot::CONFIG);
                }
            };
            init_logging(&config.log.level, false);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(rrdp_proxy::ops::oneshot::LOCAL);
                }
            };
            ExitCode::from(runtime.block_on(rrdp_proxy::ops::oneshot::run(config)))
        }
        Some(Command::Demo {
            listen,
            interval,
            snapshot_size,
            deltas,
            repositories,
        }) => {
            init_logging("info", true);
            // Exit promptly on SIGTERM (pingora's default grace period is five minutes).
            let conf = pingora::server::configuration::ServerConf {
                grace_period_seconds: Some(1),
                graceful_shutdown_timeout_seconds: Some(5),
                ..Default::default()
            };
            let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let large = snapshot_size.map(|s| (s, deltas));
            rrdp_proxy::add_demo(&mut server, listen, interval, large, repositories);
            server.run(RunArgs::default());
            ExitCode::SUCCESS
        }
        None => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", cli.config.display());
                    return ExitCode::FAILURE;
                }
            };
            init_logging(
                &config.log.level,
                config.log.access != rrdp_proxy::config::AccessLog::Off,
            );
            match rrdp_proxy::build_server_upgrading(config, cli.upgrade) {
                Ok((server, _shared)) => {
                    server.run(RunArgs::default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", cli.config.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
