//! Crash safety: a writer process is killed with SIGKILL at random moments (its store
//! folding its state log all along); every time,
//! the store must reopen and hold exactly the result of a prefix of the operations,
//! including every operation the writer reported as returned.
//!
//! The writer is this test binary itself, run with `UNSEEN_STORE_CRASH_DIR` set (run
//! without it, the `writer` test checks one uninterrupted session against the model). It performs operations `START..OPS` and prints
//! `committed N` after each returns. The parent replays the same operations on the
//! in-memory model to know the expected state after each prefix.
//!
//! Set `UNSEEN_STORE_CRASH_SEED` to replay a run (the seed is printed).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use unseen_store::conformance::{key, opts, WINDOWS};
use unseen_store::{ApplyOptions, MemStore, RedbStore, Sighting, StateStore};

const ENV_DIR: &str = "UNSEEN_STORE_CRASH_DIR";
const ENV_START: &str = "UNSEEN_STORE_CRASH_START";
const ENV_SEED: &str = "UNSEEN_STORE_CRASH_SEED";
/// Operations in a session.
const OPS: usize = 120;
/// Sightings per batch.
const BATCH: usize = 100;
/// Distinct keys; above the key cap so that refusals happen.
const KEYS: u64 = 400;
const MAX_KEYS: u64 = 300;
const SINK: &str = "file";

/// The store as the writer opens it: folding its state log at every batch, a few keys
/// an `apply`, so that kills land in the middle of fold cycles too.
fn open(dir: &Path) -> RedbStore {
    RedbStore::open(dir).unwrap().with_fold(2_000, 16)
}

/// A small deterministic generator (xorshift64*), so parent and writer agree.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Operation `n`: one transaction each (forget too: far fewer keys than its chunk).
enum Op {
    Apply(Vec<Sighting>, Box<ApplyOptions>),
    Ack(u64),
    Forget,
}

fn op(n: usize) -> Op {
    if n % 20 == 19 {
        return Op::Forget;
    }
    if n % 10 == 4 {
        return Op::Ack(n as u64 * 4);
    }
    let mut rng = Rng::new(n as u64 + 1);
    // Time moves ~300 s per operation (B − R = 900 s): keys come and go, points arrive
    // out of order (up to 600 s back) and late (now up to 400 s ahead).
    let base = 1_000 + n as i64 * 300;
    let batch: Vec<Sighting> = (0..BATCH)
        .map(|_| {
            let k = rng.below(KEYS) as usize;
            Sighting {
                key: key(k),
                time: base - rng.below(600) as i64,
                host_name: (k % 3 == 1).then(|| "collector-0".to_string()),
                context: Default::default(),
                image_raw: None,
            }
        })
        .collect();
    let o = ApplyOptions {
        rule: unseen_model::SEED_RULE,
        triage: Default::default(),
        report: n >= 6,
        max_keys: MAX_KEYS,
        ..opts(base + rng.below(400) as i64)
    };
    Op::Apply(batch, Box::new(o))
}

fn run(store: &dyn StateStore, n: usize) {
    match op(n) {
        Op::Apply(batch, o) => {
            store.apply(&batch, &o).unwrap();
        }
        Op::Ack(seq) => store.ack(SINK, seq).unwrap(),
        Op::Forget => {
            store.forget(&WINDOWS).unwrap();
        }
    }
}

/// The writer. Run by the crash test (with `UNSEEN_STORE_CRASH_DIR`), it works on the
/// parent's store until killed; run directly, it checks that the whole session,
/// uninterrupted, leaves the store equal to the model.
#[test]
fn writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.register_sink(SINK).unwrap();
        let model = MemStore::new();
        model.register_sink(SINK).unwrap();
        for n in 0..OPS {
            run(&store, n);
            run(&model, n);
        }
        assert_eq!(
            snapshot(&store, store.states().unwrap()),
            snapshot(&model, model.states().unwrap())
        );
        return;
    };
    let start: usize = std::env::var(ENV_START).unwrap().parse().unwrap();
    let store = open(Path::new(&dir));
    let mut out = std::io::stdout().lock();
    for n in start..OPS {
        run(&store, n);
        writeln!(out, "committed {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Everything observable about a store.
#[derive(Debug, PartialEq)]
struct Snapshot {
    states: Vec<(unseen_normalize::Key, unseen_detect::KeyState)>,
    keys: u64,
    newest: Option<i64>,
    log_len: u64,
    pending: Vec<(u64, unseen_store::Record)>,
}

fn snapshot(
    store: &dyn StateStore,
    states: Vec<(unseen_normalize::Key, unseen_detect::KeyState)>,
) -> Snapshot {
    Snapshot {
        states,
        keys: store.key_count().unwrap(),
        newest: store.newest_point().unwrap(),
        log_len: store.log_len().unwrap(),
        pending: store.pending(SINK, usize::MAX).unwrap(),
    }
}

#[test]
fn sigkill_leaves_exactly_a_committed_prefix() {
    if std::env::var(ENV_DIR).is_ok() {
        return; // We are the writer.
    }
    let seed = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (set {ENV_SEED} to replay)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    RedbStore::open(dir.path())
        .unwrap()
        .register_sink(SINK)
        .unwrap();
    let model = MemStore::new();
    model.register_sink(SINK).unwrap();
    // Operations known to be in the store (and applied to the model).
    let mut done = 0;
    let (mut kills, mut rounds) = (0, 0);
    let exe = std::env::current_exe().unwrap();
    while done < OPS {
        rounds += 1;
        assert!(rounds < 200, "no progress");
        let mut child = Command::new(&exe)
            .args(["writer", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ENV_DIR, dir.path())
            .env(ENV_START, done.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Past 40 rounds, let the writer finish.
        if rounds <= 40 {
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            // SIGKILL on Unix: no destructor, no flush, no clean close.
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        if status.code().is_none() {
            kills += 1; // ended by the signal, not finished
        }
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let printed = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("committed "))
            .filter_map(|n| n.parse::<usize>().ok())
            .max();
        if rounds > 40 {
            assert!(status.success(), "the writer failed: {status}");
        }
        // Every operation the writer saw return must be there.
        let must = printed.map_or(done, |n| n + 1);
        while done < must {
            run(&model, done);
            done += 1;
        }
        let store = RedbStore::open(dir.path()).unwrap_or_else(|e| {
            panic!("round {rounds} (seed {seed}): the store does not reopen after SIGKILL: {e}")
        });
        let actual = snapshot(&store, store.states().unwrap());
        if actual != snapshot(&model, model.states().unwrap()) {
            // At most one more operation may have committed without being printed.
            assert!(
                done < OPS,
                "round {rounds} (seed {seed}): state is past the last operation"
            );
            run(&model, done);
            done += 1;
            assert_eq!(
                actual,
                snapshot(&model, model.states().unwrap()),
                "round {rounds} (seed {seed}): the store is not the result of operations 0..{} nor 0..{}",
                done - 1,
                done
            );
        }
    }
    eprintln!("crash test: {rounds} writer runs, {kills} killed with SIGKILL, {OPS} operations");
    assert!(kills > 0);
}
