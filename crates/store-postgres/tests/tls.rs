//! TLS to the database, against a real PostgreSQL server of the test's own: `initdb` and
//! `postgres` (the server's binaries, beside the machine's running PostgreSQL) in a
//! temporary directory, with `ssl = on`, a certificate the test makes with `openssl`, and
//! a `pg_hba.conf` that refuses connections without TLS. The machine's own server is not
//! touched.
//!
//! - with the CA named, the store connects (over TLS: plain text is refused) and works;
//! - without it, plain text is refused by the server, and `sslmode=require` is refused
//!   by unseen before connecting (it does not connect to a server it cannot verify);
//! - with another CA, the certificate is not trusted and the error says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use unseen_store::conformance::{key, opts, sighting};
use unseen_store::{StateStore, StoreError};
use unseen_store_postgres::PostgresStore;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[path = "../../../tests/support/certs.rs"]
mod certs;
use certs::ca;

/// The server's certificate `server.pem` / `server.key`, for 127.0.0.1, signed by `ca`.
fn server_cert(dir: &Path) {
    certs::leaf(
        dir,
        "server",
        "127.0.0.1",
        "serverAuth",
        "IP:127.0.0.1,DNS:localhost",
    );
}

/// The directory of PostgreSQL's server binaries.
fn bindir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin")
}

/// The user the private server runs as: PostgreSQL refuses to run as root, so a root
/// test runs it as `postgres`.
fn db_user() -> Option<(String, u32)> {
    let uid = run(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        return None;
    }
    let pg = run(Command::new("id").args(["-u", "postgres"]));
    Some(("postgres".into(), pg.trim().parse().unwrap()))
}

/// `cmd` as the database's user.
fn as_db_user(program: &Path, user: &Option<(String, u32)>) -> Command {
    match user {
        Some((name, _)) => {
            let mut c = Command::new("runuser");
            c.args(["-u", name, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// The private server; stopped (fast shutdown) when dropped.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT to the postmaster (named in its pid file; the child may be `runuser`,
        // which does not pass the signal on): PostgreSQL's fast shutdown.
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        match pid {
            Some(pid) => {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
            }
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Certificates in `certs`, then a server that admits only TLS connections from
/// 127.0.0.1, with `server.pem` signed by `ca.pem`.
fn start(certs: &Path) -> Server {
    let bin = bindir();
    let user = db_user();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if let Some((_, uid)) = &user {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(&data, *uid);
    }
    run(as_db_user(&bin.join("initdb"), &user).args([
        "-D",
        data.to_str().unwrap(),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
    ]));
    for f in ["server.pem", "server.key"] {
        std::fs::copy(certs.join(f), data.join(f)).unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    if let Some((_, uid)) = &user {
        chown_tree(&data, *uid);
    }
    let port = free_port();
    let mut child = as_db_user(&bin.join("postgres"), &user)
        .args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("unix_socket_directories={}", data.display())])
        .args(["-c", "ssl=on", "-c", "ssl_cert_file=server.pem"])
        .args(["-c", "ssl_key_file=server.key", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("postgres starts");
    // Ready when its log says so (the event itself, not a duration); the rest of the log
    // is drained so that the server never blocks on a full pipe.
    let mut log = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let server = Server {
        child,
        port,
        data: data.clone(),
        _dir: dir,
    };
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut log, &mut line).unwrap();
        assert!(
            n > 0,
            "the private server stopped before it was ready:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains("ready to accept connections") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    server
}

fn message(e: StoreError) -> String {
    e.to_string()
}

#[test]
fn tls_to_the_database_is_required_and_verified() {
    let certs = tempfile::tempdir().unwrap();
    ca(certs.path(), "ca");
    ca(certs.path(), "other");
    server_cert(certs.path());
    let server = start(certs.path());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);

    // The CA named: TLS, verified; the store works (the server refuses plain text, so
    // this is over TLS).
    let store =
        PostgresStore::open_temporary_with(&url, Some(&certs.path().join("ca.pem"))).unwrap();
    let out = store
        .apply(&[sighting(&key(1), 1_000)], &opts(1_000))
        .unwrap();
    assert_eq!(out.into_findings().len(), 1);
    assert_eq!(store.get(&key(1)).unwrap().unwrap().last_seen, 1_000);
    drop(store);

    // No CA: plain text, which this server refuses (pg_hba `hostnossl … reject`).
    let e = message(PostgresStore::open_temporary(&url).unwrap_err());
    assert!(e.contains("no encryption"), "{e}");

    // sslmode=require without a CA: refused before connecting, with the fix.
    let e = message(PostgresStore::open_temporary(&format!("{url}?sslmode=require")).unwrap_err());
    assert!(e.contains("--store-ca-file"), "{e}");

    // Another CA: the server's certificate is not trusted.
    let e = message(
        PostgresStore::open_temporary_with(&url, Some(&certs.path().join("other.pem")))
            .unwrap_err(),
    );
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // A CA file that is not one.
    let e = message(
        PostgresStore::open_temporary_with(&url, Some(&certs.path().join("server.ext")))
            .unwrap_err(),
    );
    assert!(
        e.contains("server.ext") && e.contains("no certificate"),
        "{e}"
    );
}
