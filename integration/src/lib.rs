//! Test harness for black-box tests: real `parley` processes, real PostgreSQL, real HTTP.
//!
//! - [`TestNode::start`] spawns `parley node` on port 0 with its own data directory, secret and
//!   database (a fresh PostgreSQL database per node, or the embedded SQLite file), waits for its
//!   `ready:` line and kills it on drop.
//! - [`TestNode::sql`] reads the node's database directly, so tests assert stored rows, not only
//!   what the API says.
//! - [`ThrowawayPostgres`] runs a private PostgreSQL server that a test may stop and restart.
//!
//! Environment: `PARLEY_BIN` (default `<workspace>/target/debug/parley`) and
//! `PARLEY_TEST_PG_URL`, an admin URL of a PostgreSQL server where test databases are created
//! (`make test` sets both; default `postgres://postgres@127.0.0.1:5432/postgres`).

pub mod otlp;
pub mod smtp;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement};
use serde_json::Value;
use uuid::Uuid;

/// Which database a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The `parley` binary under test.
pub fn parley_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PARLEY_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parley");
    assert!(p.exists(), "{} not found: build it first (`cargo build -p parley-node`) or set PARLEY_BIN", p.display());
    p
}

/// Admin URL of the PostgreSQL server tests create databases on.
pub fn pg_admin_url() -> String {
    std::env::var("PARLEY_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Replaces the database name at the end of a PostgreSQL URL.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').map(|i| &base[..i]).unwrap_or(base);
    format!("{cut}/{db}{query}")
}

/// A database created for one test and dropped afterwards.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> TestDatabase {
        let name = format!("parley_it_{}", Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        admin.close().await.ok();
        TestDatabase { url: with_db(admin_url, &name), name, admin_url: admin_url.to_owned() }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a private one on a helper thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// Options for starting a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub backend: Backend,
    /// Use this database URL instead of creating a database.
    pub database_url: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A cluster member: the configuration file's text and this node's name in it.
    pub member: Option<(String, String)>,
    /// A single node's configuration file (default: empty).
    pub config: String,
}

impl NodeOptions {
    pub fn new(backend: Backend) -> NodeOptions {
        NodeOptions { backend, database_url: None, env: Vec::new(), member: None, config: String::new() }
    }

    /// Gives a single node this configuration file.
    pub fn config(mut self, text: impl Into<String>) -> NodeOptions {
        self.config = text.into();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> NodeOptions {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Uses the test Redis (`PARLEY_TEST_REDIS_URL`) for presence.
    pub fn with_redis(self) -> NodeOptions {
        self.env("PARLEY_REDIS_URL", redis_url())
    }
}

/// The Redis tests use (`make test` provides one).
pub fn redis_url() -> String {
    std::env::var("PARLEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A plain Redis client for asserting keys directly.
pub async fn redis_client() -> fred::prelude::Client {
    use fred::prelude::*;
    let c = Builder::from_config(Config::from_url(&redis_url()).expect("redis url")).build().expect("redis client");
    c.init().await.unwrap_or_else(|e| panic!("Redis at {} is required: {e}", redis_url()));
    c
}

/// A running `parley node`, killed on drop.
pub struct TestNode {
    child: Child,
    pub base: String,
    pub secret: String,
    pub database_url: String,
    pub backend: Backend,
    pub data_dir: tempfile::TempDir,
    http: reqwest::Client,
    db: DatabaseConnection,
    _database: Option<TestDatabase>,
}

impl TestNode {
    /// Starts a node on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestNode {
        TestNode::start_with(NodeOptions::new(backend)).await
    }

    pub async fn start_with(opts: NodeOptions) -> TestNode {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let secret = format!("it-secret-{}", Uuid::new_v4().simple());
        let (database, database_url) = match (&opts.database_url, opts.backend) {
            (Some(url), _) => (None, url.clone()),
            (None, Backend::Postgres) => {
                let db = TestDatabase::create(&pg_admin_url()).await;
                let url = db.url.clone();
                (Some(db), url)
            }
            (None, Backend::Sqlite) => (None, format!("sqlite://{}", data_dir.path().join("parley.db").display())),
        };
        let empty_config = data_dir.path().join("empty.toml");
        std::fs::write(&empty_config, &opts.config).expect("write config");
        let mut cmd = Command::new(parley_bin());
        match &opts.member {
            None => {
                cmd.arg("node").env("PARLEY_CONFIG", &empty_config).env("PARLEY_HTTP_ADDR", "127.0.0.1:0");
            }
            Some((config, name)) => {
                let path = data_dir.path().join("cluster.toml");
                std::fs::write(&path, config).expect("write cluster config");
                cmd.args(["node", "--name", name]).env("PARLEY_CONFIG", &path).env_remove("PARLEY_HTTP_ADDR");
            }
        }
        cmd.env("PARLEY_DATA_DIR", data_dir.path())
            .env("PARLEY_SECRET", &secret)
            .env("PARLEY_LOG", "info")
            .env_remove("PARLEY_NODE")
            .env_remove("PARLEY_COOKIE")
            .env_remove("PARLEY_REDIS_URL")
            .env_remove("PARLEY_PUBLIC_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(data_dir.path().join("node.log")).expect("log file")));
        // An explicit URL for SQLite too, so the test reads the same file the node writes.
        cmd.env("PARLEY_DATABASE_URL", &database_url);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn parley node");
        let stdout = child.stdout.take().expect("stdout");
        let log = data_dir.path().join("node.log");
        let base = tokio::task::spawn_blocking(move || wait_ready(stdout, Duration::from_secs(60)))
            .await
            .expect("join")
            .unwrap_or_else(|e| {
                panic!(
                    "node did not become ready: {e}\n--- node log ---\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let db = Database::connect(database_url.as_str()).await.expect("test connection to the node's database");
        TestNode {
            child,
            base,
            secret,
            database_url,
            backend: opts.backend,
            data_dir,
            http: reqwest::Client::new(),
            db,
            _database: database,
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("node.log")).unwrap_or_default()
    }

    /// Mints a token with the real `parley token` command and this node's secret.
    pub fn token(&self, sub: &str, admin: bool) -> String {
        let mut cmd = Command::new(parley_bin());
        cmd.args(["token", "--user", sub])
            .env("PARLEY_SECRET", &self.secret)
            .env("PARLEY_CONFIG", self.data_dir.path().join("empty.toml"));
        if admin {
            cmd.arg("--admin");
        }
        let out = cmd.output().expect("run parley token");
        assert!(out.status.success(), "parley token failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    }

    pub fn admin_token(&self) -> String {
        self.token("it-operator", true)
    }

    /// The node's `GET /metrics` text, read with an operator token.
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(format!("{}/metrics", self.base)).bearer_auth(self.admin_token()).send().await;
        let resp = resp.expect("GET /metrics");
        assert!(resp.status().is_success(), "GET /metrics: {}", resp.status());
        resp.text().await.expect("metrics text")
    }

    /// Registers a user through the API; returns its id and a token for it.
    pub async fn user(&self, email: &str, name: &str) -> (Uuid, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/users",
                Some(&self.admin_token()),
                Some(serde_json::json!({"email": email, "display_name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create user: {body}");
        let id: Uuid = body["user_id"].as_str().and_then(|s| s.parse().ok()).expect("user_id");
        (id, self.token(&id.to_string(), false))
    }

    /// Sends a JSON request; returns the status and the JSON body (`Null` if empty/not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends raw bytes with an optional content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Runs a query directly on the node's database.
    pub async fn sql(&self, sql: &str) -> Vec<QueryResult> {
        let backend = match self.backend {
            Backend::Postgres => DbBackend::Postgres,
            Backend::Sqlite => DbBackend::Sqlite,
        };
        self.db
            .query_all_raw(Statement::from_string(backend, sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a statement directly on the node's database.
    pub async fn exec(&self, sql: &str) {
        self.db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `SELECT count(*) FROM <table> [WHERE …]`.
    pub async fn count(&self, table_and_filter: &str) -> i64 {
        let rows = self.sql(&format!("SELECT COUNT(*) AS n FROM {table_and_filter}")).await;
        rows[0].try_get::<i64>("", "n").expect("count")
    }

    /// A UUID as an SQL literal for this node's engine (PostgreSQL `uuid`, SQLite blob).
    pub fn id_lit(&self, id: Uuid) -> String {
        match self.backend {
            Backend::Postgres => format!("'{id}'"),
            Backend::Sqlite => format!("X'{}'", id.simple()),
        }
    }

    /// A timestamp as an SQL literal both engines store and compare like the node does.
    pub fn ts_lit(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        format!("'{}'", t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the node process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Reads `GET /metrics` every `every`, as a Prometheus server would, until the returned
    /// scraper is dropped.
    pub fn scrape_metrics_every(&self, every: Duration) -> MetricsScraper {
        let (http, url, token) = (self.http.clone(), format!("{}/metrics", self.base), self.admin_token());
        let scrapes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = scrapes.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        MetricsScraper { task, scrapes }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: no shutdown, no goodbye to peers.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Several real `parley node` processes of one cluster: a generated `cluster.toml` (unique node
/// names, free ports on 127.0.0.1), one shared PostgreSQL database, the test Redis.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub names: Vec<String>,
    pub config: String,
    pub database: TestDatabase,
}

impl TestCluster {
    /// Starts `n` members (the configuration lists `n + extra` nodes: the extra ones are
    /// configured but not started) and waits until they see each other.
    pub async fn start(n: usize, extra: usize, env: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_on(n, extra, env, &pg_admin_url(), &redis_url()).await
    }

    /// [`TestCluster::start`] on a given PostgreSQL server (its admin URL) and Redis.
    pub async fn start_on(n: usize, extra: usize, env: &[(&str, &str)], pg_admin: &str, redis: &str) -> TestCluster {
        let database = TestDatabase::create(pg_admin).await;
        let tag = &Uuid::new_v4().simple().to_string()[..8];
        let names: Vec<String> = (0..n + extra).map(|i| format!("it{tag}-{}", (b'a' + i as u8) as char)).collect();
        let mut config = format!(
            "[cluster]\nname = \"it-{tag}\"\ncookie = \"it-cookie-{tag}\"\nsecret = \"it-secret-{tag}-0123456789\"\n\
             database_url = \"{}\"\nredis_url = \"{}\"\n",
            database.url, redis
        );
        for name in &names {
            config.push_str(&format!(
                "\n[[nodes]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nhttp_port = {}\ncluster_port = {}\n\
                 media_port = {}\nmax_meetings = 1000\nmax_participants = 10000\n",
                free_port(),
                free_port(),
                free_port()
            ));
        }
        let mut c = TestCluster { nodes: Vec::new(), names, config, database };
        for i in 0..n {
            let node = c.start_member(i, env).await;
            c.nodes.push(node);
        }
        for i in 0..n {
            c.wait_sees(i, n).await;
        }
        c
    }

    /// Starts member `i` of the configuration.
    pub async fn start_member(&self, i: usize, env: &[(&str, &str)]) -> TestNode {
        let mut opts = NodeOptions::new(Backend::Postgres);
        opts.database_url = Some(self.database.url.clone());
        opts.member = Some((self.config.clone(), self.names[i].clone()));
        for (k, v) in env {
            opts = opts.env(k, *v);
        }
        opts = opts.env("PARLEY_SECRET", self.secret());
        let mut node = TestNode::start_with(opts).await;
        node.secret = self.secret();
        node
    }

    /// The token secret of the cluster (from its configuration).
    pub fn secret(&self) -> String {
        let start = self.config.find("secret = \"").expect("secret") + 10;
        let end = self.config[start..].find('"').expect("end") + start;
        self.config[start..end].to_owned()
    }

    /// `GET /api/admin/cluster` on node `i`.
    pub async fn view(&self, i: usize) -> Value {
        let n = &self.nodes[i];
        let (status, body) = n.call(Method::GET, "/api/admin/cluster", Some(&n.admin_token()), None).await;
        assert_eq!(status, StatusCode::OK, "cluster view: {body}");
        body
    }

    /// Waits until node `i` sees `count` alive members (itself included).
    pub async fn wait_sees(&self, i: usize, count: usize) {
        let ok = eventually(Duration::from_secs(30), || async {
            let v = self.view(i).await;
            v["nodes"].as_array().map(|a| a.iter().filter(|n| n["status"] == "alive").count()).unwrap_or(0) >= count
        })
        .await;
        assert!(ok, "node {i} never saw {count} alive nodes: {}\n{}", self.view(i).await, self.nodes[i].log());
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(stdout: std::process::ChildStdout, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut lines = BufReader::new(stdout).lines();
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.split("ready: ").nth(1) {
                    let url = url.trim().to_owned();
                    // Keep draining stdout so the node never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines {});
                    return Ok(url);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the process exited before it was ready".into()),
        }
    }
    Err("timed out".into())
}

/// A private PostgreSQL server (initdb into a temp dir) that a test can stop and start, to see
/// what the node does while its database is gone. Needs the server binaries
/// (`/usr/lib/postgresql/*/bin`) and, as root, the `postgres` OS user.
pub struct ThrowawayPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl ThrowawayPostgres {
    pub fn bin_dir() -> Option<PathBuf> {
        if let Ok(dir) = std::env::var("PARLEY_PG_BIN") {
            return Some(PathBuf::from(dir)).filter(|d| d.join("pg_ctl").exists());
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        dirs.sort();
        dirs.pop().filter(|d| d.join("pg_ctl").exists())
    }

    fn as_postgres(&self, args: &[&str]) -> std::process::Output {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let mut cmd = if is_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(args[0]));
            c
        } else {
            Command::new(self.bin.join(args[0]))
        };
        cmd.args(&args[1..]).output().expect("run PostgreSQL tool")
    }

    pub fn start_new() -> ThrowawayPostgres {
        let bin = ThrowawayPostgres::bin_dir().expect("PostgreSQL server binaries (apt-get install postgresql)");
        let dir = std::env::temp_dir().join(format!("parley-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
        let port = free_port();
        let pg = ThrowawayPostgres { port, dir, bin };
        let data = pg.dir.join("data");
        let out = pg.as_postgres(&[
            "initdb",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-D",
            data.to_str().unwrap_or_default(),
        ]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg.start();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start(&self) {
        let data = self.dir.join("data");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("pg.log");
        let out = self.as_postgres(&[
            "pg_ctl",
            "-w",
            "-D",
            data.to_str().unwrap_or_default(),
            "-l",
            log.to_str().unwrap_or_default(),
            "-o",
            &opts,
            "start",
        ]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn stop(&self) {
        let data = self.dir.join("data");
        let out = self.as_postgres(&["pg_ctl", "-w", "-D", data.to_str().unwrap_or_default(), "-m", "fast", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.as_postgres(&["pg_ctl", "-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A background `GET /metrics` loop ([`TestNode::scrape_metrics_every`]); stops when dropped.
pub struct MetricsScraper {
    task: tokio::task::JoinHandle<()>,
    scrapes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl MetricsScraper {
    /// Successful scrapes so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for MetricsScraper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Clock ticks per second of /proc times (USER_HZ; 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// CPU seconds (user + system) of a process or thread, from its `stat` file
/// (`/proc/<pid>/stat`, `/proc/thread-self/stat`); 0 when unreadable.
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(stat_path) else { return 0.0 };
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15 (1-based).
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / CLOCK_TICKS
}

/// A port that is free for both TCP and UDP on 127.0.0.1, for a node to bind later.
///
/// Taken from below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by
/// default): a port the kernel hands out for `:0` binds and outgoing connections can be taken by
/// another test's Redis or PostgreSQL connection between this check and the node's bind, which
/// is how a cluster node once failed with "Address already in use". Ports are handed out in turn
/// from a per-process offset, so two test processes rarely try the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() * 7919) % SPAN;
    for _ in 0..SPAN {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub mod ws {
    //! A WebSocket test client speaking Parley's protocol (JSON text or MessagePack binary).

    use std::collections::VecDeque;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    use super::TestNode;

    /// How long a test waits for an expected frame.
    pub const WAIT: Duration = Duration::from_secs(10);

    pub struct WsClient {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        next_id: u64,
        /// Events (and stray replies) read while waiting for something else.
        pub buffered: VecDeque<Value>,
        /// Close frame seen, if any: (code, reason).
        pub closed: Option<(u16, String)>,
    }

    impl WsClient {
        /// Opens a connection without a token (it must send `auth` first).
        pub async fn connect_anonymous(node: &TestNode) -> WsClient {
            let url = format!("{}/ws", node.base.replacen("http://", "ws://", 1));
            let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connect");
            WsClient { ws, next_id: 1, buffered: VecDeque::new(), closed: None }
        }

        pub async fn connect(node: &TestNode, token: &str) -> WsClient {
            WsClient::try_connect(&node.base, token).await.expect("WebSocket connect")
        }

        /// Connects to the node at `base` (`http://host:port`), `None` if it does not answer.
        pub async fn try_connect(base: &str, token: &str) -> Option<WsClient> {
            let url = format!("{}/ws?token={token}", base.replacen("http://", "ws://", 1));
            let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
            Some(WsClient { ws, next_id: 1, buffered: VecDeque::new(), closed: None })
        }

        /// Sends a request without waiting for its reply; returns its id, or `None` when the
        /// socket is gone.
        pub async fn try_send(&mut self, mut req: Value) -> Option<u64> {
            let id = self.next_id;
            self.next_id += 1;
            req["id"] = json!(id);
            self.ws.send(Message::Text(req.to_string().into())).await.ok()?;
            Some(id)
        }

        /// Sends raw text.
        pub async fn send_text(&mut self, text: impl Into<String>) {
            self.ws.send(Message::Text(text.into().into())).await.expect("send text");
        }

        /// Sends many text frames in one write (queued, then flushed together).
        pub async fn send_batch(&mut self, texts: impl IntoIterator<Item = String>) {
            for t in texts {
                self.ws.feed(Message::Text(t.into())).await.expect("queue text");
            }
            self.ws.flush().await.expect("flush");
        }

        /// Sends raw binary.
        pub async fn send_binary(&mut self, bytes: Vec<u8>) {
            self.ws.send(Message::Binary(bytes.into())).await.expect("send binary");
        }

        /// Reads the next frame as JSON (MessagePack frames are decoded too).
        pub async fn next_frame(&mut self, wait: Duration) -> Option<Value> {
            loop {
                let msg = match tokio::time::timeout(wait, self.ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => return None,
                };
                match msg {
                    Message::Text(t) => return Some(serde_json::from_str(t.as_str()).expect("server sends JSON text")),
                    Message::Binary(b) => {
                        return Some(rmp_serde::from_slice(&b).expect("server sends MessagePack binary"));
                    }
                    Message::Close(f) => {
                        self.closed =
                            Some(f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new())));
                        return None;
                    }
                    _ => continue,
                }
            }
        }

        /// Sends a request (an object without `id`) as JSON and returns its reply.
        pub async fn request(&mut self, mut req: Value) -> Value {
            let id = self.next_id;
            self.next_id += 1;
            req["id"] = json!(id);
            self.send_text(req.to_string()).await;
            self.reply_to(id).await
        }

        /// Sends a request as MessagePack and returns its reply (decoded from MessagePack).
        pub async fn request_msgpack(&mut self, mut req: Value) -> Value {
            let id = self.next_id;
            self.next_id += 1;
            req["id"] = json!(id);
            self.send_binary(rmp_serde::to_vec_named(&req).expect("encode")).await;
            self.reply_to(id).await
        }

        /// Waits for the reply to `id`, buffering events met on the way.
        pub async fn reply_to(&mut self, id: u64) -> Value {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let frame = self
                    .next_frame(left)
                    .await
                    .unwrap_or_else(|| panic!("no reply to {id} (closed: {:?})", self.closed));
                if frame.get("reply_to") == Some(&json!(id)) {
                    return frame;
                }
                self.buffered.push_back(frame);
            }
        }

        /// The next event named `name` (from the buffer or the socket), skipping others.
        pub async fn event(&mut self, name: &str) -> Value {
            self.try_event(name, WAIT)
                .await
                .unwrap_or_else(|| panic!("no `{name}` event; buffered: {:?}", self.buffered))
        }

        pub async fn try_event(&mut self, name: &str, wait: Duration) -> Option<Value> {
            if let Some(pos) = self.buffered.iter().position(|f| f["event"] == name) {
                return self.buffered.remove(pos);
            }
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let frame = self.next_frame(left).await?;
                if frame["event"] == name {
                    return Some(frame);
                }
                self.buffered.push_back(frame);
            }
        }

        /// Closes the socket.
        pub async fn close(mut self) {
            let _ = self.ws.close(None).await;
        }
    }
}

/// A private Redis server (no persistence) that a test may stop and start again on the same
/// port — a restart loses every key, as a real one without persistence would.
pub struct ThrowawayRedis {
    pub port: u16,
}

impl ThrowawayRedis {
    pub fn start_new() -> ThrowawayRedis {
        let r = ThrowawayRedis { port: free_port() };
        r.start();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn start(&self) {
        let ok = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .arg("--logfile")
            .arg(std::env::temp_dir().join(format!("parley-it-redis-{}.log", self.port)))
            .status()
            .expect("redis-server (apt-get install redis-server)")
            .success();
        assert!(ok, "redis-server did not start");
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(up, "redis-server not listening on {}", self.port);
    }

    pub fn stop(&self) {
        let _ = Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).status();
        let down = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
        assert!(down, "redis-server still up on {}", self.port);
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).output();
    }
}

/// A TCP relay in front of a real server that a test can cut, as a network partition would:
/// `cut` closes every relayed connection and refuses new ones; `heal` accepts again. The node
/// behind it sees its server vanish while every other client of that server still reaches it.
pub struct CuttableLink {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableLink {
    /// Relays `127.0.0.1:<port>` to `target` (host:port).
    pub async fn start(target: &str) -> CuttableLink {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let target = target.to_owned();
        let (c, g) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (target, c, g) = (target.clone(), c.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let relay = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while !c.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = relay => {}, _ = watch => {} }
                });
            }
        });
        CuttableLink { port, cut, generation, task }
    }

    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A certificate authority for a test cluster's mutual TLS: a CA certificate and, signed by it,
/// one member certificate for 127.0.0.1, written as PEM files into a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn create() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let member_key = KeyPair::generate().expect("member key");
        let member = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("member params")
            .signed_by(&member_key, &ca)
            .expect("member cert");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.path().join("member.pem"), member.pem()).expect("write cert");
        std::fs::write(dir.path().join("member.key"), member_key.serialize_pem()).expect("write key");
        TestPki { dir }
    }

    /// The node environment that turns mutual TLS on with this PKI's files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let p = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            ("PARLEY_CLUSTER_TLS_CA", p("ca.pem")),
            ("PARLEY_CLUSTER_TLS_CERT", p("member.pem")),
            ("PARLEY_CLUSTER_TLS_KEY", p("member.key")),
        ]
    }
}

/// The sum of every sample of `metric` in Prometheus text whose labels include all of
/// `labels` (0 when none does).
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod metric_tests {
    #[test]
    fn metric_sum_adds_the_matching_series_only() {
        let text = "# HELP x_total X\nx_total{op=\"a\",backend=\"redis\"} 2\nx_total{op=\"b\",backend=\"redis\"} 3\nx_total{op=\"a\",backend=\"in-process\"} 7\nx_total_other 9\nplain 4\n";
        assert_eq!(super::metric_sum(text, "x_total", &[("backend", "redis")]), 5.0);
        assert_eq!(super::metric_sum(text, "x_total", &[]), 12.0);
        assert_eq!(super::metric_sum(text, "x_total", &[("op", "c")]), 0.0);
        assert_eq!(super::metric_sum(text, "plain", &[]), 4.0);
    }
}
