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
//! [--participants-per-meeting N] [--samples N]`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use parley_store::Store;
use parley_store::queries::{join_facts_select, upcoming_select};
use rand::seq::IndexedRandom;
use sea_orm::sea_query::PostgresQueryBuilder;
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
use uuid::Uuid;

struct Args {
    database_url: String,
    users: u64,
    meetings: u64,
    per_meeting: u64,
    samples: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        database_url: std::env::var("PARLEY_BENCH_DATABASE_URL").unwrap_or_default(),
        users: 20_000,
        meetings: 100_000,
        per_meeting: 10,
        samples: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => a.database_url = value()?,
            "--users" => a.users = value()?.parse()?,
            "--meetings" => a.meetings = value()?.parse()?,
            "--participants-per-meeting" => a.per_meeting = value()?.parse()?,
            "--samples" => a.samples = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.database_url.is_empty() {
        bail!("--database-url (or PARLEY_BENCH_DATABASE_URL) is required");
    }
    if a.per_meeting < 1 || a.per_meeting > a.users {
        bail!("--participants-per-meeting must be between 1 and --users");
    }
    Ok(a)
}

async fn exec(store: &Store, sql: &str) -> anyhow::Result<()> {
    store.connection().execute_unprepared(sql).await.with_context(|| sql.chars().take(120).collect::<String>())?;
    Ok(())
}

async fn scalar_strings(store: &Store, sql: &str) -> anyhow::Result<Vec<String>> {
    let rows = store.connection().query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned())).await?;
    rows.iter().map(|r| r.try_get_by_index::<String>(0).map_err(Into::into)).collect()
}

