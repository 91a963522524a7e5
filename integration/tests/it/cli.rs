//! The `parley` command line: migrate with progress, token minting, clear configuration errors.

use std::process::Command;

use parley_integration::{TestDatabase, parley_bin, pg_admin_url};
use parley_migrations::MigratorTrait;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new(parley_bin());
    cmd.args(args)
        .current_dir(dir.path())
        .env("PARLEY_CONFIG", &empty)
        .env("PARLEY_DATA_DIR", dir.path())
        .env_remove("PARLEY_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run parley");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_reports_progress_and_is_idempotent() {
    let db = TestDatabase::create(&pg_admin_url()).await;
    let env = [("PARLEY_DATABASE_URL", db.url.as_str()), ("PARLEY_SECRET", "cli-test-secret-123456")];
    let (ok, _, err) = run(&["migrate"], &env);
    assert!(ok, "{err}");
    let total = parley_migrations::Migrator::migrations().len();
    for i in 1..=total {
        assert!(err.contains(&format!("migration [{i}/{total}]")), "progress line {i} missing:\n{err}");
    }
    let (ok, _, err) = run(&["migrate"], &env);
    assert!(ok, "{err}");
    assert!(err.contains("up to date"), "{err}");
}

#[test]
fn tokens_and_configuration_errors() {
    let (ok, out, err) =
        run(&["token", "--user", "alice", "--admin", "--ttl", "60"], &[("PARLEY_SECRET", "cli-test-secret-123456")]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().split('.').count(), 3, "a JWT: {out}");

    let (ok, _, err) = run(&["token", "--user", "alice", "--ttl", "0"], &[("PARLEY_SECRET", "cli-test-secret-123456")]);
    assert!(!ok && err.contains("--ttl"), "{err}");
    let (ok, _, err) = run(&["token", "--user", "alice"], &[("PARLEY_SECRET", "short")]);
    assert!(!ok && err.contains("at least 16 bytes"), "{err}");
    let (ok, _, err) = run(&["node", "--name", "node-z"], &[("PARLEY_SECRET", "cli-test-secret-123456")]);
    assert!(!ok && err.contains("node-z"), "{err}");
    let (ok, _, err) = run(&["node"], &[("PARLEY_SECRET", "cli-test-secret-123456"), ("PARLEY_HTTP_ADDR", "nowhere")]);
    assert!(!ok && err.contains("http_addr"), "{err}");
    let (ok, _, err) = run(
        &["migrate"],
        &[("PARLEY_SECRET", "cli-test-secret-123456"), ("PARLEY_DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")],
    );
    assert!(!ok && err.contains("cannot connect to the database"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cluster]\ndatabse_url = 'typo'\n").unwrap();
    let (ok, _, err) = run(&["--config", bad.to_str().unwrap(), "token", "--user", "x"], &[]);
    assert!(!ok && err.contains("databse_url"), "{err}");

    // With no secret anywhere, one is generated in the data directory and reused.
    let (ok1, t1, e1) = run(&["token", "--user", "x"], &[]);
    assert!(ok1, "{e1}");
    assert!(!t1.trim().is_empty());
}

#[test]
fn the_repository_cluster_toml_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
    let out = Command::new(parley_bin())
        .args(["--config", path.to_str().unwrap(), "token", "--user", "x"])
        .env_remove("PARLEY_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
