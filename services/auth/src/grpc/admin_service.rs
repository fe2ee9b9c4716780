//! `wsauth.v1.AdminService`: the operators' view (ListGateways, Presence),
//! and the gateways' reports (ReportGateway) that build it.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wsauth_shared::proto::admin_service_server::AdminService;
use wsauth_shared::proto::{
    Connection, GatewayInfo, ListGatewaysRequest, ListGatewaysResponse, PresenceRequest,
    PresenceResponse, ReportGatewayRequest, ReportGatewayResponse,
};

use super::{checks, timestamp};
use crate::caller::{Caller, Role};
use crate::clock::now_ms;
use crate::error::AuthError;
use crate::presence::PresenceStore;

/// The AdminService handlers.
#[derive(Clone)]
pub struct AdminGrpc {
    presence: Arc<dyn PresenceStore>,
}

impl AdminGrpc {
    pub fn new(presence: Arc<dyn PresenceStore>) -> Self {
        Self { presence }
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn list_gateways(
        &self,
        request: Request<ListGatewaysRequest>,
    ) -> Result<Response<ListGatewaysResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let records = self
            .presence
            .gateways(now_ms())
            .await
            .map_err(AuthError::from)?;
        let gateways = records
            .into_iter()
            .map(|r| GatewayInfo {
                gateway_id: r.gateway_id,
                connections: r.connections,
                authenticated: r.authenticated,
                started_at: Some(timestamp(r.started_at_ms)),
                last_seen: Some(timestamp(r.last_seen_ms)),
            })
            .collect();
        Ok(Response::new(ListGatewaysResponse { gateways }))
    }

    async fn presence(
        &self,
        request: Request<PresenceRequest>,
    ) -> Result<Response<PresenceResponse>, Status> {
        Caller::of(&request).require(Role::Admin)?;
        let request = request.into_inner();
        checks::presence(&request)?;
        let user_id = request.user_id;
        let entries = self
            .presence
            .presence(&user_id, now_ms())
            .await
            .map_err(AuthError::from)?;
        let connections = entries
            .into_iter()
            .map(|e| Connection {
                gateway_id: e.gateway_id,
                conn_id: e.conn_id,
                connected_at: Some(timestamp(e.connected_at_ms)),
            })
            .collect();
        Ok(Response::new(PresenceResponse { connections }))
    }

    async fn report_gateway(
        &self,
        request: Request<ReportGatewayRequest>,
    ) -> Result<Response<ReportGatewayResponse>, Status> {
        Caller::of(&request).require(Role::Internal)?;
        let report = checks::report_gateway(request.into_inner())?;
        let resync = self
            .presence
            .report(&report, now_ms())
            .await
            .map_err(AuthError::from)?;
        Ok(Response::new(ReportGatewayResponse { resync }))
    }
}
