//! NRI's connection multiplexer: one unix socket carries several byte streams, each frame an
//! 8-byte header (connection id, payload length; both big-endian u32) and the payload.
//! Connection 1 carries the Plugin service (we serve it), connection 2 the Runtime service
//! (we call it). Each becomes an in-memory duplex stream that ttrpc reads and writes as if it
//! were its own socket; one task reads the socket and routes frames, and writers share the
//! socket's write half under a lock so a header and its payload are never interleaved.

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream},
    sync::{Mutex, oneshot},
    task::JoinSet,
};

pub const PLUGIN_CONN: u32 = 1;
pub const RUNTIME_CONN: u32 = 2;
/// ttrpc's largest message (4 MiB) plus its 10-byte header: a longer frame is malformed.
pub const MAX_FRAME: usize = 4 << 20 | 10;
/// Bytes buffered per direction of each logical connection.
const DUPLEX_BUFFER: usize = 1 << 20;

/// Why the trunk ended.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("connection closed by the runtime")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// The two logical connections of an NRI trunk.
pub struct Trunk {
    /// Connection 1: hand it to the ttrpc server of the Plugin service.
    pub plugin: DuplexStream,
    /// Connection 2: hand it to a ttrpc client of the Runtime service.
    pub runtime: DuplexStream,
    /// Resolves when the trunk ends, with the reason.
    pub ended: oneshot::Receiver<MuxError>,
    /// Dropping it stops the routing tasks and closes the socket.
    pub guard: TrunkGuard,
}

pub struct TrunkGuard(JoinSet<()>);

impl Drop for TrunkGuard {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}

/// Starts multiplexing `socket`. Dropping the returned trunk stops the tasks and closes it.
pub fn start<S>(socket: S) -> Trunk
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut socket_rx, socket_tx) = tokio::io::split(socket);
    let socket_tx = Arc::new(Mutex::new(socket_tx));
    let (plugin, plugin_mux) = tokio::io::duplex(DUPLEX_BUFFER);
    let (runtime, runtime_mux) = tokio::io::duplex(DUPLEX_BUFFER);
    let (plugin_mux_rx, mut plugin_mux_tx) = tokio::io::split(plugin_mux);
    let (runtime_mux_rx, mut runtime_mux_tx) = tokio::io::split(runtime_mux);
    let (ended_tx, ended) = oneshot::channel();
    let ended_tx = Arc::new(std::sync::Mutex::new(Some(ended_tx)));
    let end = move |reason: MuxError| {
        if let Some(tx) = ended_tx.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(reason);
        }
    };

    let mut tasks = JoinSet::new();
    let end_reader = end.clone();
    tasks.spawn(async move {
        let mut messages = [MessageCheck::default(), MessageCheck::default()];
        let reason = loop {
            let frame = match read_frame(&mut socket_rx).await {
                Ok(frame) => frame,
                Err(e) => break e,
            };
            let (conn, payload) = frame;
            let (target, check) = match conn {
                PLUGIN_CONN => (&mut plugin_mux_tx, &mut messages[0]),
                RUNTIME_CONN => (&mut runtime_mux_tx, &mut messages[1]),
                // As NRI's own mux does: frames for a connection nobody opened are dropped.
                _ => continue,
            };
            if let Err(why) = check.feed(&payload) {
                break MuxError::Malformed(format!("connection {conn}: {why}"));
            }
            if let Err(e) = target.write_all(&payload).await {
                break MuxError::Io(e);
            }
        };
        end_reader(reason);
    });
    for (conn, mut rx) in [(PLUGIN_CONN, plugin_mux_rx), (RUNTIME_CONN, runtime_mux_rx)] {
        let socket_tx = socket_tx.clone();
        let end = end.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let reason = loop {
                let n = match rx.read(&mut buf).await {
                    Ok(0) => break MuxError::Closed,
                    Ok(n) => n,
                    Err(e) => break MuxError::Io(e),
                };
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&conn.to_be_bytes());
                header[4..].copy_from_slice(&(n as u32).to_be_bytes());
                let mut tx = socket_tx.lock().await;
                let written = async {
                    tx.write_all(&header).await?;
                    tx.write_all(&buf[..n]).await?;
                    tx.flush().await
                }
                .await;
                if let Err(e) = written {
                    break MuxError::Io(e);
                }
            };
            end(reason);
        });
    }
    Trunk {
        plugin,
        runtime,
        ended,
        guard: TrunkGuard(tasks),
    }
}

/// Follows the ttrpc messages of one logical connection across frames, so bytes that are no
/// ttrpc message end the trunk at once: ttrpc itself would wait for the gigabytes a garbage
/// header announces, and the connection would hang instead of being dropped and made again.
#[derive(Default)]
struct MessageCheck {
    /// The part of the next message header seen so far.
    header: Vec<u8>,
    /// Payload bytes of the current message still to come.
    remaining: usize,
}

