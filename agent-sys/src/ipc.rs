//! A framed, length-capped channel over one end of a Unix socketpair.
//!
//! The platform creates one socketpair per child: nothing on the filesystem,
//! so no other process can connect to a child, and a child cannot reach
//! another child's socket.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use palisade_proto::frame;
use prost::Message;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The environment variable that tells a child which descriptor is its end of
/// the socketpair.
pub const IPC_FD_ENV: &str = "PALISADE_IPC_FD";

/// The descriptor number the child's end of the socketpair is placed at.
pub const CHILD_IPC_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("{IPC_FD_ENV} is not set: this program is started by palisade-agent, not by hand")]
    NoFd,
    #[error("{IPC_FD_ENV}={0:?} is not a descriptor number")]
    BadFd(String),
    #[error("descriptor {0} is not a Unix socket: {1}")]
    NotASocket(RawFd, std::io::Error),
    #[error("the local channel descriptor was already taken")]
    AlreadyTaken,
    #[error("local channel i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Set once the child's descriptor has been taken, so it is never owned twice.
static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One end of a local channel: length-prefixed protobuf frames, capped at
/// [`frame::MAX_LOCAL_FRAME`].
pub struct Channel {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
}

impl Channel {
    /// Wraps a connected Unix stream (must be called inside a tokio runtime).
    pub fn new(stream: UnixStream) -> Self {
        Channel {
            framed: Framed::new(stream, frame::codec(frame::MAX_LOCAL_FRAME)),
        }
    }

    /// Wraps a std socket (sets it non-blocking).
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> Result<Self, IpcError> {
        stream.set_nonblocking(true)?;
        Ok(Channel::new(UnixStream::from_std(stream)?))
    }

    /// The child's end: the descriptor named by [`IPC_FD_ENV`].
    pub fn from_env() -> Result<Self, IpcError> {
        let value = std::env::var(IPC_FD_ENV).map_err(|_| IpcError::NoFd)?;
        let fd: RawFd = value.parse().map_err(|_| IpcError::BadFd(value.clone()))?;
        if fd < 3 {
            return Err(IpcError::BadFd(value));
        }
        // Check that the descriptor is a socket before taking ownership of it.
        nix::sys::socket::getsockopt(&unsafe_borrow(fd), nix::sys::socket::sockopt::SockType)
            .map_err(|e| IpcError::NotASocket(fd, e.into()))?;
        if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(IpcError::AlreadyTaken);
        }
        // SAFETY: the platform placed our end of the socketpair at `fd` and
        // nothing else in this process owns it; we checked above that it is an
        // open socket, and `TAKEN` guarantees ownership is taken only once.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Channel::from_std(std::os::unix::net::UnixStream::from(owned))
    }

    /// Sends one message as a frame.
    pub async fn send<M: Message>(&mut self, message: &M) -> Result<(), IpcError> {
        self.framed.send(frame::encode_body(message)).await?;
        Ok(())
    }

    /// Receives one frame body; `None` when the peer closed the channel.
    /// An oversized frame is an error (`InvalidData`).
    pub async fn recv(&mut self) -> Result<Option<Bytes>, IpcError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Ok(bytes)) => Ok(Some(bytes.freeze())),
            Some(Err(e)) => Err(e.into()),
        }
    }
}

/// Borrows `fd` for a single syscall without taking ownership.
fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used for the getsockopt probe just above, while `fd` is
    // known to be open (a closed descriptor makes getsockopt fail with EBADF,
    // which we report; no memory is touched through it).
    #[allow(unsafe_code)]
    unsafe {
        std::os::fd::BorrowedFd::borrow_raw(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::msg::{FromChild, Role, decode_from_child};
    use palisade_proto::pb;

    #[tokio::test]
    async fn frames_cross_a_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut a = Channel::from_std(a).expect("channel a");
        let mut b = Channel::from_std(b).expect("channel b");
        let hello = FromChild::Hello {
            role: Role::Collector,
            pid: 1,
            version: "x".into(),
            sandbox: "s".into(),
        };
        a.send(&pb::FromChild::from(hello.clone()))
            .await
            .expect("send");
        let got = b.recv().await.expect("recv").expect("a frame");
        assert_eq!(decode_from_child(&got).expect("decodes"), hello);
        drop(a);
        assert!(b.recv().await.expect("clean close").is_none());
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        use tokio::io::AsyncWriteExt;
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        let mut b = Channel::new(b);
        let mut a = a;
        a.write_all(&(frame::MAX_LOCAL_FRAME as u32 + 1).to_be_bytes())
            .await
            .expect("write");
        match b.recv().await {
            Err(IpcError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
            other => panic!(
                "expected InvalidData, got {:?}",
                other.map(|o| o.map(|b| b.len()))
            ),
        }
    }
}
