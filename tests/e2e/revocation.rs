//! RevokeUser and RevokeJwt, across replicas.

use futures::future::join_all;
use wsauth_shared::proto::{RevokeJwtRequest, VerifyJwtRequest};
use wsauth_tests::{
    ApiKey, AuthOptions, Cluster, Frame, GatewayOptions, Jwt, STEP, WsClient, warm_up,
};

#[tokio::test]
async fn revoke_user_closes_that_user_everywhere_with_4401_and_their_old_jwt_stops_working() {
    let cluster = Cluster::spawn(2, 3, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let alice_jwt = Jwt::for_user("alice").sign();
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for gateway in &cluster.gateways {
        alices.push(WsClient::authenticated_with(gateway, &alice_jwt, "alice", None).await);
        alices.push(WsClient::authenticated(gateway, "alice").await);
        bobs.push(WsClient::authenticated(gateway, "bob").await);
    }
    let mut everyone: Vec<&mut WsClient> = alices.iter_mut().chain(bobs.iter_mut()).collect();
    warm_up(&cluster.auths[1], &mut everyone).await;
    // An unused ws token issued before the revocation, and one still in phase 2.
    let unused = cluster.gateways[0].ws_token(&alice_jwt).await;
    let phase2_token = cluster.gateways[1].ws_token(&alice_jwt).await;
    let mut in_phase_2 = WsClient::connect(cluster.gateways[1].addr(), &phase2_token, None)
        .await
        .expect("upgrade");

    cluster.auths[0].revoke_user("alice").await;

    join_all(
        alices
            .iter_mut()
            .map(|alice| alice.expect_close(4401, STEP)),
    )
    .await;
    for bob in &mut bobs {
        bob.echo("bob stays").await;
    }
    let after = cluster.auths[1].publish("after revocation", None).await;
    for bob in &mut bobs {
        assert_eq!(bob.recv_type("broadcast", STEP).await["id"], after);
    }
    let gateway = &cluster.gateways[2];
    assert_eq!(
        gateway.token_ws(Some(&alice_jwt)).await.status,
        401,
        "the old JWT at /token/ws"
    );
    assert_eq!(
        WsClient::connect(gateway.addr(), &unused, None).await.err(),
        Some(401),
        "an unused ws token"
    );
    in_phase_2.send_jwt(&alice_jwt).await;
    match in_phase_2.next_frame(STEP).await {
        Some(Frame::Close(Some(4401))) => {}
        other => panic!("the old JWT in phase 2: expected close 4401, got {other:?}"),
    }
    let verdict = cluster.auths[1]
        .auth_client(ApiKey::Internal)
        .verify_jwt(VerifyJwtRequest { jwt: alice_jwt })
        .await;
    assert_eq!(
        verdict.unwrap_err().code(),
        tonic::Code::Unauthenticated,
        "VerifyJwt of the old JWT"
    );
}

#[tokio::test]
async fn a_revoked_jti_is_refused_at_token_issue_and_in_phase_two() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let revoked = Jwt::for_user("alice").jti("jti-to-revoke");
    let other = Jwt::for_user("alice");
    let token = stack.gateway().ws_token(&revoked.sign()).await;
    let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    stack
        .auth()
        .auth_client(ApiKey::Admin)
        .revoke_jwt(RevokeJwtRequest {
            jti: "jti-to-revoke".into(),
            expires_at: None,
        })
        .await
        .expect("RevokeJwt with the admin key");

    client.send_jwt(&revoked.sign()).await;
    client.expect_close(4401, STEP).await;
    assert_eq!(
        stack.gateway().token_ws(Some(&revoked.sign())).await.status,
        401
    );
    let mut fine =
        WsClient::authenticated_with(stack.gateway(), &other.sign(), "alice", None).await;
    fine.echo("another jti of the same user still works").await;
}

#[tokio::test]
async fn revocation_needs_the_admin_key() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;

    for key in [ApiKey::Internal, ApiKey::Wrong, ApiKey::Missing] {
        let status = stack
            .auth()
            .auth_client(key)
            .revoke_user(wsauth_shared::proto::RevokeUserRequest {
                user_id: "alice".into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            "RevokeUser with {key:?}: {status:?}"
        );
    }
    let mut alice = WsClient::authenticated(stack.gateway(), "alice").await;
    alice.echo("not revoked").await;
}

#[tokio::test]
async fn revoke_jwt_closes_only_the_live_connections_of_that_jti_on_any_gateway() {
    let cluster = Cluster::spawn(2, 2, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let (g0, g1) = (&cluster.gateways[0], &cluster.gateways[1]);
    let jwt_a = Jwt::for_user("alice").jti("jti-a");
    let jwt_b = Jwt::for_user("alice").jti("jti-b");
    let jwt_old = Jwt::for_user("alice").jti("jti-before-refresh");
    let jwt_new = Jwt::for_user("alice").jti("jti-after-refresh");
    let mut a = WsClient::authenticated_with(g1, &jwt_a.sign(), "alice", None).await;
    let mut b = WsClient::authenticated_with(g0, &jwt_b.sign(), "alice", None).await;
    let mut refreshed = WsClient::authenticated_with(g0, &jwt_old.sign(), "alice", None).await;
    warm_up(&cluster.auths[0], &mut [&mut a, &mut b, &mut refreshed]).await;
    refreshed.send_jwt(&jwt_new.sign()).await;
    // No answer to a refresh: give its VerifyJwt time to come back.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    cluster.auths[0].revoke_jwt("jti-a").await;
    a.expect_close(4401, STEP).await;
    // Events after the revocation in the stream: had it closed them, the
    // close would come instead of this broadcast.
    cluster.auths[1].revoke_jwt("jti-before-refresh").await;
    let after = cluster.auths[1]
        .publish("after the revocations", None)
        .await;
    for client in [&mut b, &mut refreshed] {
        assert_eq!(client.recv_type("broadcast", STEP).await["id"], after);
        client.echo("still open").await;
    }

    cluster.auths[1].revoke_jwt("jti-after-refresh").await;
    refreshed.expect_close(4401, STEP).await;
    b.echo("jti-b was never revoked").await;
}