/// ttrpc's message header: payload length (u32 BE), stream id (u32 BE), type, flags.
const MESSAGE_HEADER: usize = 10;
/// ttrpc's largest payload.
const MAX_MESSAGE: usize = 4 << 20;

impl MessageCheck {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (MESSAGE_HEADER - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < MESSAGE_HEADER {
                break;
            }
            let h = std::mem::take(&mut self.header);
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            // Request, response, stream data.
            if !(1..=3).contains(&h[8]) {
                return Err(format!("message of unknown type {}", h[8]));
            }
            if len > MAX_MESSAGE {
                return Err(format!(
                    "message of {len} bytes exceeds ttrpc's {MAX_MESSAGE}-byte limit"
                ));
            }
            self.remaining = len;
        }
        Ok(())
    }
}

/// Reads one frame: (connection id, payload).
async fn read_frame<R: AsyncRead + Unpin>(rx: &mut R) -> Result<(u32, Vec<u8>), MuxError> {
    let mut header = [0u8; 8];
    match rx.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(MuxError::Closed),
        Err(e) => return Err(MuxError::Io(e)),
    }
    let conn = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    if conn == 0 {
        return Err(MuxError::Malformed(
            "frame for reserved connection 0".into(),
        ));
    }
    if len > MAX_FRAME {
        return Err(MuxError::Malformed(format!(
            "frame of {len} bytes on connection {conn} exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut payload = vec![0u8; len];
    rx.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            MuxError::Malformed(format!(
                "connection closed inside a {len}-byte frame on connection {conn}"
            ))
        } else {
            MuxError::Io(e)
        }
    })?;
    Ok((conn, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from the far side reach the right logical connection, and writes on a logical
    /// connection leave as frames with its id.
    #[tokio::test]
    async fn routes_frames_both_ways() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut trunk = start(ours);
        // Far side sends 3 bytes to conn 2, 2 bytes to an unknown conn 9, 4 bytes to conn 1.
        let mut wire = Vec::new();
        for (conn, payload) in [(2u32, &b"abc"[..]), (9, b"zz"), (1, b"wxyz")] {
            wire.extend_from_slice(&conn.to_be_bytes());
            wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            wire.extend_from_slice(payload);
        }
        theirs.write_all(&wire).await.unwrap();
        let mut got = [0u8; 4];
        trunk.plugin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"wxyz");
        let mut got = [0u8; 3];
        trunk.runtime.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");

        trunk.runtime.write_all(b"hello").await.unwrap();
        let mut frame = [0u8; 13];
        theirs.read_exact(&mut frame).await.unwrap();
        assert_eq!(&frame[..4], &2u32.to_be_bytes());
        assert_eq!(&frame[4..8], &5u32.to_be_bytes());
        assert_eq!(&frame[8..], b"hello");
    }

    #[tokio::test]
    async fn oversized_frame_ends_the_trunk_with_the_reason() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let trunk = start(ours);
        let mut header = Vec::new();
        header.extend_from_slice(&1u32.to_be_bytes());
        header.extend_from_slice(&(64u32 << 20).to_be_bytes());
        theirs.write_all(&header).await.unwrap();
        let reason = trunk.ended.await.unwrap();
        assert_eq!(
            reason.to_string(),
            "malformed frame: frame of 67108864 bytes on connection 1 exceeds the 4194314-byte limit"
        );
    }

    /// ttrpc messages are followed across frames however they are cut; a header of an
    /// unknown type or an oversized length is refused at once.
    #[test]
    fn message_check_follows_messages_across_frames() {
        let message = |len: u32, kind: u8| {
            let mut m = len.to_be_bytes().to_vec();
            m.extend_from_slice(&7u32.to_be_bytes());
            m.extend_from_slice(&[kind, 0]);
            m.extend(std::iter::repeat_n(0xab, len as usize));
            m
        };
        let wire = [message(5, 1), message(0, 2), message(300, 3)].concat();
        for cut in [1, 3, 9, 10, 11, 17, 64] {
            let mut check = MessageCheck::default();
            for frame in wire.chunks(cut) {
                check.feed(frame).unwrap();
            }
            assert_eq!((check.header.len(), check.remaining), (0, 0), "cut {cut}");
        }
        let mut check = MessageCheck::default();
        assert_eq!(
            check.feed(&message(0, 9)),
            Err("message of unknown type 9".to_string())
        );
        let mut check = MessageCheck::default();
        assert_eq!(
            check
                .feed(&message(0, 1)[..4])
                .and(check.feed(&(5u32 << 20).to_be_bytes())),
            Ok(())
        );
        let mut check = MessageCheck::default();
        let mut header = (5u32 << 20).to_be_bytes().to_vec();
        header.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        assert_eq!(
            check.feed(&header),
            Err("message of 5242880 bytes exceeds ttrpc's 4194304-byte limit".to_string())
        );
    }

    #[tokio::test]
    async fn peer_close_ends_the_trunk() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let trunk = start(ours);
        drop(theirs);
        assert!(matches!(trunk.ended.await.unwrap(), MuxError::Closed));
    }
}
