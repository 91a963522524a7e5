//! A database that goes away: the node answers 503 (never 500, never a crash) and recovers by
//! itself when the database comes back.

use std::time::Duration;

use parley_integration::{Backend, NodeOptions, TestNode, ThrowawayPostgres, eventually};
use reqwest::{Method, StatusCode};

use crate::{assert_error, create_meeting, in_hours, meeting_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_postgres_going_away_and_coming_back() {
    let pg = ThrowawayPostgres::start_new();
    let mut opts = NodeOptions::new(Backend::Postgres);
    opts.database_url = Some(pg.url("postgres"));
    let mut node = TestNode::start_with(opts).await;
    let (_, host) = node.user("host@example.com", "Host").await;
    create_meeting(&node, &host, meeting_body("Before", in_hours(2))).await;

    pg.stop();
    let r = node.call(Method::GET, "/api/meetings/upcoming", Some(&host), None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let r = node.call(Method::POST, "/api/meetings", Some(&host), Some(meeting_body("During", in_hours(2)))).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let r = node.call(Method::GET, "/healthz", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(node.is_running(), "the node is still up");

    pg.start();
    let back = eventually(Duration::from_secs(20), || async {
        node.call(Method::GET, "/healthz", None, None).await.0 == StatusCode::OK
    })
    .await;
    assert!(back, "the node reconnects by itself:\n{}", node.log());
    let (status, up) = node.call(Method::GET, "/api/meetings/upcoming", Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up["meetings"][0]["title"], "Before", "nothing was lost");
}
