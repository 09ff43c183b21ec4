//! `unseen suppress`: edits and tries a suppression rules file, the file that
//! `serve --suppressions` reads (and reloads when it changes) and `scan --suppressions`
//! applies. Every edit checks the whole new file before it replaces the old one, and
//! replaces it atomically (a server polling it never reads half a file).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use unseen_findings::suppress::{Pattern, Rule};
use unseen_findings::{Finding, Suppressions};
use unseen_model::{parse_duration, parse_time, UnixSecs};

use crate::args::OutputArg;

#[derive(Debug, Args)]
pub struct SuppressArgs {
    #[command(subcommand)]
    pub command: SuppressCommand,
}

#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Append a rule (the file is created when missing).
    Add(AddArgs),
    /// List the rules of the file.
    List(ListArgs),
    /// Remove a rule by its name.
    Remove(RemoveArgs),
    /// Show which recorded findings each rule suppresses (judging each rule's expiry
    /// at the finding's `detected_at`, or at --at).
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Why these findings need no one's attention (required).
    #[arg(long)]
    pub reason: String,
    /// Who asked for it.
    #[arg(long)]
    pub author: Option<String>,
    /// When the rule stops matching: RFC 3339, Unix seconds, or a duration from now (`30d`).
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// The rule's name [default: derived from its matchers]
    #[arg(long)]
    pub name: Option<String>,
    /// A matcher, `FIELD=PATTERN`: exact, or a glob with `*` and `?` (repeatable; every
    /// one must match). FIELD is a finding field, e.g. `k8s.namespace.name`.
    #[arg(long = "match", value_name = "FIELD=PATTERN")]
    pub matches: Vec<String>,
    /// A matcher, `FIELD=REGEX`, matching the whole value (repeatable).
    #[arg(long = "regex", value_name = "FIELD=REGEX")]
    pub regexes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// [default: table on a terminal, json otherwise]
    #[arg(long, value_enum)]
    pub output: Option<OutputArg>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The rule's name (as `list` shows it).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Judge expiries at this time (RFC 3339 or Unix seconds) rather than at each
    /// finding's `detected_at`.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// [default: table on a terminal, json otherwise]
    #[arg(long, value_enum)]
    pub output: Option<OutputArg>,
    /// Findings files (JSON lines, as `serve` and `scan` write them); `-` is standard input.
    #[arg(value_name = "FINDINGS", required = true)]
    pub findings: Vec<PathBuf>,
}

pub fn run(args: SuppressArgs) -> Result<()> {
    match args.command {
        SuppressCommand::Add(a) => add(a),
        SuppressCommand::List(a) => list(a),
        SuppressCommand::Remove(a) => remove(a),
        SuppressCommand::Test(a) => test(a),
    }
}

/// Reads and checks a rules file (as `serve` does).
pub fn load(path: &Path) -> Result<Suppressions> {
    Ok(unseen_server::rules::load(path)?)
}

fn read_rules(path: &Path) -> Result<String> {
    Ok(unseen_server::rules::read(path)?)
}

fn now() -> UnixSecs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `FIELD=VALUE`.
fn split_matcher<'a>(flag: &str, m: &'a str) -> Result<(&'a str, &'a str)> {
    m.split_once('=').with_context(|| {
        format!("{flag} {m:?}: write FIELD=PATTERN, e.g. k8s.namespace.name=debug-*")
    })
}

fn add(a: AddArgs) -> Result<()> {
    let mut matchers = BTreeMap::new();
    for m in &a.matches {
        let (field, pattern) = split_matcher("--match", m)?;
        matchers.insert(field.to_string(), Pattern::text(pattern));
    }
    for m in &a.regexes {
        let (field, source) = split_matcher("--regex", m)?;
        let pattern = Pattern::regex(source).map_err(|e| anyhow::anyhow!("--regex {m:?}: {e}"))?;
        matchers.insert(field.to_string(), pattern);
    }
    let expires = match &a.expires {
        None => None,
        Some(t) => Some(match parse_duration(t) {
            Ok(d) => now().saturating_add(i64::try_from(d).unwrap_or(i64::MAX)),
            Err(_) => parse_time(t).with_context(|| {
                format!("--expires {t:?}: give an RFC 3339 time, Unix seconds or a duration such as 30d")
            })?,
        }),
    };
    let rule = Rule {
        name: a.name.unwrap_or_default(),
        reason: a.reason,
        author: a.author,
        expires,
        matchers,
    };
    // Without a name, the parser derives it from the matchers.
    let table = rule.to_toml();
    let old = if a.file.exists() {
        read_rules(&a.file)?
    } else {
        String::new()
    };
    let mut text = old.clone();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
    }
    text.push_str(&table);
    let origin = a.file.display().to_string();
    let parsed = Suppressions::parse(&origin, &text)?;
    write_atomically(&a.file, &text)?;
    let added = parsed
        .rules
        .last()
        .map(|r| r.name.as_str())
        .unwrap_or_default();
    eprintln!(
        "added rule `{added}` to {origin} ({} rules)",
        parsed.rules.len()
    );
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let rules = load(&a.file)?;
    let out = io::stdout().lock();
    match a.output.unwrap_or(default_output()) {
        OutputArg::Json => write_rules_json(out, &rules),
        OutputArg::Table => write_rules_table(out, &rules),
    }
}

fn default_output() -> OutputArg {
    if io::stdout().is_terminal() {
        OutputArg::Table
    } else {
        OutputArg::Json
    }
}

