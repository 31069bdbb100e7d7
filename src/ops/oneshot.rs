//! `rrdp-proxy sync`: one round for every repository — fetch, verify, publish to the cache,
//! write the exports — then exit with a status a cron job or a systemd timer can act on. A
//! drop-in for a krill-sync cron job.

use crate::config::Config;
use crate::shared::Shared;
use crate::sync::{Poller, RoundOutcome};

/// Exit status: every repository is published (new or unchanged) and exported.
pub const OK: u8 = 0;
/// The configuration was refused (as `check`).
pub const CONFIG: u8 = 1;
/// At least one upstream failed or was refused (content guard, bad file, unreachable): what
/// was published and exported before stays as it was.
pub const UPSTREAM: u8 = 2;
/// Our own side failed: the cache directory, an export directory, the lock.
pub const LOCAL: u8 = 3;

/// Runs one round; prints one line per repository to standard output (errors to standard
/// error) and returns the exit status.
pub async fn run(config: Config) -> u8 {
    // Two overlapping runs (a slow one and the next cron tick), or a run beside a running
    // proxy on the same cache, must not write it both: opening the store takes the cache's
    // lock, and the second waits for nothing and says who holds it.
    let shared = match Shared::open(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return LOCAL;
        }
    };
    let mut status = OK;
    for (i, repo) in shared.repos.iter().enumerate() {
        let mut poller = Poller::new(
            repo.clone(),
            shared.store.clone(),
            shared.metrics.clone(),
            shared.config.cache.retain,
        )
        .with_peers(shared.peers.clone())
        .with_clock(shared.clock.clone())
        // With `server.erik`, the cache's Erik objects are kept up to date too (and so kept
        // by the garbage collection below) for the server that will use this cache.
        .with_erik(shared.erik.clone(), i);
        let name = repo.name();
        let mut result = poller.poll_once().await;
        if result.is_ok() && poller.holding() {
            // publish_delay: wait it out, then publish if the upstream still answers.
            tokio::time::sleep(repo.config.publish_delay).await;
            result = poller.poll_with_barrier().await;
        }
        match result {
            Ok(RoundOutcome::Published { session_id, serial }) => {
                println!("{name}: published session {session_id} serial {serial}");
            }
            Ok(RoundOutcome::Unchanged) => {
                let serial = repo.peek().as_ref().map_or(0, |g| g.serial);
                println!("{name}: unchanged at serial {serial}");
            }
            Err(e) => {
                let serving = match repo.peek().as_ref() {
                    Some(g) => format!("serial {} stays published", g.serial),
                    None => "nothing published".to_string(),
                };
                eprintln!("{name}: {e}; {serving}");
                status = status.max(UPSTREAM);
            }
        }
        poller.erik_catch_up().await;
        if let Some(g) = repo.current() {
            let exported = crate::ops::export::export_once(repo, &shared.store, &g, &shared.clock);
            if let Err(e) = exported.await {
                eprintln!("{name}: export failed: {e}");
                status = LOCAL;
            }
        }
    }
    if let Err(e) = shared.collect_garbage().await {
        eprintln!("cache.dir: garbage collection failed: {e}");
    }
    status
}
