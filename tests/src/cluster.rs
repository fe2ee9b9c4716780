//! Several auth replicas and gateways on one private Redis, and the
//! warm-up that makes "every event" well defined.

use std::time::Duration;

use futures::future::join_all;

use crate::auth::{AuthOptions, TestAuth};
use crate::gateway::{GatewayOptions, TestGateway};
use crate::redis::TestRedis;
use crate::ws::{Frame, WsClient};

/// Payload prefix of warm-up events, which tests ignore when counting.
pub const WARMUP: &str = "warmup-";

/// One Redis, `auths` auth replicas, `gateways` gateways each load-balancing
/// over every auth replica.
pub struct Cluster {
    pub redis: TestRedis,
    pub auths: Vec<TestAuth>,
    pub gateways: Vec<TestGateway>,
}

impl Cluster {
    pub async fn spawn(auths: usize, gateways: usize, options: GatewayOptions) -> Self {
        Self::spawn_with(auths, gateways, AuthOptions::default(), options).await
    }

    /// One Redis, one auth, one gateway.
    pub async fn single(auth: AuthOptions, gateway: GatewayOptions) -> Self {
        Self::spawn_with(1, 1, auth, gateway).await
    }

    pub async fn spawn_with(
        auths: usize,
        gateways: usize,
        auth_options: AuthOptions,
        options: GatewayOptions,
    ) -> Self {
        let redis = TestRedis::spawn();
        let auths =
            join_all((0..auths).map(|_| TestAuth::spawn(Some(&redis), auth_options.clone()))).await;
        let refs: Vec<&TestAuth> = auths.iter().collect();
        let gateways =
            join_all((0..gateways).map(|_| TestGateway::spawn(&refs, options.clone()))).await;
        Self {
            redis,
            auths,
            gateways,
        }
    }

    /// The first auth replica.
    pub fn auth(&self) -> &TestAuth {
        &self.auths[0]
    }

    /// The first gateway.
    pub fn gateway(&self) -> &TestGateway {
        &self.gateways[0]
    }

    /// Waits until every gateway's `/readyz` is 200.
    pub async fn wait_ready(&self) {
        join_all(
            self.gateways
                .iter()
                .map(|g| g.wait_ready(Duration::from_secs(20))),
        )
        .await;
    }
}

/// Publishes warm-up broadcasts through `publisher` until every client has
/// received one: from then on each client's gateway is subscribed, so every
/// later event must reach it. Panics after 30 s.
pub async fn warm_up(publisher: &TestAuth, clients: &mut [&mut WsClient]) {
    let mut warm = vec![false; clients.len()];
    for round in 0..60 {
        // Publishing may fail while the stack is still coming up (e.g. Redis restarting).
        let _ = publisher
            .try_publish(&format!("{WARMUP}{round}"), None)
            .await;
        let waits = clients
            .iter_mut()
            .zip(warm.iter_mut())
            .filter(|(_, warm)| !**warm)
            .map(|(client, warm)| async move {
                while let Some(Frame::Json(frame)) =
                    client.next_frame(Duration::from_millis(500)).await
                {
                    if frame["type"] == "broadcast"
                        && frame["data"]
                            .as_str()
                            .is_some_and(|d| d.starts_with(WARMUP))
                    {
                        *warm = true;
                        return;
                    }
                }
            });
        join_all(waits).await;
        if warm.iter().all(|w| *w) {
            return;
        }
    }
    panic!(
        "warm-up broadcasts never reached {} of {} clients",
        warm.iter().filter(|w| !**w).count(),
        warm.len()
    );
}

/// Reads frames until `n` events (broadcast or message) whose data starts
/// with `prefix` arrived, skipping warm-up broadcasts; any other frame, a
/// close or a timeout fails the test.
pub async fn collect_events(
    client: &mut WsClient,
    prefix: &str,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next_frame(left).await {
            Some(Frame::Json(frame)) => {
                let data = frame["data"].as_str().unwrap_or_default();
                if data.starts_with(prefix) {
                    events.push(frame);
                } else if !data.starts_with(WARMUP) {
                    panic!(
                        "{:?}: unexpected frame {frame} while collecting {prefix}*",
                        client.user()
                    );
                }
            }
            other => panic!(
                "{:?}: got {other:?} after {} of {n} {prefix}* events within {within:?}",
                client.user(),
                events.len()
            ),
        }
    }
    events
}
