//! The gRPC edge: proto types stop here. Handlers check the caller and the
//! input limits, call the domain, and map its errors through `From<AuthError> for Status`.

use prost_types::Timestamp;

pub mod admin_service;
pub mod auth_service;
pub mod broadcast_service;
pub mod checks;
pub mod gate;
pub mod trace;

pub use admin_service::AdminGrpc;
pub use auth_service::AuthGrpc;
pub use broadcast_service::BroadcastGrpc;
pub use gate::GateLayer;
pub use trace::TraceLayer;

/// Unix ms → protobuf Timestamp.
fn timestamp(ms: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// Protobuf Timestamp → Unix ms (times before 1970 clamp to 0).
fn millis(ts: &Timestamp) -> u64 {
    let seconds = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u64::try_from(ts.nanos).unwrap_or(0);
    seconds
        .saturating_mul(1000)
        .saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_millis() {
        assert_eq!(millis(&timestamp(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(
            millis(&Timestamp {
                seconds: -5,
                nanos: 0
            }),
            0
        );
    }
}
