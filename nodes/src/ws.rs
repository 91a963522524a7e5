//! `GET /ws`: the WebSocket endpoint. Authenticates the upgrade (`?token=` or
//! `Authorization: Bearer`) or, without either, the first frame (`{"type": "auth", "token"}`),
//! then pumps frames between the socket and the connection's
//! `ParticipantActor`: text frames are JSON, binary frames MessagePack. Frames up to
//! [`MAX_MESSAGE_BYTES`] reach the actor (which answers over-limit ones with `frame_too_large`);
//! larger ones, invalid UTF-8 text or protocol violations close the socket with a reason.
//!
//! A message over the limit is still read to its end (up to [`READ_LIMIT_BYTES`]) before the
//! close: a socket closed with unread bytes in its receive buffer sends a TCP reset, and the
//! client, usually still writing, would see "connection reset" instead of the 1009 and its reason.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use parley_actors::{Outbound, ParticipantActor, ParticipantArgs, ParticipantMsg};
use parley_core::protocol::{Encoding, ErrorCode, Reply, ReplyData, Request, decode_request, encode};
use ractor::Actor;
use serde::Deserialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::api::extract::ApiQuery;
use crate::api::{ApiError, AppState};

/// Largest WebSocket message read at all (bigger ones close the connection, code 1009).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest message read to its end before the close (beyond it the socket is dropped mid-message).
pub const READ_LIMIT_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// Initial read and write buffer of each connection.
pub const IO_BUFFER_BYTES: usize = 4 * 1024;
/// Frames queued for a client before it counts as too slow and is closed.
pub const OUTBOUND_QUEUE: usize = 4096;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

/// How long a connection opened without a token may take to send its `auth` frame.
pub const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Close code for a connection that failed to authenticate (4000–4999 are the application's).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// A token's user: id and display name, or why not.
async fn authenticate(app: &AppState, token: &str) -> Result<(Uuid, String), ApiError> {
    let claims = app.tokens.verify(token).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let user_id: Uuid =
        claims.sub.parse().map_err(|_| ApiError::unauthorized("this token does not identify a user"))?;
    match app.store.user(user_id).await? {
        Some(u) => Ok((user_id, u.display_name)),
        None => Err(ApiError::forbidden("the token's user does not exist")),
    }
}

pub async fn upgrade(
    State(app): State<AppState>,
    ApiQuery(p): ApiQuery<WsParams>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET (no upgrade headers) gets the documented JSON error, not axum's plain text.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(rejection.status(), "upgrade_required", rejection.body_text()).into_response();
        }
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let identity = match p.token.or(bearer) {
        Some(token) => match authenticate(&app, &token).await {
            Ok(id) => Some(id),
            Err(e) => return e.into_response(),
        },
        // No token on the upgrade: the first frame must be `auth` (browsers cannot set headers
        // on a WebSocket, and query strings end up in access logs).
        None => None,
    };
    ws.max_message_size(READ_LIMIT_BYTES)
        .max_frame_size(READ_LIMIT_BYTES)
        // Small per-connection buffers (tungstenite's default is 128 KiB each way): they grow
        // for a large message and most traffic is a few hundred bytes.
        .read_buffer_size(IO_BUFFER_BYTES)
        .write_buffer_size(IO_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            match identity {
                Some((user_id, name)) => connection(socket, app, user_id, name).await,
                None => authenticate_first_frame(socket, app).await,
            }
        })
}

/// Reads the `auth` frame of a connection opened without a token, then serves it.
async fn authenticate_first_frame(mut socket: WebSocket, app: AppState) {
    let first = tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await;
    let (data, encoding) = match first {
        Ok(Some(Ok(Message::Text(t)))) if t.len() <= MAX_MESSAGE_BYTES => (t.as_bytes().to_vec(), Encoding::Json),
        Ok(Some(Ok(Message::Binary(b)))) if b.len() <= MAX_MESSAGE_BYTES => (b.to_vec(), Encoding::MessagePack),
        Ok(Some(Ok(Message::Text(t)))) => return close_too_big(socket, t.len()).await,
        Ok(Some(Ok(Message::Binary(b)))) => return close_too_big(socket, b.len()).await,
        Err(_) => return refuse(socket, None, Encoding::Json, "no auth frame within 10 s").await,
        _ => return,
    };
    let (id, token) = match decode_request(&data, encoding) {
        Ok((id, Request::Auth { token })) => (id, token),
        Ok((id, _)) => {
            return refuse(socket, Some(id), encoding, "authenticate first: send {\"type\": \"auth\", \"token\": …}")
                .await;
        }
        Err(e) => return refuse(socket, e.id, encoding, &e.message).await,
    };
    match authenticate(&app, &token).await {
        Ok((user_id, name)) => {
            let ok = encode(&Reply::ok(id, ReplyData::Done), encoding);
            let frame = match encoding {
                Encoding::Json => Message::Text(String::from_utf8_lossy(&ok).into_owned().into()),
                Encoding::MessagePack => Message::Binary(ok.into()),
            };
            if socket.send(frame).await.is_ok() {
                connection(socket, app, user_id, name).await;
            }
        }
        Err(e) => refuse(socket, Some(id), encoding, &e.message).await,
    }
}