/// Seeds users, meetings and participants with set-based SQL, reporting progress per chunk.
async fn seed(store: &Store, a: &Args) -> anyhow::Result<Duration> {
    let started = Instant::now();
    exec(store, "CREATE UNLOGGED TABLE IF NOT EXISTS bench_users (n bigint PRIMARY KEY, id uuid NOT NULL)").await?;
    exec(
        store,
        &format!(
            "INSERT INTO bench_users SELECT g, gen_random_uuid() FROM generate_series(0, {}) g;
             INSERT INTO users (id, email, display_name, plan, status, created_at, updated_at)
             SELECT id, 'user' || n || '@bench.test', 'User ' || n,
                    (ARRAY['free','pro','business','enterprise'])[1 + n % 4], 'active', now(), now()
             FROM bench_users;",
            a.users - 1
        ),
    )
    .await?;
    println!("seeding users {} done ({:.1} s)", a.users, started.elapsed().as_secs_f64());
    let chunk = 10_000u64;
    let mut done = 0u64;
    while done < a.meetings {
        let end = (done + chunk).min(a.meetings);
        // Meeting n: host (n·7919 mod U); scheduled from 30 days ago to 60 days ahead;
        // 75 % scheduled, 15 % ended, 10 % cancelled; 30 % with a password; half with a waiting room.
        exec(
            store,
            &format!(
                "CREATE UNLOGGED TABLE bench_chunk AS
                   SELECT g AS n, gen_random_uuid() AS id, (g * 7919) % {u} AS host_n,
                          date_trunc('minute', now()) + ((g % 2160) - 720) * interval '1 hour' AS at,
                          CASE WHEN g % 20 < 15 THEN 'scheduled' WHEN g % 20 < 18 THEN 'ended' ELSE 'cancelled' END AS status
                   FROM generate_series({done}, {last}) g;
                 INSERT INTO meetings (id, host_user_id, title, meeting_type, scheduled_time, duration_minutes, timezone,
                        password_hash, waiting_room_enabled, recording_allowed, mute_on_entry, video_on_entry, screen_share,
                        status, started_at, ended_at, actual_duration_seconds, created_at, updated_at)
                 SELECT c.id, h.id, 'Meeting ' || c.n, CASE WHEN c.n % 10 = 0 THEN 'webinar' ELSE 'scheduled' END, c.at,
                        15 * (1 + c.n % 8), 'UTC',
                        CASE WHEN c.n % 10 < 3 THEN '$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0$bench' END,
                        c.n % 2 = 0, true, c.n % 3 = 0, true, 'host_only', c.status,
                        CASE WHEN c.status = 'ended' THEN c.at END,
                        CASE WHEN c.status = 'ended' THEN c.at + interval '30 minutes' END,
                        CASE WHEN c.status = 'ended' THEN 1800 END, now(), now()
                 FROM bench_chunk c JOIN bench_users h ON h.n = c.host_n;
                 INSERT INTO meeting_participants (meeting_id, user_id, role, email, invite_status, invited_at, scheduled_time)
                 SELECT c.id, u.id,
                        CASE WHEN k = 0 THEN 'host' WHEN k = 1 AND c.n % 5 = 0 THEN 'co_host'
                             WHEN k = 2 AND c.n % 10 = 0 THEN 'panelist' ELSE 'attendee' END,
                        'user' || u.n || '@bench.test',
                        CASE WHEN k = 0 THEN 'accepted' ELSE (ARRAY['pending','accepted','declined'])[1 + (c.n + k) % 3] END,
                        now(), c.at
                 FROM bench_chunk c CROSS JOIN generate_series(0, {k_last}) k
                 JOIN bench_users u ON u.n = CASE WHEN k = 0 THEN c.host_n ELSE (c.host_n + k * 2003) % {u} END;
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
    exec(store, "ANALYZE users; ANALYZE meetings; ANALYZE meeting_participants;").await?;
    Ok(started.elapsed())
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: ms(*v.last().unwrap_or(&Duration::ZERO)),
        mean: ms(v.iter().sum::<Duration>()) / v.len() as f64,
    }
}

async fn explain(store: &Store, sql: &str) -> anyhow::Result<String> {
    let plan = scalar_strings(store, &format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")).await?;
    Ok(plan.join("\n"))
}

fn indexes_in(plan: &str) -> Vec<String> {
    let mut found: Vec<String> = plan
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "using" || w[0] == "on")
        .map(|w| w[1].to_owned())
        .filter(|n| n.starts_with("idx_") || n.ends_with("_pkey"))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let store = Store::connect(&a.database_url).await.context("cannot connect to the benchmark database")?;
    anyhow::ensure!(store.backend() == DbBackend::Postgres, "bench-db needs PostgreSQL");
    let applied = store
        .migrate(|s| println!("migration [{}/{}] {} ({} ms)", s.index, s.total, s.name, s.elapsed.as_millis()))
        .await?;
    println!("{applied} migrations applied");
    let seed_time = seed(&store, &a).await?;
    let version = scalar_strings(&store, "SHOW server_version").await?.pop().unwrap_or_default();

    let users: Vec<Uuid> = scalar_strings(&store, "SELECT id::text FROM bench_users ORDER BY random() LIMIT 5000")
        .await?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let meetings: Vec<Uuid> = scalar_strings(&store, "SELECT id::text FROM meetings ORDER BY random() LIMIT 5000")
        .await?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    anyhow::ensure!(!users.is_empty() && !meetings.is_empty(), "nothing seeded");
    let mut rng = rand::rng();

    // Warm up the pool and caches, then measure the three in turn.
    for _ in 0..200 {
        store.ping().await?;
        store.upcoming_meetings(*users.choose(&mut rng).unwrap_or(&users[0]), Utc::now(), 10).await?;
        store
            .join_facts(
                *meetings.choose(&mut rng).unwrap_or(&meetings[0]),
                *users.choose(&mut rng).unwrap_or(&users[0]),
            )
            .await?;
    }
    let (mut base, mut upcoming, mut join) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows_returned = 0usize;
    for i in 0..a.samples {
        let u = users[i % users.len()];
        let m = meetings[(i * 7) % meetings.len()];
        let t = Instant::now();
        store.ping().await?;
        base.push(t.elapsed());
        let t = Instant::now();
        rows_returned += store.upcoming_meetings(u, Utc::now(), 10).await?.len();
        upcoming.push(t.elapsed());
        let t = Instant::now();
        store.join_facts(m, u).await?;
        join.push(t.elapsed());
        if (i + 1) % 500 == 0 {
            println!("measured {}/{}", i + 1, a.samples);
        }
    }

    let upcoming_sql = upcoming_select(users[0], Utc::now(), 10).into_query().to_string(PostgresQueryBuilder);
    let join_sql = join_facts_select(meetings[0], users[0]).into_query().to_string(PostgresQueryBuilder);
    let plan_up = explain(&store, &upcoming_sql).await?;
    let plan_join = explain(&store, &join_sql).await?;
    println!("\n-- QUERY 1 (upcoming meetings)\n{upcoming_sql}\n{plan_up}\n");
    println!("-- QUERY 2 (join facts)\n{join_sql}\n{plan_join}\n");

    let total_rows: i64 = store
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT (SELECT count(*) FROM meetings) * 1000000000 + (SELECT count(*) FROM meeting_participants) AS n"
                .to_owned(),
        ))
        .await?
        .map(|r| r.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or(0);
    let (n_meetings, n_participants) = (total_rows / 1_000_000_000, total_rows % 1_000_000_000);
    let (b, q1, q2) = (stats(base), stats(upcoming), stats(join));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("## bench-db — PostgreSQL {version}, {cores} cores");
    println!(
        "seeded {} users, {n_meetings} meetings, {n_participants} participant rows in {:.1} s; {} samples each; upcoming returned {:.1} rows on average\n",
        a.users,
        seed_time.as_secs_f64(),
        a.samples,
        rows_returned as f64 / a.samples as f64
    );
    println!("| query | p50 ms | p99 ms | max ms | mean ms | p50 / SELECT 1 | p99 / SELECT 1 | indexes used |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("| SELECT 1 (baseline) | {:.3} | {:.3} | {:.3} | {:.3} | 1.0 | 1.0 | — |", b.p50, b.p99, b.max, b.mean);
    for (name, s, plan) in [("QUERY 1 upcoming meetings", &q1, &plan_up), ("QUERY 2 join facts", &q2, &plan_join)] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {} |",
            s.p50,
            s.p99,
            s.max,
            s.mean,
            s.p50 / b.p50,
            s.p99 / b.p99,
            indexes_in(plan).join(", ")
        );
    }
    let goal = if q1.p99 < 10.0 && q2.p99 < 10.0 { "met" } else { "NOT met" };
    println!("\ngoal p99 < 10 ms: {goal}");
    Ok(())
}
