//! Wiring of one node: configuration → store (migrated) → HTTP server, with graceful shutdown.
//! Each lifecycle event is one readable log line.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use parley_store::Store;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};

use std::sync::Arc;

use parley_actors::{LiveConfig, LiveServices, MeetingSupervisor};
use parley_core::throttle::JoinGuard;
use parley_presence::Presence;

use crate::api::{self, AppState, Live};
use crate::auth::TokenKeys;
use crate::config::{LogFormat, Settings, redact_url};
use crate::telemetry::calls::{CallTimings, NODE_CALLS};
use crate::telemetry::traces::{TracedFilter, Traces};

/// Logs to stderr; `PARLEY_LOG` (or `RUST_LOG`) sets the filter, default `info`.
/// The log filter of a node: our lifecycle lines, the libraries' warnings (the WebRTC stack
/// logs every signalling step at info).
pub const NODE_LOG: &str = "info,sqlx=warn,sea_orm_migration=warn,tower_http=warn,webrtc=warn,rtc=warn";

/// Logs to stderr with `PARLEY_LOG` or `RUST_LOG`, else `default`; with a node's telemetry
/// settings, in its log format and with its spans exported over OTLP when an endpoint is set
/// (the returned pipeline is shut down at exit, outside the async runtime).
pub fn init_logging(
    default: &str,
    telemetry: Option<(&crate::config::TelemetrySettings, &str)>,
) -> anyhow::Result<Option<Traces>> {
    let filter = std::env::var("PARLEY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let json = telemetry.is_some_and(|(t, _)| t.log_format == LogFormat::Json);
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_target(false));
    let (traces, otel) = match telemetry.and_then(|(t, node)| Some((t.otlp_traces_url.as_deref()?, node))) {
        Some((url, node)) => {
            let (traces, tracer) =
                Traces::start(url, node).with_context(|| format!("cannot export traces to {url}"))?;
            // Spans carry their names, fields and timing; not each one's source location,
            // thread or busy/idle split, and entering one does not switch the OpenTelemetry
            // context (Parley reads a span's context only to put it in an envelope): each of
            // those costs every span, or every poll of an instrumented future.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false);
            (Some(traces), Some(layer))
        }
        None => (None, None),
    };
    // The log filter says what is logged. Traces keep the default's spans whatever it says (a
    // node logging only warnings still traces its requests), and the call metrics see their
    // spans whatever either says.
    let env = || EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let traced = EnvFilter::try_new(default).unwrap_or_else(|_| EnvFilter::new("info"));
    let log_crate = log_crate_level(&env(), &traced);
    let registry = tracing_subscriber::registry()
        .with(crate::log_filter::QuietStack)
        .with(text.map(|l| l.with_filter(env())))
        .with(json.map(|l| l.with_filter(env())))
        .with(otel.map(|l| l.with_filter(TracedFilter::new(traced))))
        .with(CallTimings::new(&NODE_CALLS).with_filter(CallTimings::interest()));
    if tracing::subscriber::set_global_default(registry).is_ok() {
        let _ = tracing_log::LogTracer::builder().with_max_level(log_crate).init();
    }
    Ok(traces)
}

/// The most verbose level the `log` crate's records (the WebRTC stack's, per packet) are
/// produced at: what the log or the traces keep, not the subscriber's overall hint. The call
/// metrics' filter wants `DEBUG` events of one target, which would otherwise have every
/// `log::debug!` in the stack build a record, only for every filter to drop it.
fn log_crate_level(log: &EnvFilter, traced: &EnvFilter) -> tracing_log::log::LevelFilter {
    use tracing_log::AsLog as _;
    let most = |f: &EnvFilter| f.max_level_hint().unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    most(log).max(most(traced)).as_log()
}

/// Connects to the database, creating the SQLite data directory when needed.
async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    if settings.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create data directory {}", settings.data_dir.display()))?;
    }
    let store = Store::connect(&settings.database_url)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact_url(&settings.database_url)))?;
    let routes = settings
        .notify
        .webhooks
        .iter()
        .map(|w| parley_store::notifications::WebhookRoute { url: w.url.clone(), events: w.events.clone() })
        .collect();
    Ok(store.with_webhooks(routes))
}

/// Applies pending migrations, printing one line per step.
async fn migrate(store: &Store) -> anyhow::Result<usize> {
    let pending = store.pending_migrations().await?;
    if pending.is_empty() {
        tracing::info!("database schema is up to date");
        return Ok(0);
    }
    tracing::info!(pending = pending.len(), "applying database migrations");
    let started = Instant::now();
    let n = store
        .migrate(|step| {
            tracing::info!(
                "migration [{}/{}] {} applied in {} ms",
                step.index,
                step.total,
                step.name,
                step.elapsed.as_millis()
            );
        })
        .await
        .context("migration failed")?;
    tracing::info!("{n} migrations applied in {} ms", started.elapsed().as_millis());
    Ok(n)
}

/// `parley migrate`.
pub async fn migrate_only(settings: &Settings) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    tracing::info!(database = %redact_url(&settings.database_url), "connected");
    migrate(&store).await?;
    Ok(())
}

