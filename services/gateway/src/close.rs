//! Why the gateway closes a socket, and the contract's code for each reason.

/// Every reason the gateway closes a WebSocket; [`CloseCode::code`] is the
/// contract's table, kept in this one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The gateway is shutting down.
    GoingAway,
    /// A binary frame: only text frames are spoken.
    Unsupported,
    /// The client cannot keep up (send queue full) or sends too fast.
    Policy,
    /// A frame larger than `MAX_MESSAGE_BYTES`.
    TooBig,
    /// Auth unreachable while the socket was authenticating.
    AuthUnavailable,
    /// First frame not JSON, not `type:"jwt"`, or without a token.
    BadFirstFrame,
    /// JWT invalid, expired, revoked, or the user was revoked.
    Unauthorized,
    /// The JWT's `sub` is not the ws token's user.
    Forbidden,
    /// No first frame within `AUTH_TIMEOUT_S`.
    AuthTimeout,
    /// The client broke the WebSocket protocol (RFC 6455 §7.4.1; not in the
    /// contract's table, which lists the gateway's own decisions).
    ProtocolError,
    /// A text frame that is not UTF-8 (RFC 6455 §7.4.1).
    InvalidPayload,
}

impl CloseCode {
    /// Every close code, in declaration order (`code as usize` indexes it).
    pub const ALL: [CloseCode; 11] = [
        Self::GoingAway,
        Self::Unsupported,
        Self::Policy,
        Self::TooBig,
        Self::AuthUnavailable,
        Self::BadFirstFrame,
        Self::Unauthorized,
        Self::Forbidden,
        Self::AuthTimeout,
        Self::ProtocolError,
        Self::InvalidPayload,
    ];

    /// The WebSocket close code sent to the client.
    pub const fn code(self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::Unsupported => 1003,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::AuthUnavailable => 1011,
            Self::BadFirstFrame => 4400,
            Self::Unauthorized => 4401,
            Self::Forbidden => 4403,
            Self::AuthTimeout => 4408,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
        }
    }

    /// A short reason sent with the code: never a credential or an internal cause.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::GoingAway => "gateway shutting down",
            Self::Unsupported => "binary frames are not accepted",
            Self::Policy => "policy violation",
            Self::TooBig => "message too big",
            Self::AuthUnavailable => "auth unavailable",
            Self::BadFirstFrame => "expected {\"type\":\"jwt\",\"token\":...}",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::AuthTimeout => "authentication timeout",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "text frame is not utf-8",
        }
    }

    /// The inverse of [`CloseCode::code`], for the kick slot shared with the hub.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1001 => Self::GoingAway,
            1003 => Self::Unsupported,
            1008 => Self::Policy,
            1009 => Self::TooBig,
            1011 => Self::AuthUnavailable,
            4400 => Self::BadFirstFrame,
            4401 => Self::Unauthorized,
            4403 => Self::Forbidden,
            4408 => Self::AuthTimeout,
            1002 => Self::ProtocolError,
            1007 => Self::InvalidPayload,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    const ALL: [CloseCode; 11] = CloseCode::ALL;

    #[test]
    fn codes_match_the_contract_table() {
        let codes: Vec<u16> = ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [
                1001, 1003, 1008, 1009, 1011, 4400, 4401, 4403, 4408, 1002, 1007
            ]
        );
    }

    #[test]
    fn from_code_inverts_code() {
        for close in ALL {
            assert_eq!(CloseCode::from_code(close.code()), Some(close));
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }

    #[test]
    fn reasons_fit_in_a_close_frame() {
        // A close frame's payload is at most 125 bytes, 2 of them the code.
        for close in ALL {
            assert!(close.reason().len() <= 123);
        }
    }
}
