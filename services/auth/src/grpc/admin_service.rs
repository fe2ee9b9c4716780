//! `wsauth.v1.AdminService`: the operators' view (ListGateways, Presence),
//! and the gateways' reports (ReportGateway) that build it.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wsauth_shared::proto::admin_service_server::AdminService;
use wsauth_shared::proto::{
    Connection, ConnectionEntry, GatewayInfo, ListGatewaysRequest, ListGatewaysResponse,
    PresenceRequest, PresenceResponse, ReportGatewayRequest, ReportGatewayResponse,
};

use super::{MAX_ID_BYTES, check, check_user_id, millis, timestamp};
use crate::caller::{Caller, Role};
use crate::clock::now_ms;
use crate::error::AuthError;
use crate::presence::{ConnEntry, GatewayReport, PresenceStore};

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

fn gateway_id(id: &str) -> Result<(), AuthError> {
    check(
        id,
        MAX_ID_BYTES,
        "gateway_id is empty",
        "gateway_id is longer than 256 bytes",
    )
}

fn conn_entry(entry: ConnectionEntry) -> Result<ConnEntry, AuthError> {
    check(
        &entry.conn_id,
        MAX_ID_BYTES,
        "conn_id is empty",
        "conn_id is longer than 256 bytes",
    )?;
    // The Redis layout joins conn_id and gateway_id with a newline.
    if entry.conn_id.contains('\n') {
        return Err(AuthError::InvalidArgument("conn_id holds a newline"));
    }
    check_user_id(&entry.user_id)?;
    Ok(ConnEntry {
        connected_at_ms: entry.connected_at.as_ref().map_or(0, millis),
        conn_id: entry.conn_id,
        user_id: entry.user_id,
    })
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
        let user_id = request.into_inner().user_id;
        check_user_id(&user_id)?;
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
        let request = request.into_inner();
        gateway_id(&request.gateway_id)?;
        let entries = |list: Vec<ConnectionEntry>| -> Result<Vec<ConnEntry>, AuthError> {
            list.into_iter().map(conn_entry).collect()
        };
        let report = GatewayReport {
            connections: request.connections,
            authenticated: request.authenticated,
            started_at_ms: request.started_at.as_ref().map_or(0, millis),
            full: request.full,
            added: entries(request.added)?,
            removed: entries(request.removed)?,
            gateway_id: request.gateway_id,
        };
        let resync = self
            .presence
            .report(&report, now_ms())
            .await
            .map_err(AuthError::from)?;
        Ok(Response::new(ReportGatewayResponse { resync }))
    }
}