/// `parley node`: migrate, serve, shut down gracefully on SIGINT/SIGTERM.
pub async fn run(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    tracing::info!(
        cluster = %settings.cluster_name,
        node = %settings.node_name,
        config = %config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none, defaults)".into()),
        database = %redact_url(&settings.database_url),
        secret = settings.secret_source,
        "node starting"
    );
    if let Some(m) = &settings.member {
        tracing::info!(
            node = %m.name,
            host = %m.host,
            cluster_port = ?m.cluster_port,
            media_port = ?m.media_port,
            max_meetings = ?m.max_meetings,
            max_participants = ?m.max_participants,
            "cluster member entry"
        );
    }
    let mut settings = settings;
    let media = &mut settings.media;
    if let Some(port) = media.shared_port {
        let mut options = parley_media::socket::SocketOptions::new(media.bind_ip, port, media.public_ip);
        if let Some(threads) = media.socket_threads {
            options.threads = threads;
        }
        if let Some(spread_at) = media.spread_at {
            options.spread_at = spread_at;
        }
        let socket = parley_media::socket::MediaSocket::bind_with(options)
            .await
            .with_context(|| format!("cannot bind the media port {}:{port}", media.bind_ip))?;
        media.shared_socket = Some(socket);
    }
    let ports = match (&media.shared_socket, media.port_range) {
        (Some(socket), _) => {
            format!("{} (one UDP port for every peer, {} driver threads)", socket.local_addr().port(), socket.threads())
        }
        (None, Some((a, b))) => format!("{a}-{b} (one per peer)"),
        (None, None) => "ephemeral (one per peer)".to_owned(),
    };
    tracing::info!(
        bind_ip = %media.bind_ip,
        public_ip = ?media.public_ip,
        %ports,
        ice_servers = media.ice_servers.len(),
        ice_lite = media.ice_lite,
        "media router network"
    );
    let settings = settings;
    let store = connect(&settings).await?;
    let applied = migrate(&store).await?;
    let listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
    let addr = listener.local_addr()?;
    // A node bound to port 0 (tests) advertises the port it really got.
    let public_url =
        if settings.public_url.ends_with(":0") { format!("http://{addr}") } else { settings.public_url.clone() };
    let mut recording = crate::recording::start(&settings, &store).await?;
    let objects = recording.as_ref().map(|r| r.objects.clone());
    let metrics = Arc::new(crate::telemetry::NodeMetrics::new(&settings.node_name)?);
    let live = start_live(&settings, store.clone(), objects.clone(), metrics.live.clone()).await?;
    metrics.observe(&live.services);
    if let Some(r) = recording.as_mut() {
        r.start_workers(Arc::new(crate::recording::TellModerators(live.services.clone())));
    }
    crate::telemetry::vitals::spawn(live.services.clone());
    crate::notify::start(&settings, &store, &public_url)?;
    let mut state =
        AppState::new(store, TokenKeys::new(&settings.secret), &public_url, &settings.node_name, live, metrics.clone());
    state.fault_injection = settings.fault_injection;
    state.objects = objects;
    state.scrape_token = settings.telemetry.scrape_token.as_deref().map(Arc::from);
    if settings.fault_injection {
        tracing::warn!("fault injection enabled: POST /api/admin/meetings/{{id}}/crash is live");
    }
    let app = api::router(state);
    tracing::info!(node = %settings.node_name, %addr, migrations_applied = applied, "node ready");
    println!("parley node {} ready: http://{addr}", settings.node_name);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("HTTP server failed")?;
    metrics.shutdown();
    tracing::info!(node = %settings.node_name, "node stopped");
    Ok(())
}

/// Presence (Redis if configured, else in-process) and the meeting supervisor.
async fn start_live(
    settings: &Settings,
    store: Store,
    objects: Option<Arc<dyn parley_recording::object_store::ObjectStore>>,
    metrics: Arc<parley_actors::metrics::LiveMetrics>,
) -> anyhow::Result<Live> {
    let presence = match &settings.redis_url {
        Some(url) => Presence::redis(url, settings.heartbeat_ttl)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", redact_url(url)))?,
        None => Presence::local(settings.heartbeat_ttl),
    };
    tracing::info!(presence = presence.kind(), ttl_ms = settings.heartbeat_ttl.as_millis() as u64, "presence ready");
    let services = Arc::new(LiveServices {
        store: store.clone(),
        presence,
        node: settings.node_name.clone(),
        config: LiveConfig {
            sweep_interval: settings.sweep_interval,
            empty_grace: settings.empty_grace,
            rate_burst: settings.rate_burst,
            rate_per_sec: settings.rate_per_sec,
        },
        join_guard: Arc::new(JoinGuard::default()),
        membership: Arc::new(crate::cluster::membership(settings)),
        meetings: Default::default(),
        resume: Arc::new(crate::auth::ResumeKeys::new(&settings.secret)),
        media: Arc::new(settings.media.clone()),
        recording: objects.map(|objects| parley_actors::recorder::RecordingServices {
            objects,
            store: store.clone(),
            node: settings.node_name.clone(),
            layout: settings.recording.layout,
        }),
        metrics,
        ops: Arc::new(parley_actors::ops::Journal::new(&settings.node_name)),
    });
    let (supervisor, _) =
        ractor::Actor::spawn(Some(format!("meetings@{}", settings.node_name)), MeetingSupervisor, services.clone())
            .await
            .context("cannot start the meeting supervisor")?;
    crate::cluster::start(settings, services.clone(), supervisor.clone()).await?;
    Ok(Live { supervisor, services })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_log::log::LevelFilter;

    #[test]
    fn the_log_crate_produces_records_only_as_verbose_as_the_log_or_the_traces_keep() {
        let f = |s: &str| EnvFilter::new(s);
        assert_eq!(log_crate_level(&f(NODE_LOG), &f(NODE_LOG)), LevelFilter::Info);
        assert_eq!(log_crate_level(&f("warn"), &f(NODE_LOG)), LevelFilter::Info, "traces keep info");
        assert_eq!(log_crate_level(&f("info,webrtc=debug"), &f(NODE_LOG)), LevelFilter::Debug);
        assert_eq!(log_crate_level(&f("error"), &f("error")), LevelFilter::Error);
    }
}
