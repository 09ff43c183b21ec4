//! The crash test: `unseen serve` is killed with SIGKILL at random moments while a
//! client replays a history and retries whatever was not acknowledged. After the
//! restarts, every episode of the contract is in the findings file exactly once.

mod serve_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serve_support::*;

/// Kills, at most; the schedule is seeded, the moments it hits are not (the assertions
/// do not depend on them).
const KILLS: u32 = 5;
/// Kills at least: the replay goes on (sending the history again, which changes nothing
/// reported: a repeated point opens no episode) until that many happened.
const MIN_KILLS: u32 = 3;
const SEED: u64 = 0x5EED_C0DE;

#[test]
fn sigkill_at_random_moments_neither_loses_nor_repeats_a_finding() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let cmd = ServeCmd::new(dir.path());
    // Three days at a 5-minute interval: ~860 requests, several episodes per returning key.
    let history = history(SEED, 3, 300);
    assert!(
        history.max_episodes_per_key >= 2,
        "the history must hold keys with several episodes"
    );

    let server = Arc::new(Mutex::new(Some(cmd.spawn())));
    let addr = Arc::new(Mutex::new(server.lock().unwrap().as_ref().unwrap().http));
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));

    // The killer: SIGKILL after a random delay, restart on the same data directory,
    // again, until the replay is over or KILLS is reached.
    let killer = {
        let (server, addr, done, cmd, killed) = (
            server.clone(),
            addr.clone(),
            done.clone(),
            cmd.clone(),
            killed.clone(),
        );
        std::thread::spawn(move || {
            let mut rng = Rng::new(SEED);
            let mut kills = 0;
            while kills < KILLS {
                let wake = Instant::now() + rng.millis(100, 600);
                while Instant::now() < wake && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let mut slot = server.lock().unwrap();
                if let Some(s) = slot.take() {
                    s.kill();
                }
                let next = cmd.spawn();
                *addr.lock().unwrap() = next.http;
                *slot = Some(next);
                kills += 1;
                killed.store(kills, Ordering::SeqCst);
            }
            kills
        })
    };

    let mut attempts = 0u64;
    let mut passes = 0;
    while passes == 0 || killed.load(Ordering::SeqCst) < MIN_KILLS {
        for body in &history.bodies {
            attempts += u64::from(send_until_acked(&addr, body, Duration::from_secs(30)));
        }
        passes += 1;
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.join().expect("killer thread");
    let replayed = started.elapsed();

    // Let the file sink catch up, then stop cleanly.
    let expected_len = history.expected.len();
    wait_for(Duration::from_secs(15), || {
        file_ids(&cmd.findings).len() >= expected_len
    });
    let last = server.lock().unwrap().take().expect("a running server");
    let clean = last.terminate(Duration::from_secs(15));

    let got = file_ids(&cmd.findings);
    let (dups, missing) = compare(&got, &history.expected);
    let extra: Vec<&String> = got
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|id| !history.expected.contains(*id))
        .collect();
    eprintln!(
        "crash test: {} requests ({attempts} attempts), {} ready points, {} keys, {} episodes (up to {} per key), {kills} kills, replay {replayed:?} ({passes} passes), total {:?}",
        history.bodies.len(),
        history.ready_points,
        history.keys,
        expected_len,
        history.max_episodes_per_key,
        started.elapsed()
    );
    let log = cmd.log_text();
    let tail = &log[log.len().saturating_sub(4_000)..];
    assert!(
        kills >= MIN_KILLS,
        "{kills} kills: the replay waits for {MIN_KILLS}"
    );
    assert!(
        dups.is_empty() && missing.is_empty() && extra.is_empty(),
        "findings file vs. the contract: {} duplicated (e.g. {:?}), {} missing (e.g. {:?}), {} unexpected (e.g. {:?})\nserver log (tail):\n{tail}",
        dups.len(),
        dups.first(),
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
    );
    assert!(
        clean,
        "the server did not exit cleanly on SIGTERM\nserver log (tail):\n{tail}"
    );
}
