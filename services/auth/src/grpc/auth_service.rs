//! `wsauth.v1.AuthService`.

use tonic::{Request, Response, Status};
use wsauth_shared::proto::auth_service_server::AuthService;
use wsauth_shared::proto::{
    IssueWsTokenRequest, IssueWsTokenResponse, RevokeJwtRequest, RevokeJwtResponse,
    RevokeUserRequest, RevokeUserResponse, ValidateTokenRequest, ValidateTokenResponse,
    VerifyJwtRequest, VerifyJwtResponse,
};

use super::{MAX_CREDENTIAL_BYTES, MAX_ID_BYTES, check, check_user_id, millis, timestamp};
use crate::authority::Authority;
use crate::caller::{Caller, Role};

/// The AuthService handlers.
#[derive(Clone)]
pub struct AuthGrpc {
    authority: Authority,
}

impl AuthGrpc {
    /// Serves `authority` over gRPC.
    pub fn new(authority: Authority) -> Self {
        Self { authority }
    }
}

fn check_jwt(jwt: &str) -> Result<(), Status> {
    Ok(check(
        jwt,
        MAX_CREDENTIAL_BYTES,
        "jwt is empty",
        "jwt is longer than 8 KiB",
    )?)
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_ws_token(
        &self,
        request: Request<IssueWsTokenRequest>,
    ) -> Result<Response<IssueWsTokenResponse>, Status> {
        // Authorised by the JWT itself: no caller key needed.
        let jwt = request.into_inner().jwt;
        check_jwt(&jwt)?;
        let issued = self.authority.issue_ws_token(&jwt).await?;
        Ok(Response::new(IssueWsTokenResponse {
            token: issued.token,
            user_id: issued.user_id,
            expires_at: Some(timestamp(issued.expires_ms)),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        Caller::of(&request).require(Role::Internal)?;
        let token = request.into_inner().token;
        check(
            &token,
            MAX_CREDENTIAL_BYTES,
            "token is empty",
            "token is longer than 8 KiB",
        )?;
        let record = self.authority.validate_ws_token(&token).await?;
        Ok(Response::new(ValidateTokenResponse {
            user_id: record.user_id,
            expires_at: Some(timestamp(record.expires_ms)),
        }))
    }

    async fn verify_jwt(
        &self,
        request: Request<VerifyJwtRequest>,
    ) -> Result<Response<VerifyJwtResponse>, Status> {
        Caller::of(&request).require(Role::Internal)?;
        let jwt = request.into_inner().jwt;
        check_jwt(&jwt)?;
        let claims = self.authority.verify_jwt(&jwt).await?;
        Ok(Response::new(VerifyJwtResponse {
            user_id: claims.sub,
            expires_at: Some(timestamp(claims.exp.saturating_mul(1000))),
            jti: claims.jti.unwrap_or_default(),
        }))
    }

    async fn revoke_jwt(
        &self,
        request: Request<RevokeJwtRequest>,
    ) -> Result<Response<RevokeJwtResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let request = request.into_inner();
        check(
            &request.jti,
            MAX_ID_BYTES,
            "jti is empty",
            "jti is longer than 256 bytes",
        )?;
        let expires_ms = request.expires_at.as_ref().map(millis);
        self.authority.revoke_jwt(&request.jti, expires_ms).await?;
        Ok(Response::new(RevokeJwtResponse {}))
    }

    async fn revoke_user(
        &self,
        request: Request<RevokeUserRequest>,
    ) -> Result<Response<RevokeUserResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let user_id = request.into_inner().user_id;
        check_user_id(&user_id)?;
        self.authority.revoke_user(&user_id).await?;
        tracing::info!(%user_id, "user revoked");
        Ok(Response::new(RevokeUserResponse {}))
    }
}
