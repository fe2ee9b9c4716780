//! `wsauth.v1.AuthService`.

use tonic::{Request, Response, Status};
use wsauth_shared::proto::auth_service_server::AuthService;
use wsauth_shared::proto::{
    IssueWsTokenRequest, IssueWsTokenResponse, RevokeJwtRequest, RevokeJwtResponse,
    RevokeUserRequest, RevokeUserResponse, ValidateTokenRequest, ValidateTokenResponse,
    VerifyJwtRequest, VerifyJwtResponse,
};

use super::{checks, timestamp};
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

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_ws_token(
        &self,
        request: Request<IssueWsTokenRequest>,
    ) -> Result<Response<IssueWsTokenResponse>, Status> {
        // Authorised by the JWT itself: no caller key needed.
        let request = request.into_inner();
        checks::issue_ws_token(&request)?;
        let issued = self.authority.issue_ws_token(&request.jwt).await?;
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
        let request = request.into_inner();
        checks::validate_token(&request)?;
        let record = self.authority.validate_ws_token(&request.token).await?;
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
        let request = request.into_inner();
        checks::verify_jwt(&request)?;
        let claims = self.authority.verify_jwt(&request.jwt).await?;
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
        let expires_ms = checks::revoke_jwt(&request)?;
        self.authority.revoke_jwt(&request.jti, expires_ms).await?;
        Ok(Response::new(RevokeJwtResponse {}))
    }

    async fn revoke_user(
        &self,
        request: Request<RevokeUserRequest>,
    ) -> Result<Response<RevokeUserResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let request = request.into_inner();
        checks::revoke_user(&request)?;
        let user_id = request.user_id;
        self.authority.revoke_user(&user_id).await?;
        tracing::info!(%user_id, "user revoked");
        Ok(Response::new(RevokeUserResponse {}))
    }
}
