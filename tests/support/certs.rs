//! Test certificates made with `openssl` (which `scripts/test-deps.sh` installs): a CA and
//! the leaves it signs, P-256 keys, valid for two days. Shared by the tests of every crate
//! that speaks TLS (`#[path]`-included: a crate of its own would be one more to build).

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key, unencrypted.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// A self-signed CA `NAME.pem` / `NAME.key` in `dir`.
pub fn ca(dir: &Path, name: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=unseen test {name}"),
    );
    let args = [
        &["req", "-x509"][..],
        &EC_KEY,
        &[
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat();
    openssl(dir, &args);
}

/// A leaf `NAME.pem` / `NAME.key` in `dir`, for subject `cn`, extended key usage `usage`
/// (`serverAuth`, `clientAuth`) and subject alternative names `san`
/// (`DNS:localhost,IP:127.0.0.1`), signed by the CA `ca.pem` / `ca.key` there.
pub fn leaf(dir: &Path, name: &str, cn: &str, usage: &str, san: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    let (key, csr, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    let args = [
        &["req"][..],
        &EC_KEY,
        &["-keyout", &key, "-out", &csr, "-subj", &subj],
    ]
    .concat();
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}
