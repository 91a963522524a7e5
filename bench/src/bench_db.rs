//! `make bench-db`: seeds a throwaway PostgreSQL database with ≥ 100k meetings and ≥ 1M
//! participant rows (set-based SQL, with progress), then measures the latency of the seed's
//! QUERY 1 (upcoming meetings) and QUERY 2 (join facts) exactly as the node runs them, next to a
//! `SELECT 1` round trip through the same pool measured in the same run. Prints EXPLAIN ANALYZE
//! of both queries and a markdown table.
//!
//! Helper tables (`bench_users`, `bench_chunk`) are plain unlogged tables: the pool may run each
//! statement on a different session, so temporary tables would vanish between them.
//!
//! Usage: `bench-db --database-url postgres://… [--users N] [--meetings N]
//! [--participants-per-meeting N] [--samples N] [--warmup N]`. The URL may also come from
//! `PARLEY_BENCH_DATABASE_URL`. The database must be empty (a fresh one per run).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use parley_store::Store;
use parley_store::queries::{join_facts_select, upcoming_select};
use rand::Rng;
use rand::seq::IndexedRandom;
use sea_orm::sea_query::PostgresQueryBuilder;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, QueryTrait, Statement};
use uuid::Uuid;

const USAGE: &str = "usage: bench-db --database-url postgres://… [--users 20000] [--meetings 100000] \
                     [--participants-per-meeting 10] [--samples 2000] [--warmup 200]\n\
                     (the URL may also come from PARLEY_BENCH_DATABASE_URL; the database must be empty)";

/// Meetings inserted per set-based statement batch.
const CHUNK: u64 = 10_000;
/// How many candidate users / meetings / participant pairs are drawn from the database.
const CANDIDATES: usize = 5_000;
/// Any fixed argon2id-looking hash: QUERY 2 only reads it, nothing verifies it here.
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0YmVuY2g$3r7wq5D0mX0l2m3kZcS7m1y0Wq6b1u3Jb2Ft9xJbN0c";

struct Args {
    database_url: String,
    users: u64,
    meetings: u64,
    per_meeting: u64,
    samples: usize,
    warmup: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        database_url: std::env::var("PARLEY_BENCH_DATABASE_URL").unwrap_or_default(),
        users: 20_000,
        meetings: 100_000,
        per_meeting: 10,
        samples: 2_000,
        warmup: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().with_context(|| format!("{flag}: {v:?} is not a whole number"));
        match flag.as_str() {
            "--database-url" => a.database_url = value()?,
            "--users" => a.users = number(value()?)?,
            "--meetings" => a.meetings = number(value()?)?,
            "--participants-per-meeting" => a.per_meeting = number(value()?)?,
            "--samples" => a.samples = number(value()?)? as usize,
            "--warmup" => a.warmup = number(value()?)? as usize,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.database_url.is_empty() {
        bail!("--database-url (or PARLEY_BENCH_DATABASE_URL) is required\n{USAGE}");
    }
    ensure!(a.database_url.starts_with("postgres"), "bench-db needs a postgres:// URL");
    ensure!(a.users >= 1 && a.meetings >= 1, "--users and --meetings must be at least 1");
    ensure!(a.samples >= 1, "--samples must be at least 1");
    ensure!(
        (1..=a.users).contains(&a.per_meeting),
        "--participants-per-meeting must be between 1 and --users ({})",
        a.users
    );
    Ok(a)
}

/// The URL with any password replaced, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn exec(store: &Store, sql: &str) -> anyhow::Result<()> {
    store
        .connection()
        .execute_unprepared(sql)
        .await
        .with_context(|| format!("statement failed: {}…", sql.split_whitespace().collect::<Vec<_>>().join(" ")))?;
    Ok(())
}

async fn rows(store: &Store, sql: &str) -> anyhow::Result<Vec<QueryResult>> {
    store
        .connection()
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .with_context(|| format!("query failed: {sql}"))
}

