//! The crash test: `unseen serve` is killed with SIGKILL at random moments while a
//! client replays a history and retries whatever was not acknowledged. After the
//! restarts, every episode of the contract is in the findings file exactly once.

mod serve_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serve_support::*;

/// Kills during the replay, each when the client reaches a request chosen by the seeded
/// schedule: mid-request or between requests, whichever the moment is (the assertions do
/// not depend on it). Tied to the replay's progress rather than to a clock, so that a fast
/// machine replays once, as a slow one does: a second pass would send points older than
/// the horizon the restarted server forgot, which are then new again.
const KILLS: u32 = 5;
const SEED: u64 = 0x5EED_C0DE;

#[test]
fn sigkill_at_random_moments_neither_loses_nor_repeats_a_finding() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let cmd = ServeCmd::new(dir.path());
    let history = history(SEED, 3, 300);
    assert!(
        history.max_episodes_per_key >= 2,
        "the history must hold keys with several episodes"
    );
    // The requests before which a kill comes, distinct, in order, none before the first.
    let mut rng = Rng::new(SEED);
    let n = history.bodies.len() as u64;
    assert!(
        n > u64::from(KILLS) * 2,
        "{n} requests: too few to kill {KILLS} times"
    );
    let mut schedule = BTreeSet::new();
    while schedule.len() < KILLS as usize {
        schedule.insert(1 + rng.next() % (n - 1));
    }

    let server = Arc::new(Mutex::new(Some(cmd.spawn())));
    let addr = Arc::new(Mutex::new(server.lock().unwrap().as_ref().unwrap().http));
    // The index of the request the client is sending, and its change.
    let progress = Arc::new((Mutex::new(0u64), Condvar::new()));

    let killer = {
        let (server, addr, cmd, progress) =
            (server.clone(), addr.clone(), cmd.clone(), progress.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            for at in schedule {
                // The event: the client has started request `at`.
                let (sending, changed) = &*progress;
                drop(
                    changed
                        .wait_while(sending.lock().unwrap(), |i| *i < at)
                        .unwrap(),
                );
                let mut slot = server.lock().unwrap();
                if let Some(s) = slot.take() {
                    s.kill();
                }
                let next = cmd.spawn();
                *addr.lock().unwrap() = next.http;
                *slot = Some(next);
                kills += 1;
            }
            kills
        })
    };

    let mut attempts = 0u64;
    for (i, body) in history.bodies.iter().enumerate() {
        let (sending, changed) = &*progress;
        *sending.lock().unwrap() = i as u64;
        changed.notify_all();
        attempts += u64::from(send_until_acked(&addr, body, Duration::from_secs(30)));
    }
    let kills = killer.join().expect("killer thread");
    let replayed = started.elapsed();

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
        "crash test: {} requests ({attempts} attempts), {} ready points, {} keys, {} episodes (up to {} per key), {kills} kills, replay {replayed:?}, total {:?}",
        history.bodies.len(),
        history.ready_points,
        history.keys,
        expected_len,
        history.max_episodes_per_key,
        started.elapsed()
    );
    let log = cmd.log_text();
    let tail = &log[log.len().saturating_sub(4_000)..];
    assert!(kills == KILLS, "{kills} kills of the {KILLS} scheduled");
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