/// Answers `unauthorized` and closes with [`CLOSE_UNAUTHORIZED`].
async fn refuse(mut socket: WebSocket, id: Option<u64>, encoding: Encoding, why: &str) {
    let reply = encode(&Reply::err(id, ErrorCode::Unauthorized, why), encoding);
    let frame = match encoding {
        Encoding::Json => Message::Text(String::from_utf8_lossy(&reply).into_owned().into()),
        Encoding::MessagePack => Message::Binary(reply.into()),
    };
    let _ = socket.send(frame).await;
    let reason: String = why.chars().take(100).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code: CLOSE_UNAUTHORIZED, reason: reason.into() }))).await;
}

/// The close of a message over [`MAX_MESSAGE_BYTES`]: code 1009 and the sizes.
fn too_big(len: usize) -> (u16, String) {
    (1009, format!("message too big: {len} bytes, the limit is {MAX_MESSAGE_BYTES}"))
}

async fn close_too_big(mut socket: WebSocket, len: usize) {
    let (code, reason) = too_big(len);
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

async fn connection(socket: WebSocket, app: AppState, user_id: Uuid, display_name: String) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let args = ParticipantArgs {
        user_id,
        display_name,
        outbound: tx.clone(),
        supervisor: app.live.supervisor.clone(),
        services: Arc::clone(&app.live.services),
    };
    let (actor, mut actor_done) = match Actor::spawn(None, ParticipantActor, args).await {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::error!(error = %e, "participant actor did not start");
            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1011, reason: "internal error".into() }))).await;
            return;
        }
    };
    let mut writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let msg = match out {
                Outbound::Frame { data, encoding: Encoding::Json } => match String::from_utf8(data) {
                    Ok(text) => Message::Text(text.into()),
                    Err(_) => continue,
                },
                Outbound::Frame { data, encoding: Encoding::MessagePack } => Message::Binary(data.into()),
                Outbound::Close { code, reason } => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let metrics = Arc::clone(&app.live.services.metrics);
    metrics.websocket(1);
    let mut writer_done = false;
    // The client vanished without a closing handshake (the stream ended, or was reset).
    let mut lost = false;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) if text.len() > MAX_MESSAGE_BYTES => {
                    let (code, reason) = too_big(text.len());
                    let _ = tx.try_send(Outbound::Close { code, reason });
                    break;
                }
                Some(Ok(Message::Binary(bytes))) if bytes.len() > MAX_MESSAGE_BYTES => {
                    let (code, reason) = too_big(bytes.len());
                    let _ = tx.try_send(Outbound::Close { code, reason });
                    break;
                }
                Some(Ok(Message::Text(text))) => {
                    let _ = actor.cast(ParticipantMsg::Frame { data: text.as_bytes().to_vec(), encoding: Encoding::Json });
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = actor.cast(ParticipantMsg::Frame { data: bytes.to_vec(), encoding: Encoding::MessagePack });
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => break,
                None => {
                    lost = true;
                    break;
                }
                Some(Err(e)) if is_lost(&e) => {
                    lost = true;
                    break;
                }
                Some(Err(e)) => {
                    // Oversized message, invalid UTF-8, protocol violation: say why, then close.
                    let text = e.to_string();
                    let code = if text.contains("too long") || text.contains("too big") { 1009 } else { 1002 };
                    let _ = tx.try_send(Outbound::Close { code, reason: text.chars().take(120).collect() });
                    break;
                }
            },
            // The writer ended first (the client stopped reading, or a close was written):
            // nothing more can reach the client. Its handle is spent; it must not be awaited again.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            // The connection's actor died (a bug): tell the client to reconnect rather than
            // leave it talking to nobody. The meeting itself is not linked to it and goes on.
            _ = &mut actor_done => {
                tracing::error!(%user_id, "participant actor stopped; closing its socket");
                let _ = tx.try_send(Outbound::Close { code: 1011, reason: "connection handler failed; please reconnect".into() });
                break;
            }
        }
    }
    let _ = actor.cast(ParticipantMsg::SocketClosed { lost });
    metrics.websocket(-1);
    drop(tx);
    if !writer_done {
        // Let the writer flush what is queued (a close frame with its reason, typically).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    }
}

/// Whether a read error means the connection went away (reset, ended without a closing
/// handshake) rather than that the client broke the protocol.
fn is_lost(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("without closing handshake")
        || text.contains("reset")
        || text.contains("broken pipe")
        || text.contains("os error")
}