/// The first column of every row, as text.
async fn strings(store: &Store, sql: &str) -> anyhow::Result<Vec<String>> {
    rows(store, sql)
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).with_context(|| format!("reading a text column of {sql}")))
        .collect()
}

/// A single-row query's bigint columns.
async fn bigints(store: &Store, sql: &str, n: usize) -> anyhow::Result<Vec<i64>> {
    let rows = rows(store, sql).await?;
    let row = rows.first().with_context(|| format!("no row from {sql}"))?;
    (0..n).map(|i| row.try_get_by_index::<i64>(i).with_context(|| format!("reading column {i} of {sql}"))).collect()
}

fn uuids(texts: &[String]) -> anyhow::Result<Vec<Uuid>> {
    texts.iter().map(|s| s.parse::<Uuid>().with_context(|| format!("bad uuid {s}"))).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A step coprime with `users`, so `host + k·step (mod users)` for k < per-meeting are distinct
/// users: every meeting's participants are distinct without a uniqueness check in SQL.
fn coprime_step(users: u64) -> u64 {
    if users <= 1 {
        return 1;
    }
    let mut s = (users / 10).max(1) | 1;
    while gcd(s % users, users) != 1 {
        s += 1;
    }
    s % users
}

struct Seeded {
    users: i64,
    meetings: i64,
    participants: i64,
    elapsed: Duration,
}

/// Seeds users, meetings and participants with set-based SQL, reporting progress per chunk.
async fn seed(store: &Store, a: &Args) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    exec(store, "DROP TABLE IF EXISTS bench_chunk; DROP TABLE IF EXISTS bench_users;").await?;
    exec(store, "CREATE UNLOGGED TABLE bench_users (n bigint PRIMARY KEY, id uuid NOT NULL)").await?;
    exec(
        store,
        &format!(
            "INSERT INTO bench_users SELECT g, gen_random_uuid() FROM generate_series(0, {last}) g;
             INSERT INTO users (id, email, display_name, plan, status, created_at, updated_at)
             SELECT id, 'user' || n || '@bench.test', 'User ' || n,
                    (ARRAY['free','free','pro','business','enterprise'])[1 + n % 5],
                    CASE WHEN n % 50 = 49 THEN 'pending' ELSE 'active' END,
                    now() - (n % 400) * interval '1 day', now()
             FROM bench_users;",
            last = a.users - 1
        ),
    )
    .await?;
    println!("seeding users {}/{} {:.1} s", a.users, a.users, started.elapsed().as_secs_f64());

    let step = coprime_step(a.users);
    let mut done = 0u64;
    while done < a.meetings {
        let end = (done + CHUNK).min(a.meetings);
        // Meeting n: host (n·7919 mod U); ~75 % scheduled, ~15 % ended, ~10 % cancelled. Ended ones lie
        // in the past 30 days, the others anywhere from 30 days ago to 60 days ahead, at a random
        // quarter hour. ~30 % carry a password, ~half a waiting room. Participant k (0 = host) is
        // user (host + k·step mod U): distinct within a meeting; mostly attendees, some co-hosts
        // and panelists.
        exec(
            store,
            &format!(
                "CREATE UNLOGGED TABLE bench_chunk AS
                   SELECT n, id, host_n, status,
                          CASE WHEN status = 'ended'
                               THEN date_trunc('hour', now()) - (1 + floor(random() * 719)) * interval '1 hour'
                               ELSE date_trunc('hour', now()) + (floor(random() * 8640) - 2880) * interval '15 minutes'
                          END AS at
                   FROM (SELECT g AS n, gen_random_uuid() AS id, (g * 7919) % {u} AS host_n,
                                (ARRAY['scheduled','ended','cancelled'])[
                                    CASE WHEN r < 0.75 THEN 1 WHEN r < 0.90 THEN 2 ELSE 3 END] AS status
                         FROM (SELECT g, random() AS r FROM generate_series({done}, {last}) g) gr) s;
                 INSERT INTO meetings (id, host_user_id, title, meeting_type, scheduled_time, duration_minutes, timezone,
                        password_hash, waiting_room_enabled, recording_allowed, mute_on_entry, video_on_entry, screen_share,
                        status, started_at, ended_at, actual_duration_seconds, created_at, updated_at)
                 SELECT c.id, h.id, 'Meeting ' || c.n,
                        CASE WHEN random() < 0.1 THEN 'webinar' WHEN random() < 0.1 THEN 'instant' ELSE 'scheduled' END,
                        c.at, 15 * (1 + c.n % 8),
                        (ARRAY['UTC','Europe/Berlin','America/New_York','Asia/Tokyo'])[1 + c.n % 4],
                        CASE WHEN random() < 0.3 THEN '{PASSWORD_HASH}' END,
                        random() < 0.5, random() < 0.75, random() < 0.3, random() < 0.8,
                        CASE WHEN random() < 0.25 THEN 'all' ELSE 'host_only' END, c.status,
                        CASE WHEN c.status = 'ended' THEN c.at + (c.n % 5) * interval '1 minute' END,
                        CASE WHEN c.status = 'ended'
                             THEN c.at + (c.n % 5) * interval '1 minute' + (300 + (c.n * 37) % 5100) * interval '1 second'
                        END,
                        CASE WHEN c.status = 'ended' THEN 300 + (c.n * 37) % 5100 END,
                        c.at - interval '3 days', c.at - interval '3 days'
                 FROM bench_chunk c JOIN bench_users h ON h.n = c.host_n;
                 INSERT INTO meeting_participants (meeting_id, user_id, role, email, invite_status, invited_at, scheduled_time)
                 SELECT c.id, u.id,
                        CASE WHEN k = 0 THEN 'host' WHEN k = 1 AND c.n % 5 = 2 THEN 'co_host'
                             WHEN k = 2 AND c.n % 10 = 7 THEN 'panelist' ELSE 'attendee' END,
                        'user' || u.n || '@bench.test',
                        CASE WHEN k = 0 THEN 'accepted'
                             ELSE (ARRAY['accepted','accepted','pending','declined'])[1 + (c.n + k) % 4] END,
                        c.at - interval '3 days', c.at
                 FROM bench_chunk c CROSS JOIN generate_series(0, {k_last}) k
                 JOIN bench_users u ON u.n = (c.host_n + k * {step}) % {u};
                 DROP TABLE bench_chunk;",
                u = a.users,
                last = end - 1,
                k_last = a.per_meeting - 1,
            ),
        )
        .await?;
        done = end;
        println!(
            "seeding meetings {done}/{} (participants {}) {:.1} s",
            a.meetings,
            done * a.per_meeting,
            started.elapsed().as_secs_f64()
        );
    }
    // VACUUM as well as ANALYZE: otherwise autovacuum wakes up on the freshly loaded tables in
    // the middle of the measurement and shows up as outliers.
    exec(store, "VACUUM (ANALYZE) users, meetings, meeting_participants, bench_users").await?;
    let elapsed = started.elapsed();
    println!("VACUUM (ANALYZE) done {:.1} s", elapsed.as_secs_f64());
    let n = bigints(
        store,
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM meetings), (SELECT count(*) FROM meeting_participants)",
        3,
    )
    .await?;
    Ok(Seeded { users: n[0], meetings: n[1], participants: n[2], elapsed })
}