fn rule_json(r: &Rule) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "reason": r.reason,
        "author": r.author,
        "expires": r.expires.map(unseen_model::format_rfc3339),
        "match": r.matchers.iter().map(|(k, p)| (k.clone(), p.to_string())).collect::<BTreeMap<_, _>>(),
    })
}

fn write_rules_json(mut out: impl Write, rules: &Suppressions) -> Result<()> {
    for r in &rules.rules {
        writeln!(out, "{}", rule_json(r))?;
    }
    Ok(())
}

fn write_rules_table(mut out: impl Write, rules: &Suppressions) -> Result<()> {
    writeln!(
        out,
        "{:<20} {:<20} {:<40} REASON",
        "NAME", "EXPIRES", "MATCH"
    )?;
    for r in &rules.rules {
        let matchers: Vec<String> = r.matchers.iter().map(|(k, p)| format!("{k}={p}")).collect();
        let expires = r
            .expires
            .map(unseen_model::format_rfc3339)
            .unwrap_or_else(|| "never".into());
        writeln!(
            out,
            "{:<20} {:<20} {:<40} {}",
            r.name,
            expires,
            matchers.join(" "),
            r.reason
        )?;
    }
    Ok(())
}

fn remove(a: RemoveArgs) -> Result<()> {
    let origin = a.file.display().to_string();
    let text = read_rules(&a.file)?;
    let rules = Suppressions::parse(&origin, &text)?;
    let Some(index) = rules.rules.iter().position(|r| r.name == a.name) else {
        let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "{origin}: no rule named `{}`; its rules are: {}",
            a.name,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    // Edited as a document, so that comments and the other rules stay as written.
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| origin.clone())?;
    let tables = doc
        .get_mut("suppress")
        .and_then(|s| s.as_array_of_tables_mut())
        .with_context(|| format!("{origin}: write rules as [[suppress]] tables to remove them"))?;
    // Comments above a rule: those right above it go with it; those separated from it by
    // a blank line (a file header, a section) stay, on whatever comes next.
    let prefix = tables
        .get(index)
        .and_then(|t| t.decor().prefix())
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_string();
    let kept = prefix
        .rfind("\n\n")
        .map_or("", |i| &prefix[..i + 2])
        .to_string();
    tables.remove(index);
    let mut leftover = None;
    match tables.get_mut(index) {
        Some(next) if !kept.is_empty() => {
            let theirs = next
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or_default();
            let joined = format!("{kept}{}", theirs.trim_start_matches('\n'));
            next.decor_mut().set_prefix(joined);
        }
        None if !kept.is_empty() => leftover = Some(kept),
        _ => {}
    }
    if tables.is_empty() {
        doc.remove("suppress");
    }
    if let Some(kept) = leftover {
        let trailing = doc.trailing().as_str().unwrap_or_default().to_string();
        doc.set_trailing(format!("{trailing}{kept}"));
    }
    let text = doc.to_string();
    Suppressions::parse(&origin, &text)?;
    write_atomically(&a.file, &text)?;
    eprintln!("removed rule `{}` from {origin}", a.name);
    Ok(())
}

fn test(a: TestArgs) -> Result<()> {
    let rules = load(&a.file)?;
    let at =
        a.at.as_deref()
            .map(|t| parse_time(t).with_context(|| format!("--at {t:?}")))
            .transpose()?;
    let mut counts: BTreeMap<&str, u64> =
        rules.rules.iter().map(|r| (r.name.as_str(), 0)).collect();
    let output = a.output.unwrap_or(default_output());
    let mut out = io::stdout().lock();
    if output == OutputArg::Table {
        writeln!(
            out,
            "{:<20} {:<38} {:<20} {:<24} IMAGE",
            "RULE", "FINDING", "CLUSTER", "NODE"
        )?;
    }
    let mut total = 0u64;
    for path in &a.findings {
        let shown = path.display().to_string();
        let reader: Box<dyn BufRead> = if shown == "-" {
            Box::new(BufReader::new(io::stdin().lock()))
        } else {
            Box::new(BufReader::new(
                fs::File::open(path).with_context(|| format!("cannot open {shown}"))?,
            ))
        };
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("{shown}:{}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let finding: Finding = serde_json::from_str(&line).with_context(|| {
                format!(
                    "{shown}:{}: not a finding (a line of the findings file)",
                    i + 1
                )
            })?;
            total += 1;
            let when = match at {
                Some(t) => t,
                None => parse_time(&finding.detected_at)
                    .with_context(|| format!("{shown}:{}: detected_at", i + 1))?,
            };
            let Some(s) = rules.check(&finding, when) else {
                continue;
            };
            if let Some(n) = counts.get_mut(s.rule.as_str()) {
                *n += 1;
            }
            match output {
                OutputArg::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "rule": s.rule,
                        "finding_id": finding.finding_id,
                        "k8s.cluster.name": finding.cluster,
                        "k8s.node.name": finding.node,
                        "container.image.name": finding.image,
                        "detected_at": finding.detected_at,
                    })
                )?,
                OutputArg::Table => writeln!(
                    out,
                    "{:<20} {:<38} {:<20} {:<24} {}",
                    s.rule, finding.finding_id, finding.cluster, finding.node, finding.image
                )?,
            }
        }
    }
    out.flush()?;
    let suppressed: u64 = counts.values().sum();
    eprintln!("{suppressed} of {total} findings suppressed");
    for (name, n) in &counts {
        eprintln!("  {name}: {n}");
    }
    Ok(())
}

/// Replaces `path` with `text`: a temporary file beside it, synced, then renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the rules file needs a file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
