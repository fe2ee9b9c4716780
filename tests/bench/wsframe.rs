//! The least of RFC 6455 the floor needs: unmasked server frames out, masked
//! client frames in (unfragmented; the bench's clients send nothing larger).

/// Opcodes the floor reads or writes.
pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Client frames over this are refused (the floor's clients send a JWT).
const MAX_PAYLOAD: u64 = 64 * 1024;

/// One server frame (FIN set, no mask): header and payload in one buffer, so
/// a delivery is one `send()`.
pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// A client frame read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Why a client's bytes are not a frame the floor accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Fragmented,
    Unmasked,
    TooLarge,
}

/// The first whole frame at the start of `buf` and its length on the wire;
/// `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, Refused> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x80 == 0 {
        return Err(Refused::Fragmented);
    }
    if b1 & 0x80 == 0 {
        return Err(Refused::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Err(Refused::TooLarge);
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask: [u8; 4] = mask.try_into().expect("4 bytes");
    at += 4;
    let end = at + len as usize;
    let Some(masked) = buf.get(at..end) else {
        return Ok(None);
    };
    let payload = masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            opcode: b0 & 0x0F,
            payload,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame as TFrame, FrameHeader};

    use super::*;

    /// tungstenite's encoding of a text frame, masked as a client's.
    fn client_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = TFrame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = mask;
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn server_frames_match_tungstenite_at_every_length_class() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            let ours = encode(TEXT, &payload);
            let (header, _) = FrameHeader::parse(&mut std::io::Cursor::new(&ours))
                .unwrap()
                .unwrap();
            assert_eq!(header.opcode, OpCode::Data(Data::Text), "{len}");
            assert!(header.is_final && header.mask.is_none(), "{len}");
            assert_eq!(ours, client_frame(&payload, None), "{len}");
        }
    }

    #[test]
    fn masked_client_frames_are_decoded_whole_or_not_at_all() {
        let wire = client_frame(br#"{"type":"jwt","token":"a.b.c"}"#, Some([1, 2, 3, 4]));
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut]), Ok(None), "{cut}");
        }
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        let (frame, used) = decode(&two).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(frame.opcode, TEXT);
        assert_eq!(frame.payload, br#"{"type":"jwt","token":"a.b.c"}"#);
    }

    #[test]
    fn unmasked_fragmented_and_huge_frames_are_refused() {
        assert_eq!(decode(&client_frame(b"x", None)), Err(Refused::Unmasked));
        assert_eq!(
            decode(&[0x01, 0x81, 0, 0, 0, 0, b'x']),
            Err(Refused::Fragmented)
        );
        assert_eq!(
            decode(&[0x81, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0]),
            Err(Refused::TooLarge)
        );
    }
}
