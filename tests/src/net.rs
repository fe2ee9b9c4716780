//! Client sockets on loopback, spread over source addresses.
//!
//! One source address has ~28k ephemeral ports towards a given server port,
//! fewer than the sockets (open and in TIME_WAIT) a load run needs, so the
//! load generator binds each socket to one of 127.0.0.2–127.0.0.251 first.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Source addresses used, spread round-robin.
const SOURCE_ADDRESSES: usize = 250;

/// The source address of the `index`-th client socket: 127.0.0.2 onwards.
pub fn source_ip(index: usize) -> Ipv4Addr {
    let last = u8::try_from(2 + index % SOURCE_ADDRESSES).expect("2 + (x mod 250) fits in a u8");
    Ipv4Addr::new(127, 0, 0, last)
}

/// Connects to `server`, from `source` when given (port chosen by the
/// kernel), Nagle off. The caller bounds it with a deadline.
pub async fn connect_from(
    source: Option<Ipv4Addr>,
    server: SocketAddr,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::from((source, 0)))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