struct Stats {
    samples: usize,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Nearest-rank percentiles, in milliseconds. `v` is never empty (`--samples` ≥ 1).
fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        let rank = ((v.len() as f64) * q).ceil() as usize;
        ms(v[rank.clamp(1, v.len()) - 1])
    };
    Stats {
        samples: v.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: v.last().map_or(0.0, |d| ms(*d)),
        mean: ms(v.iter().sum::<Duration>()) / v.len().max(1) as f64,
    }
}

async fn explain(store: &Store, sql: &str) -> anyhow::Result<String> {
    Ok(strings(store, &format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")).await?.join("\n"))
}

/// Index names from "Index Scan using X on …", "Index Only Scan using X", "Bitmap Index Scan on X".
fn indexes_in(plan: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in plan.lines().filter(|l| l.contains("Index")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            let bitmap = line.contains("Bitmap Index Scan") && w[0] == "on";
            if w[0] == "using" || bitmap {
                found.push(w[1].trim_matches('"').to_owned());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn seq_scans_in(plan: &str) -> Vec<String> {
    let mut found: Vec<String> = plan
        .lines()
        .filter(|l| l.contains("Seq Scan on"))
        .filter_map(|l| l.split("Seq Scan on").nth(1)?.split_whitespace().next().map(str::to_owned))
        .collect();
    found.sort();
    found.dedup();
    found
}

fn index_verdict(plan: &str) -> String {
    let idx = indexes_in(plan);
    let seq = seq_scans_in(plan);
    let mut v =
        if idx.is_empty() { "index used: NO".to_owned() } else { format!("index used: yes ({})", idx.join(", ")) };
    if !seq.is_empty() {
        v.push_str(&format!("; sequential scan on {}", seq.join(", ")));
    }
    v
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

async fn run() -> anyhow::Result<()> {
    let a = parse_args()?;
    let where_ = redacted(&a.database_url);
    let store = Store::connect(&a.database_url)
        .await
        .with_context(|| format!("cannot connect to the benchmark database at {where_} (is PostgreSQL running?)"))?;
    store.ping().await.with_context(|| format!("the benchmark database at {where_} does not answer"))?;
    ensure!(store.backend() == DbBackend::Postgres, "bench-db needs PostgreSQL");
    let version = strings(&store, "SHOW server_version").await?.pop().unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("bench-db: PostgreSQL {version} at {where_}; client {cores} cores, {}", cpu_model());

    let applied = store
        .migrate(|s| println!("migration [{}/{}] {} ({} ms)", s.index, s.total, s.name, s.elapsed.as_millis()))
        .await
        .context("migrations failed")?;
    println!("{applied} migrations applied");
    let existing = bigints(&store, "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM meetings)", 1).await?;
    ensure!(
        existing[0] == 0,
        "the database at {where_} already holds users or meetings; bench-db needs a fresh, empty database"
    );

    let seeded = seed(&store, &a).await?;

    // Candidates: random users, random meetings, and random (meeting, invited user) pairs.
    let users = uuids(
        &strings(&store, &format!("SELECT id::text FROM bench_users ORDER BY random() LIMIT {CANDIDATES}")).await?,
    )?;
    let meetings =
        uuids(&strings(&store, &format!("SELECT id::text FROM meetings ORDER BY random() LIMIT {CANDIDATES}")).await?)?;
    let pair_rows = rows(
        &store,
        &format!(
            "SELECT meeting_id::text, user_id::text FROM meeting_participants TABLESAMPLE SYSTEM (2) \
             ORDER BY random() LIMIT {CANDIDATES}"
        ),
    )
    .await?;
    let mut pairs = Vec::with_capacity(pair_rows.len());
    for r in &pair_rows {
        let m: String = r.try_get_by_index(0).context("reading a sampled meeting id")?;
        let u: String = r.try_get_by_index(1).context("reading a sampled user id")?;
        pairs.push((m.parse::<Uuid>()?, u.parse::<Uuid>()?));
    }
    ensure!(!users.is_empty() && !meetings.is_empty(), "nothing was seeded");
    let mut rng = rand::rng();
    // Half the join checks are by an invited participant, half by a random user (mostly not invited).
    let pick_join = |rng: &mut rand::rngs::ThreadRng| -> (Uuid, Uuid) {
        match pairs.choose(rng) {
            Some(p) if rng.random_bool(0.5) => *p,
            _ => (meetings[rng.random_range(0..meetings.len())], users[rng.random_range(0..users.len())]),
        }
    };

    println!("warming up: {} rounds", a.warmup);
    for _ in 0..a.warmup {
        store.ping().await?;
        store.upcoming_meetings(users[rng.random_range(0..users.len())], Utc::now(), 10).await?;
        let (m, u) = pick_join(&mut rng);
        store.join_facts(m, u).await?;
    }

    let (mut base, mut upcoming, mut join) =
        (Vec::with_capacity(a.samples), Vec::with_capacity(a.samples), Vec::with_capacity(a.samples));
    let (mut upcoming_rows, mut joins_invited) = (0usize, 0usize);
    let measuring = Instant::now();
    for i in 0..a.samples {
        let u = users[rng.random_range(0..users.len())];
        let (jm, ju) = pick_join(&mut rng);
        let now = Utc::now();

        let t = Instant::now();
        store.ping().await.context("SELECT 1")?;
        base.push(t.elapsed());

        let t = Instant::now();
        let got = store.upcoming_meetings(u, now, 10).await.context("QUERY 1 upcoming meetings")?;
        upcoming.push(t.elapsed());
        upcoming_rows += got.len();

        let t = Instant::now();
        let facts = store.join_facts(jm, ju).await.context("QUERY 2 join facts")?;
        join.push(t.elapsed());
        let facts = facts.context("QUERY 2 found no meeting for a seeded meeting id")?;
        joins_invited += usize::from(facts.facts.caller_role.is_some());

        if (i + 1) % 500 == 0 || i + 1 == a.samples {
            println!("measured {}/{} {:.1} s", i + 1, a.samples, measuring.elapsed().as_secs_f64());
        }
    }

    let (u0, m0) = (users[0], pairs.first().map_or(meetings[0], |p| p.0));
    let upcoming_sql = upcoming_select(u0, Utc::now(), 10).into_query().to_string(PostgresQueryBuilder);
    let join_sql = join_facts_select(m0, u0).into_query().to_string(PostgresQueryBuilder);
    let plan_up = explain(&store, &upcoming_sql).await?;
    let plan_join = explain(&store, &join_sql).await?;
    println!("\n-- QUERY 1 (upcoming meetings), EXPLAIN (ANALYZE, BUFFERS)\n{upcoming_sql};\n{plan_up}");
    println!("=> QUERY 1 {}\n", index_verdict(&plan_up));
    println!("-- QUERY 2 (join facts), EXPLAIN (ANALYZE, BUFFERS)\n{join_sql};\n{plan_join}");
    println!("=> QUERY 2 {}\n", index_verdict(&plan_join));
    exec(&store, "DROP TABLE IF EXISTS bench_users").await?;

    let (b, q1, q2) = (stats(base), stats(upcoming), stats(join));
    println!("## bench-db — PostgreSQL {version}, {cores} cores ({})\n", cpu_model());
    println!(
        "seeded {} users, {} meetings, {} meeting_participants rows ({} rows) in {:.1} s; \
         {} warm-up rounds, then {} samples each",
        seeded.users,
        seeded.meetings,
        seeded.participants,
        seeded.users + seeded.meetings + seeded.participants,
        seeded.elapsed.as_secs_f64(),
        a.warmup,
        a.samples
    );
    println!(
        "QUERY 1 returned {:.1} rows on average; QUERY 2 caller was a participant in {:.0} % of samples\n",
        upcoming_rows as f64 / a.samples as f64,
        100.0 * joins_invited as f64 / a.samples as f64
    );
    println!(
        "| query | samples | p50 ms | p99 ms | max ms | mean ms | p50 / SELECT 1 | p99 / SELECT 1 | indexes used |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, s, plan) in [
        ("SELECT 1 (baseline)", &b, None),
        ("QUERY 1 upcoming meetings", &q1, Some(&plan_up)),
        ("QUERY 2 join facts", &q2, Some(&plan_join)),
    ] {
        let idx = plan.map_or_else(|| "—".to_owned(), |p| indexes_in(p).join(", "));
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {idx} |",
            s.samples,
            s.p50,
            s.p99,
            s.max,
            s.mean,
            s.p50 / b.p50,
            s.p99 / b.p99,
        );
    }
    let goal = if q1.p99 < 10.0 && q2.p99 < 10.0 { "met" } else { "NOT met" };
    println!("\ngoal p99 < 10 ms: {goal}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-db: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
