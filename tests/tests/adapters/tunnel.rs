//! The async Tunnel over real sockets: a large transfer both ways, and a
//! refusal seen on both sides.

use std::sync::Arc;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::tunnel::{LibraryId, LibraryKeys, RejectCode, TunnelError};
use pos_p2p::{Identity, RemoteIdentity, RuntimeKind, Tunnel, TunnelOpenError};

use crate::common::{FNV_START, checksum, start};

struct Keys {
    library: LibraryId,
    me: Identity,
    members: Vec<RemoteIdentity>,
}

impl LibraryKeys for Keys {
    fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
        (*library == self.library).then(|| self.me.clone())
    }

    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
        *library == self.library && self.members.contains(instance)
    }
}

const LIBRARY: LibraryId = LibraryId::from_bytes([0x42; 16]);

fn keys(me: u8, members: &[u8]) -> Keys {
    Keys {
        library: LIBRARY,
        me: Identity::from_bytes(&[me; 32]),
        members: members
            .iter()
            .map(|m| Identity::from_bytes(&[*m; 32]).to_remote_identity())
            .collect(),
    }
}

/// Write `len` deterministic bytes and return their checksum.
async fn send(tunnel: &mut (impl futures_util::AsyncWrite + Unpin), len: usize, seed: u8) -> u64 {
    let mut hash = FNV_START;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut sent = 0;
    while sent < len {
        for (i, b) in chunk.iter_mut().enumerate().step_by(997) {
            *b = seed.wrapping_add((sent + i) as u8);
        }
        let n = chunk.len().min(len - sent);
        hash = checksum(&chunk[..n], hash);
        tunnel.write_all(&chunk[..n]).await.unwrap();
        sent += n;
    }
    hash
}

async fn receive(tunnel: &mut (impl futures_util::AsyncRead + Unpin), len: usize) -> u64 {
    let mut hash = FNV_START;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < len {
        let n = tunnel.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended after {got} of {len} bytes");
        hash = checksum(&buf[..n], hash);
        got += n;
    }
    hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_tunnel() {
    const LEN: usize = 64 << 20;
    let a = start(81, RuntimeKind::Tokio);
    let b = start(82, RuntimeKind::Tokio);
    let (ka, kb) = (Arc::new(keys(1, &[1, 2])), Arc::new(keys(2, &[1, 2])));
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let stream = b.accept().await.expect("stream");
            let mut tunnel = Tunnel::responder(stream, &*kb).await.expect("responder");
            assert_eq!(
                tunnel.remote_instance(),
                Identity::from_bytes(&[1; 32]).to_remote_identity()
            );
            let received = receive(&mut tunnel, LEN).await;
            let sent = send(&mut tunnel, LEN, 7).await;
            tunnel.close().await.unwrap();
            (received, sent)
        })
    };
    let peer = a.peers()[&b.local_identity()].clone();
    let stream = peer.new_stream().await.unwrap();
    let mut tunnel = Tunnel::initiator(stream, LIBRARY, &*ka)
        .await
        .expect("initiator");
    assert_eq!(tunnel.library_id(), LIBRARY);
    assert_eq!(tunnel.node_remote_identity(), b.local_identity());
    let sent = send(&mut tunnel, LEN, 3).await;
    let received = receive(&mut tunnel, LEN).await;
    let (server_received, server_sent) = server.await.unwrap();
    assert_eq!(sent, server_received, "initiator to responder intact");
    assert_eq!(server_sent, received, "responder to initiator intact");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_refused_on_both_sides() {
    let a = start(83, RuntimeKind::Tokio);
    let b = start(84, RuntimeKind::AsyncStd);
    // b does not list a's instance 3.
    let (ka, kb) = (Arc::new(keys(3, &[2, 3])), Arc::new(keys(2, &[1, 2])));
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let stream = b.accept().await.expect("stream");
            Tunnel::responder(stream, &*kb).await.map(|_| ())
        })
    };
    let peer = a.peers()[&b.local_identity()].clone();
    let stream = peer.new_stream().await.unwrap();
    let at_a = Tunnel::initiator(stream, LIBRARY, &*ka).await.map(|_| ());
    let at_b = server.await.unwrap();
    assert!(
        matches!(
            at_a,
            Err(TunnelOpenError::Tunnel(TunnelError::Rejected(
                RejectCode::NotMember
            )))
        ),
        "{at_a:?}"
    );
    assert!(
        matches!(at_b, Err(TunnelOpenError::Tunnel(TunnelError::NotMember))),
        "{at_b:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_reads_to_its_end_and_a_cut_one_is_an_error() {
    let a = start(85, RuntimeKind::Tokio);
    let b = start(86, RuntimeKind::AsyncStd);
    let (ka, kb) = (Arc::new(keys(1, &[1, 2])), Arc::new(keys(2, &[1, 2])));
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let stream = b.accept().await.expect("stream");
                let mut tunnel = Tunnel::responder(stream, &*kb).await.expect("responder");
                let mut got = Vec::new();
                results.push(tunnel.read_to_end(&mut got).await.map(|_| got));
            }
            results
        })
    };
    let peer = a.peers()[&b.local_identity()].clone();
    // Closed through the tunnel: the end goes out, the transfer is whole.
    let mut tunnel = Tunnel::initiator(peer.new_stream().await.unwrap(), LIBRARY, &*ka)
        .await
        .unwrap();
    tunnel.write_all(b"all of it").await.unwrap();
    tunnel.close().await.unwrap();
    // The stream under it finished at a message boundary, without the end.
    let mut cut = Tunnel::initiator(peer.new_stream().await.unwrap(), LIBRARY, &*ka)
        .await
        .unwrap();
    cut.write_all(b"the first half").await.unwrap();
    cut.flush().await.unwrap();
    cut.get_mut().close().await.unwrap();
    let results = server.await.unwrap();
    assert_eq!(results[0].as_ref().unwrap(), b"all of it");
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    assert_eq!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<TunnelError>()),
        Some(&TunnelError::Truncated)
    );
    a.shutdown().await;
    b.shutdown().await;
}
