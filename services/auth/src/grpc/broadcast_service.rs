//! `wsauth.v1.BroadcastService`.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};
use wsauth_shared::event_id::LIVE_FROM_METADATA;
use wsauth_shared::proto::broadcast_service_server::BroadcastService;
use wsauth_shared::proto::{
    self, EventKind as ProtoKind, HistoryRequest, HistoryResponse, PublishRequest, PublishResponse,
    SubscribeRequest,
};

use super::{checks, timestamp};
use crate::caller::{Caller, Role};
use crate::error::AuthError;
use crate::event::{Event, EventKind, NewEvent};
use crate::events::{Events, HISTORY_SCAN_MAX, Start, Subscription};

/// Events buffered per subscriber between its producer task and the transport.
const SUBSCRIBER_QUEUE: usize = 256;

/// The BroadcastService handlers.
#[derive(Clone)]
pub struct BroadcastGrpc {
    events: Events,
    max_event_bytes: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl BroadcastGrpc {
    /// Serves `events`; subscriptions run on `tasks` and end when `shutdown` is cancelled.
    pub fn new(
        events: Events,
        max_event_bytes: usize,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            events,
            max_event_bytes,
            shutdown,
            tasks,
        }
    }
}

fn to_proto(event: &Event) -> proto::Event {
    let kind = match event.kind {
        EventKind::Broadcast => ProtoKind::Broadcast,
        EventKind::Direct => ProtoKind::Direct,
        EventKind::Disconnect => ProtoKind::Disconnect,
        EventKind::RevokeJwt => ProtoKind::RevokeJwt,
    };
    proto::Event {
        id: event.id.to_string(),
        kind: kind.into(),
        data: event.data.clone(),
        user_id: event.user_id.clone().unwrap_or_default(),
        published_at: Some(timestamp(event.id.seq.ms)),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl BroadcastService for BroadcastGrpc {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let request = request.into_inner();
        let kind = checks::publish(&request, self.max_event_bytes)?;
        let event = self
            .events
            .publish(NewEvent {
                kind,
                user_id: request.user_id,
                data: request.data,
            })
            .await?;
        Ok(Response::new(PublishResponse {
            id: event.id.to_string(),
        }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        Caller::of(&request).require(Role::Internal)?;
        let request = request.into_inner();
        let (start, limit) = checks::history(&request)?;
        let scan_max = request.resumable.then_some(HISTORY_SCAN_MAX);
        let page = self
            .events
            .history(&start, request.user_id.as_deref(), limit, scan_max)
            .await?;
        // Only a caller that asked for a position is given one: to any other,
        // an empty reply must keep meaning the end.
        let next_after_id = match page.next_after {
            Some(next) if request.resumable => next.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(HistoryResponse {
            events: page.events.iter().map(to_proto).collect(),
            next_after_id,
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Caller::of(&request).require(Role::Internal)?;
        let request = request.into_inner();
        let start = checks::subscribe(&request)?;
        let gateway_id = request.gateway_id;
        let after_id = match &start {
            None => None,
            Some(Start::After(after)) => Some(after.to_string()),
            Some(Start::Oldest) => Some("oldest".to_owned()),
        };
        let subscription = self.events.subscribe(start).await?;
        // Event ids are ASCII letters, digits, ':' and '-': valid metadata.
        let live_from: Option<MetadataValue<Ascii>> = subscription
            .live_from()
            .map(|last| {
                last.to_string()
                    .parse()
                    .map_err(|_| AuthError::Internal("an event id is not valid metadata"))
            })
            .transpose()?;
        tracing::info!(%gateway_id, ?after_id, ?live_from, "subscriber joined");
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.tasks
            .spawn(forward(subscription, tx, self.shutdown.clone(), gateway_id));
        let mut response: Response<Self::SubscribeStream> =
            Response::new(Box::pin(ReceiverStream::new(rx)));
        if let Some(live_from) = live_from {
            response
                .metadata_mut()
                .insert(LIVE_FROM_METADATA, live_from);
        }
        Ok(response)
    }
}

/// Moves events from a subscription to the client until it leaves, the
/// subscription fails (sent as the stream's final status), or shutdown.
async fn forward(
    mut subscription: Subscription,
    tx: mpsc::Sender<Result<proto::Event, Status>>,
    shutdown: CancellationToken,
    gateway_id: String,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            next = subscription.next() => next,
        };
        let item = match next {
            Ok(Some(event)) => Ok(to_proto(&event)),
            Ok(None) => break,
            Err(error) => {
                tracing::info!(%gateway_id, %error, "subscription ended");
                Err(Status::from(error))
            }
        };
        let failed = item.is_err();
        // A full queue waits here; meanwhile the fan-out keeps a bounded
        // backlog and reports `Lagged` if this subscriber falls too far behind.
        let sent = tokio::select! {
            () = shutdown.cancelled() => break,
            sent = tx.send(item) => sent,
        };
        if sent.is_err() || failed {
            break;
        }
    }
    tracing::info!(%gateway_id, "subscriber left");
}
