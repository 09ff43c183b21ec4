//! Versioned migrations, applied at open: each file of `migrations/` once, in order, in a
//! transaction, under a session advisory lock so that replicas starting at once apply
//! each one once (the others wait, then find it applied).

use postgres::Client;
use unseen_store::StoreError;

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_state.sql")),
    (2, include_str!("../migrations/0002_state_log.sql")),
];

fn backend(what: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |e| StoreError::Backend(format!("PostgreSQL, {what}: {}", crate::pool::explain(&e)))
}

/// Applies what is missing; refuses a schema made by a newer unseen.
pub fn apply(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let lock = super::lock_id(schema, "migrate");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .map_err(backend("take the migration lock"))?;
    let result = apply_locked(client, schema);
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .map_err(backend("release the migration lock"));
    result.and(unlocked.map(drop))
}

fn apply_locked(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .map_err(backend("create the schema"))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS unseen_schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(backend("create the migrations table"))?;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM unseen_schema_migrations ORDER BY version",
            &[],
        )
        .map_err(backend("read the migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(&newest) = applied.last() {
        if newest > known {
            return Err(StoreError::Incompatible {
                path: format!("PostgreSQL schema {schema}"),
                message: format!(
                    "it was migrated by a newer unseen (migration {newest}; this unseen knows up to {known}): run the newer release, or use another schema"
                ),
            });
        }
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = client.transaction().map_err(backend("begin a migration"))?;
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Backend(format!("PostgreSQL, migration {version} failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO unseen_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .map_err(backend("record a migration"))?;
        tx.commit().map_err(backend("commit a migration"))?;
    }
    Ok(())
}
