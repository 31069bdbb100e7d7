//! The `rrdp-proxy` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use pingora::server::RunArgs;

use rrdp_proxy::{parse_duration, parse_size, Config};

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
    /// Print a manual page in roff: rrdp-proxy(1) (section 1, from these options) or
    /// rrdp-proxy.conf(5) (section 5, from docs/configuration.md). `rrdp-proxy man | man -l -`
    /// reads it.
    Man {
        /// The section: 1 (the command) or 5 (the configuration file).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
        section: u8,
        /// Write the page to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Validate the configuration file and exit: 0 if valid, 1 with the key and the reason of
    /// the first error.
    Check,
    /// Print the effective configuration: every key, defaults filled in, paths resolved, as a
    /// config file that `check` accepts and that means the same.
    Config,
    /// Run one round for every repository and exit: fetch and verify the upstream, publish it
    /// to the cache, write the exports (export_rrdp, export_rsync), collect garbage. A
    /// drop-in for a krill-sync cron job. Exit status: 0 all published (new or unchanged),
    /// 1 bad configuration, 2 an upstream failed or was refused (what was exported stays),
    /// 3 a local failure (cache, export directory, another process owning the cache).
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

/// rrdp-proxy(1): clap's page of the options and commands, then what an operator looks up
/// next (exit status, signals, files, examples).
fn command_page() -> String {
    let mut page = Vec::new();
    let cmd = Cli::command().name("rrdp-proxy");
    let man = clap_mangen::Man::new(cmd);
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    let _ = man.render_options_section(&mut page);
    let mut page = String::from_utf8_lossy(&page).into_owned();
    // Each command with its own options, here rather than in pages of their own.
    page.push_str(".SH COMMANDS\n");
    for sub in Cli::command().get_subcommands() {
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        page.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            sub.get_name(),
            rrdp_proxy::roff_text(&about)
        ));
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            let Some(long) = arg.get_long() else { continue };
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| format!(" <{v}>"))
                .unwrap_or_default();
            let default = arg
                .get_default_values()
                .first()
                .map(|d| format!(" [default: {}]", d.to_string_lossy()))
                .unwrap_or_default();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            page.push_str(&format!(
                ".RS\n.TP\n\\fB\\-\\-{}\\fR{}{}\n{}\n.RE\n",
                rrdp_proxy::roff_text(long),
                rrdp_proxy::roff_text(&value),
                rrdp_proxy::roff_text(&default),
                rrdp_proxy::roff_text(&help)
            ));
        }
    }
    page.push_str(COMMAND_PAGE_TAIL);
    page
}

/// The sections of rrdp-proxy(1) that clap does not make.
const COMMAND_PAGE_TAIL: &str = r#".SH "EXIT STATUS"
.TP
B0R
Stopped cleanly (BcheckR: the configuration is valid; BsyncR: every repository is
published, new or unchanged, and exported).
.TP
B1R
A bad configuration (the key and the reason are printed), or a failure to start (the cache
directory is owned by another process, a listener cannot be bound).
.TP
B2R
BsyncR: an upstream failed or was refused; what was exported before stays as it was.
.TP
B3R
BsyncR: a local failure (the cache directory, an export directory, or another process
owning the cache directory).
.SH SIGNALS
.TP
BSIGTERMR, BSIGINTR
Stop accepting, let the requests in flight finish (at most 10 seconds), exit.
.TP
BSIGQUITR
Graceful upgrade: hand the listening sockets to a new process started with B\-\-upgradeR
(on Bserver.upgrade_sockR), finish the requests in flight, exit. The new process takes
the cache directory over once this one's writers have stopped.
.TP
BSIGUSR1R
Reopen the access-log file (Blog.access_fileR), for logrotate.
.SH FILES
.TP
I/etc/rrdp\-proxy/rrdp\-proxy.confR, I./proxy.tomlR
The configuration file (Brrdp\-proxy.confR(5)).
.TP
Icache.dirR
The content-addressed store, the published state of each repository, and IlockR (held by
the one process that owns the directory, with its pid).
.SH EXAMPLES
.TP
Brrdp\-proxy \-\-config /etc/rrdp\-proxy/rrdp\-proxy.confR
Run.
.TP
Brrdp\-proxy check \-\-config /etc/rrdp\-proxy/rrdp\-proxy.confR
Check a configuration before deploying it.
.TP
Brrdp\-proxy \-\-upgrade \-\-config FILE & kill \-QUIT $OLD_PIDR
Replace a running process with no refused connection.
.TP
Brrdp\-proxy sync \-\-config /etc/rrdp\-proxy/krill\-sync.confR
One round from Krill's RRDP directory to static exports, for a timer or cron job.
.SH "SEE ALSO"
Brrdp\-proxy.confR(5), docs/operations.md
"#;

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
    rrdp_proxy::limit_arenas();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Man { section, output }) => man(section, output),
        Some(Command::Config) => with_config(&cli.config, |config| {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }),
        Some(Command::Check) => with_config(&cli.config, |config| {
            println!("{}: ok", cli.config.display());
            for line in config.summary() {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }),
        Some(Command::Sync) => sync(&cli.config),
        Some(Command::Demo {
            listen,
            interval,
            snapshot_size,
            deltas,
            repositories,
        }) => demo(
            listen,
            interval,
            snapshot_size.map(|s| (s, deltas)),
            repositories,
        ),
        None => with_config(&cli.config, |config| {
            init_logging(
                config.log_level(),
                config.access_log() != rrdp_proxy::AccessLog::Off,
            );
            rrdp_proxy::raise_fd_limit();
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
        }),
    }
}

/// Runs `then` with the configuration at `path`; a bad one is said with the path, and fails.
fn with_config(path: &std::path::Path, then: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(config) => then(config),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `rrdp-proxy man`: a manual page, to standard output or a file.
fn man(section: u8, output: Option<PathBuf>) -> ExitCode {
    let page = match section {
        1 => command_page(),
        5 => rrdp_proxy::conf_page(env!("CARGO_PKG_VERSION")),
        other => {
            eprintln!(
                "man: no page in section {other} (1: the command, 5: the configuration file)"
            );
            return ExitCode::FAILURE;
        }
    };
    let written = match output {
        Some(path) => std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display())),
        None => std::io::Write::write_all(&mut std::io::stdout(), page.as_bytes())
            .map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rrdp-proxy sync`: one round for every repository, with its own exit codes.
fn sync(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(rrdp_proxy::oneshot::CONFIG);
        }
    };
    init_logging(config.log_level(), false);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(rrdp_proxy::oneshot::LOCAL);
        }
    };
    ExitCode::from(runtime.block_on(rrdp_proxy::oneshot::run(config)))
}

/// `rrdp-proxy demo`: only the demo Publication Server.
fn demo(
    listen: std::net::SocketAddr,
    interval: std::time::Duration,
    large: Option<(u64, usize)>,
    repositories: usize,
) -> ExitCode {
    init_logging("info", true);
    // Exit promptly on SIGTERM (pingora's default grace period is five minutes).
    let conf = pingora::server::configuration::ServerConf {
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    rrdp_proxy::add_demo(&mut server, listen, interval, large, repositories);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
