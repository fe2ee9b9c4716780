//! `dns:///` discovery against real auth processes on 127.0.0.1, 127.0.0.2
//! and 127.0.0.3 (one port, as replicas behind one name have), through a
//! resolver whose answer the test changes: every replica the name gives gets
//! calls, a replica that appears gets its share, one that leaves gets no new
//! call while the Subscribe stream it holds carries on, and a failed lookup
//! keeps the last good set. Calls are counted by each auth's `/metrics`.
//! Needs the auth binary: `cargo build --bins` first (`make test` does).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretString;
use wsauth_gateway::auth_client::{AuthClient, ClientSettings, EventStream, Incoming, Resolve};
use wsauth_gateway::metrics::Metrics;
use wsauth_tests::metrics;
use wsauth_tests::{AuthOptions, INTERNAL_KEY, Jwt, TestAuth, TestRedis, wait_until, within};

const NAME: &str = "auth.test";
const DEADLINE: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_millis(200);

/// A name server the test edits: the name's addresses, or a failure.
#[derive(Default)]
struct Names {
    answer: Mutex<Option<Vec<IpAddr>>>,
}

impl Names {
    fn set(&self, ips: &[IpAddr]) {
        *self.answer.lock().expect("not poisoned") = Some(ips.to_vec());
    }

    fn fail(&self) {
        *self.answer.lock().expect("not poisoned") = None;
    }
}

impl Resolve for Names {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let answer = match (host, self.answer.lock().expect("not poisoned").clone()) {
            (NAME, Some(ips)) => Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
            _ => Err(io::Error::other("SERVFAIL")),
        };
        Box::pin(async move { answer })
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Calls of `method` that `auth` has completed, by its `/metrics`.
async fn handled(auth: &TestAuth, method: &str) -> u64 {
    let text = auth.metrics().await;
    let label = format!("grpc_method=\"{method}\"");
    text.lines()
        .filter(|l| l.starts_with("wsauth_auth_grpc_server_handled_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// VerifyJwt calls each replica has answered.
async fn verified(auths: &[&TestAuth]) -> Vec<u64> {
    let mut counts = Vec::new();
    for auth in auths {
        counts.push(handled(auth, "VerifyJwt").await);
    }
    counts
}

/// Waits (briefly: auth counts a call as it finishes it) until the replicas
/// have answered `expected` VerifyJwt calls, and checks they have.
async fn counts_become(auths: &[&TestAuth], expected: &[u64], why: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counts = verified(auths).await;
        if counts == expected || tokio::time::Instant::now() > deadline {
            assert_eq!(counts, expected, "{why}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The sum of `name`'s samples in `auth`'s `/metrics`.
async fn gauge(auth: &TestAuth, name: &str) -> f64 {
    metrics::sample_sum(&auth.metrics().await, name).unwrap_or_else(|| panic!("no {name}"))
}

/// `n` VerifyJwt calls through `client`, which must all succeed.
async fn verify_many(client: &AuthClient, n: usize) {
    let jwt = SecretString::from(Jwt::for_user("dora").sign());
    for _ in 0..n {
        let verified = client
            .verify_jwt(jwt.clone())
            .await
            .expect("VerifyJwt through the name");
        assert_eq!(verified.user_id, "dora");
    }
}

/// Waits for a broadcast on `stream`, publishing through `publisher` until one comes.
async fn receives_an_event(stream: &mut EventStream, publisher: &TestAuth) {
    within(DEADLINE, "an event reaches the Subscribe stream", async {
        loop {
            publisher.publish("still flowing", None).await;
            if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await
            {
                match item {
                    Some(Ok(Incoming::Event(_))) => return,
                    other => panic!("the Subscribe stream ended or failed: {other:?}"),
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_name_balances_over_its_replicas_and_follows_them_as_they_change() {
    let redis = TestRedis::spawn();
    let first = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let port = first.addr().port();
    let mut auths = vec![first];
    for last in [2, 3] {
        let listen = SocketAddr::new(loopback(last), port);
        auths.push(
            TestAuth::spawn(
                Some(&redis),
                AuthOptions::default().env("AUTH_LISTEN", listen),
            )
            .await,
        );
    }
    let all: Vec<&TestAuth> = auths.iter().collect();
    let names = Arc::new(Names::default());
    names.set(&[loopback(1), loopback(2)]);
    let mut settings = ClientSettings::new(
        vec![format!("dns:///{NAME}:{port}")],
        Duration::from_secs(2),
    );
    settings.api_key = Some(INTERNAL_KEY.into());
    settings.resolver = names.clone();
    settings.resolve_interval = INTERVAL;
    let client = AuthClient::from_settings(settings, Metrics::default()).expect("valid settings");

    // Both addresses of the name share the calls; the third is not in it.
    verify_many(&client, 20).await;
    counts_become(
        &all,
        &[10, 10, 0],
        "round robin over the name's two addresses",
    )
    .await;

    // A long call in flight: the Subscribe stream, on one of the two.
    let mut stream = client
        .subscribe("discovery-test", None)
        .await
        .expect("Subscribe");
    let holder = within(DEADLINE, "one replica holds the Subscribe stream", async {
        loop {
            for (i, auth) in all.iter().enumerate() {
                if gauge(auth, "wsauth_auth_subscribe_streams").await == 1.0 {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    let other = 1 - holder;
    receives_an_event(&mut stream, all[2]).await;

    // The holder leaves the name and 127.0.0.3 joins it.
    names.set(&[loopback(other as u8 + 1), loopback(3)]);
    wait_until(DEADLINE, "the new replica gets calls", || async {
        verify_many(&client, 1).await;
        handled(all[2], "VerifyJwt").await > 0
    })
    .await;
    let mut expected = verified(&all).await;
    verify_many(&client, 20).await;
    expected[other] += 10;
    expected[2] += 10;
    counts_become(&all, &expected, "the removed replica gets no new call").await;
    // ...and the call it had in flight carries on.
    receives_an_event(&mut stream, all[2]).await;
    assert_eq!(
        gauge(all[holder], "wsauth_auth_subscribe_streams").await,
        1.0
    );

    // A failed lookup keeps the last good set.
    names.fail();
    tokio::time::sleep(INTERVAL * 3).await;
    let mut expected = verified(&all).await;
    verify_many(&client, 4).await;
    expected[other] += 2;
    expected[2] += 2;
    counts_become(&all, &expected, "still balanced over the last good set").await;
}
