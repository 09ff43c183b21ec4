//! The Kubernetes manifests of `deploy/kubernetes` are valid resources, checked by an
//! independent validator (`kubernetes-validate` from PyPI, strict: unknown fields are
//! errors), installed by `scripts/test-deps.sh`.

use std::path::Path;
use std::process::Command;

#[test]
fn the_kubernetes_manifests_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs: scripts/test-deps.sh installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "deployment",
        "service",
        "configmap",
        "poddisruptionbudget",
        "networkpolicy",
        "secret",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{kind}: {text}"
        );
    }
    // Every file the kustomization lists exists.
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for line in kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
    {
        assert!(dir.join(line).is_file(), "kustomization.yaml lists {line}");
    }
}
