//! `unseen incidents` and `unseen images` as a user runs them: the real binary against a
//! real `unseen serve` with its query API, compared with what the API answers itself.

mod serve_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use serve_support::*;

/// `unseen <args>` with `UNSEEN_API_URL` at `api` and `UNSEEN_API_TOKEN` = `token`
/// (unset when `None`); nothing else of the environment's `UNSEEN_*` leaks in.
fn unseen(api: SocketAddr, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseen"));
    for (name, _) in std::env::vars() {
        if name.starts_with("UNSEEN_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("UNSEEN_API_URL", format!("http://{api}"));
    if let Some(t) = token {
        cmd.env("UNSEEN_API_TOKEN", t);
    }
    cmd.args(args).output().expect("run unseen")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON lines of a successful run.
fn json_lines(o: &Output) -> Vec<Value> {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Every item of a list endpoint, walking its `next` cursors with small pages.
fn walk(api: SocketAddr, path: &str, token: &str) -> Vec<Value> {
    api_walk(api, path, token, 7)
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["incident_id"].as_str().expect("incident_id").to_string())
        .collect()
}

#[test]
fn incidents_and_images_commands_read_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, server, tokens, api) = serve_with_api(dir.path());
    let history = history(7, 1, 300);
    send_history_with_token(server.http, &history, tokens.collector);
    // Ready: the API answers, with every finding the history opens committed.
    let ready = wait_for(Duration::from_secs(60), || {
        std::net::TcpStream::connect_timeout(&api, Duration::from_millis(200)).is_ok()
            && walk(api, "/api/v1/findings", tokens.viewer).len() >= history.expected.len()
    });
    assert!(
        ready,
        "the API did not show the findings\n{}",
        cmd.log_text()
    );

    // Every incident, across pages (a page of 5 forces several requests).
    let expected = ids(&walk(api, "/api/v1/incidents", tokens.viewer));
    assert!(
        expected.len() > 5,
        "too few incidents to page: {}",
        expected.len()
    );
    let all = json_lines(&unseen(
        api,
        Some(tokens.viewer),
        &["incidents", "--output", "json", "--all", "--limit", "5"],
    ));
    assert_eq!(ids(&all), expected);
    // Without --all: one page, and a word that more follow.
    let one = unseen(
        api,
        Some(tokens.viewer),
        &["incidents", "--output", "json", "--limit", "5"],
    );
    assert_eq!(json_lines(&one).len(), 5);
    assert!(stderr(&one).contains("--all"), "{}", stderr(&one));

    // A filter is passed through.
    let fleet_expected = ids(&walk(api, "/api/v1/incidents?scope=fleet", tokens.viewer));
    let fleet = json_lines(&unseen(
        api,
        Some(tokens.viewer),
        &["incidents", "--output", "json", "--all", "--scope", "fleet"],
    ));
    assert!(fleet.iter().all(|i| i["scope"] == "fleet"), "{fleet:?}");
    assert_eq!(ids(&fleet), fleet_expected);
    assert!(
        !fleet.is_empty() && fleet.len() < all.len(),
        "{} of {}",
        fleet.len(),
        all.len()
    );

    // The table: a header, then one row per incident, each naming its incident.
    let table = unseen(api, Some(tokens.viewer), &["incidents", "--all"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    for column in [
        "OPENED_AT",
        "STATUS",
        "KIND",
        "SCOPE",
        "CLUSTER",
        "NODES",
        "TITLE",
        "INCIDENT_ID",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert_eq!(lines.len(), expected.len() + 1, "{text}");
    for (line, id) in lines[1..].iter().zip(&expected) {
        assert!(line.ends_with(id.as_str()), "{line} / {id}");
    }

    // The inventory, and one image of it by reference.
    let inventory = json_lines(&unseen(
        api,
        Some(tokens.viewer),
        &["images", "--output", "json", "--all"],
    ));
    let walked: Vec<Value> = walk(api, "/api/v1/images", tokens.viewer);
    assert_eq!(inventory, walked);
    // An image of Docker Hub's library, so that its short form (`redis`) is tried too.
    let row = inventory
        .iter()
        .find(|i| {
            i["image"]
                .as_str()
                .unwrap()
                .starts_with("docker.io/library/")
        })
        .expect("the history has a docker.io/library image");
    let name = row["image"].as_str().unwrap();
    let clusters: Vec<&str> = row["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let short = name.strip_prefix("docker.io/library/").unwrap();
    for r in [name, short] {
        let o = unseen(api, Some(tokens.viewer), &["images", r]);
        assert_eq!(o.status.code(), Some(0), "images {r}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("known since"), "{out}");
        assert!(out.contains(name), "{out}");
        for c in &clusters {
            assert!(out.contains(c), "cluster {c}: {out}");
        }
        let json = json_lines(&unseen(
            api,
            Some(tokens.viewer),
            &["images", "--output", "json", r],
        ));
        assert_eq!(json[0]["known"], true);
        assert_eq!(json[0]["image"]["image"], name);
    }
    let inventory_names: BTreeSet<&str> = inventory
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(inventory_names.len(), inventory.len());

    // Unknown: exit 1, not an error.
    let unknown = unseen(
        api,
        Some(tokens.viewer),
        &["images", "registry.invalid/never/seen:1.0"],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(
        stdout(&unknown).contains("is not known"),
        "{}",
        stdout(&unknown)
    );
    // Named canonical (the tag is not part of what unseen tracks).
    assert!(
        stdout(&unknown).starts_with("registry.invalid/never/seen"),
        "{}",
        stdout(&unknown)
    );

    // Errors: exit 2, with what to do.
    let no_token = unseen(api, None, &["incidents"]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(
        stderr(&no_token).contains("UNSEEN_API_TOKEN"),
        "{}",
        stderr(&no_token)
    );
    assert!(stderr(&no_token).contains("role"), "{}", stderr(&no_token));
    let wrong = unseen(api, Some("not-a-token"), &["images"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("the API answered 401"),
        "{}",
        stderr(&wrong)
    );
    // A collector's token has no role: refused too.
    let collector = unseen(api, Some(tokens.collector), &["incidents"]);
    assert_eq!(collector.status.code(), Some(2));
    assert!(stderr(&collector).contains("401"), "{}", stderr(&collector));
    let bad_filter = unseen(api, Some(tokens.viewer), &["incidents", "--kind", "nope"]);
    assert_eq!(bad_filter.status.code(), Some(2));
    assert!(
        stderr(&bad_filter).contains("the API answered 400")
            && stderr(&bad_filter).contains("`kind`"),
        "{}",
        stderr(&bad_filter)
    );
    let nowhere = unseen(free_addr(), Some(tokens.viewer), &["incidents"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(
        stderr(&nowhere).contains("--api-url"),
        "{}",
        stderr(&nowhere)
    );

    assert!(
        server.terminate(Duration::from_secs(20)),
        "unseen serve did not stop cleanly\n{}",
        cmd.log_text()
    );
}
