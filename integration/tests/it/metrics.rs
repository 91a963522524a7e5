//! `GET /metrics` read by a real Prometheus: three real nodes, two meetings owned by two of
//! them with participants connected through all three; Prometheus (Debian's, started here with
//! a scrape config written here) scrapes every node with the scrape token, and its HTTP API
//! reports each node's `parley_participants` and `parley_meetings` as the test made them.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley_integration::{TestCluster, eventually, free_port};
use parley_loadtest::{Api, Participant};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{id_of, in_hours, meeting_body};

const SCRAPE_TOKEN: &str = "it-scrape-token-0123456789";

/// A Prometheus server of the test's own, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes each `(node name, host:port)` every second with the scrape token; each target
    /// carries a `node` label.
    fn start(targets: &[(String, String)]) -> Prometheus {
        let bin = std::env::var("PARLEY_PROMETHEUS")
            .unwrap_or_else(|_| panic!("PARLEY_PROMETHEUS: run through scripts/services.sh (make test)"));
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n");
        config.push_str(&format!(
            "  - job_name: parley\n    metrics_path: /metrics\n    authorization:\n      credentials: {SCRAPE_TOKEN}\n    static_configs:\n"
        ));
        for (name, addr) in targets {
            config.push_str(&format!("      - targets: ['{addr}']\n        labels:\n          node: '{name}'\n"));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the scrape config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's vector, as `node` label → value.
    async fn by_node(&self, query: &str) -> Option<BTreeMap<String, f64>> {
        let url = format!("{}/api/v1/query", self.base);
        let resp = reqwest::Client::new().get(url).query(&[("query", query)]).send().await.ok()?;
        let body: Value = resp.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .filter_map(|r| {
                    let node = r["metric"]["node"].as_str()?.to_owned();
                    let value = r["value"][1].as_str()?.parse().ok()?;
                    Some((node, value))
                })
                .collect(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` on `base` with `token`: status and body text.
async fn scrape(base: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET /metrics");
    (resp.status(), resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_sees_the_participants_of_the_meetings_each_owns() {
    let c = TestCluster::start(3, 0, &[("PARLEY_METRICS_TOKEN", SCRAPE_TOKEN)]).await;
    let secret = c.secret();
    let api: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.base, secret.as_bytes())).collect();

    // Who may read it: the scrape token and operators; nobody else.
    let a = &c.nodes[0];
    let (_, user_token) = a.user("nosy@example.com", "Nosy User").await;
    assert_eq!(scrape(&a.base, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&a.base, Some("it-scrape-token-wrong-guess")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&a.base, Some(&user_token)).await.0, StatusCode::FORBIDDEN, "a user's token is not enough");
    let (status, text) = scrape(&a.base, Some(&a.admin_token())).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("# TYPE parley_participants gauge"), "{text}");

    // Meeting one: started on a, joined through c. Meeting two: started on b, joined through a and c.
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(a.user(&format!("m{i}@example.com"), &format!("Member {i}")).await);
    }
    let mut meetings = Vec::new();
    for (title, host) in [("owned by a", 0), ("owned by b", 1)] {
        let mut body = meeting_body(title, in_hours(1));
        body["settings"] = json!({"waiting_room": false});
        let (status, created) = a.call(Method::POST, "/api/meetings", Some(&users[host].1), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        meetings.push(id_of(&created, "meeting_id"));
    }
    let mut seated = Vec::new();
    seated.push(Participant::join(&api[0], meetings[0], users[0].0, true).await.expect("host of one starts on a"));
    seated.push(Participant::join(&api[2], meetings[0], users[2].0, false).await.expect("joins one through c"));
    seated.push(Participant::join(&api[1], meetings[1], users[1].0, true).await.expect("host of two starts on b"));
    seated.push(Participant::join(&api[0], meetings[1], users[3].0, false).await.expect("joins two through a"));
    seated.push(Participant::join(&api[2], meetings[1], users[4].0, false).await.expect("joins two through c"));

    let targets: Vec<(String, String)> = c
        .names
        .iter()
        .zip(&c.nodes)
        .map(|(name, n)| (name.clone(), n.base.trim_start_matches("http://").to_owned()))
        .collect();
    let prom = Prometheus::start(&targets);
    let want_participants: BTreeMap<String, f64> =
        [(c.names[0].clone(), 2.0), (c.names[1].clone(), 3.0), (c.names[2].clone(), 0.0)].into();
    let want_meetings: BTreeMap<String, f64> =
        [(c.names[0].clone(), 1.0), (c.names[1].clone(), 1.0), (c.names[2].clone(), 0.0)].into();
    let seen = eventually(Duration::from_secs(45), || async {
        prom.by_node("parley_participants").await.as_ref() == Some(&want_participants)
    })
    .await;
    let last = prom.by_node("parley_participants").await;
    assert!(seen, "Prometheus says parley_participants {last:?}, want {want_participants:?}\n{}", prom.log());
    assert_eq!(prom.by_node("parley_meetings").await, Some(want_meetings));
    let up = prom.by_node("up").await.unwrap_or_default();
    assert!(up.len() == 3 && up.values().all(|v| *v == 1.0), "every target is up: {up:?}");

    // What happened is counted too: five joins answered, cluster messages between the nodes.
    let joins = prom.by_node("sum by (node) (parley_join_duration_seconds_count)").await.unwrap_or_default();
    assert_eq!(joins.values().sum::<f64>(), 5.0, "joins counted per connection node: {joins:?}");
    assert_eq!(joins.get(&c.names[2]), Some(&2.0), "two joined through c: {joins:?}");
    let cluster_out =
        prom.by_node("sum by (node) (parley_cluster_messages_total{direction=\"out\"})").await.unwrap_or_default();
    assert!(cluster_out.get(&c.names[2]).is_some_and(|n| *n > 0.0), "c talks to the owners: {cluster_out:?}");

    // So are the calls to PostgreSQL and Redis the joins made, timed per operation.
    let db = prom.by_node("sum by (node) (parley_db_call_duration_seconds_count{op=\"join_facts\"})").await;
    let db = db.unwrap_or_default();
    assert_eq!(db.values().sum::<f64>(), 5.0, "one join_facts per join, on its connection node: {db:?}");
    let redis = prom
        .by_node("sum by (node) (parley_presence_call_duration_seconds_count{backend=\"redis\",op=\"upsert\"})")
        .await
        .unwrap_or_default();
    assert!(redis.values().sum::<f64>() >= 5.0, "every participant written to Redis by its owner: {redis:?}");
    let errors = prom.by_node("sum by (node) (parley_db_call_errors_total)").await.unwrap_or_default();
    assert!(errors.values().all(|n| *n == 0.0), "no database call failed: {errors:?}");

    // Leaving is seen as well.
    for p in [seated.pop(), seated.pop()].into_iter().flatten() {
        p.leave().await;
    }
    let want: BTreeMap<String, f64> =
        [(c.names[0].clone(), 2.0), (c.names[1].clone(), 1.0), (c.names[2].clone(), 0.0)].into();
    let left = eventually(Duration::from_secs(45), || async {
        prom.by_node("parley_participants").await == Some(want.clone())
    })
    .await;
    assert!(left, "after two left: {:?}", prom.by_node("parley_participants").await);
}
