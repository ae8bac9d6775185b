//! Volume: a large transfer, many streams, many peers.

use std::sync::Arc;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::prelude::*;
use pos_p2p::{P2P, RuntimeKind};

use crate::common::{FNV_START, TestHeader, checksum, config, handle, start};

/// Serve each incoming stream on its own task.
async fn serve_concurrently(p2p: Arc<P2P>) {
    while let Some(stream) = p2p.accept().await {
        tokio::spawn(handle(stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_stream_arrives_intact() {
    let a = start(21, RuntimeKind::Tokio);
    let b = start(22, RuntimeKind::Tokio);
    tokio::spawn(serve_concurrently(b.clone()));
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let peer = a.peers()[&b.local_identity()].clone();
    let mut stream = peer.new_stream().await.unwrap();
    stream
        .write_all(&TestHeader::Sink.to_bytes())
        .await
        .unwrap();
    const TOTAL: u64 = 256 << 20;
    let mut chunk = vec![0u8; 1 << 20];
    let mut hash = FNV_START;
    let mut sent = 0u64;
    let mut i = 0u64;
    while sent < TOTAL {
        // Vary the bytes so that reordering or loss would show.
        for (j, b) in chunk.iter_mut().enumerate().step_by(4096) {
            *b = (i as usize + j) as u8;
        }
        hash = checksum(&chunk, hash);
        stream.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
        i += 1;
    }
    stream.close().await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply.len(), 16);
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), TOTAL);
    assert_eq!(
        u64::from_be_bytes(reply[8..].try_into().unwrap()),
        hash,
        "checksum"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_connection() {
    let a = start(23, RuntimeKind::Tokio);
    let b = start(24, RuntimeKind::Tokio);
    tokio::spawn(serve_concurrently(b.clone()));
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let peer = a.peers()[&b.local_identity()].clone();
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let peer = peer.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = peer.new_stream().await.expect("stream");
            let body = i.to_be_bytes().repeat(64);
            stream
                .write_all(&TestHeader::Echo.to_bytes())
                .await
                .unwrap();
            stream.write_all(&body).await.unwrap();
            stream.close().await.unwrap();
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).await.unwrap();
            assert_eq!(echoed, body, "stream {i}");
        }));
    }
    for task in tasks {
        task.await.expect("stream task");
    }
    // All of it on one connection.
    let connections: Vec<_> = a
        .peers()
        .values()
        .filter(|p| p.is_connected())
        .map(|p| p.identity())
        .collect();
    assert_eq!(connections, vec![b.local_identity()]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_peers_connect_to_one_node() {
    let hub = start(30, RuntimeKind::Tokio);
    tokio::spawn(serve_concurrently(hub.clone()));
    let mut clients = Vec::new();
    for n in 31..51u8 {
        let client = P2P::with_runtime(config(n), RuntimeKind::Tokio).unwrap();
        let (c, h) = (client.clone(), hub.clone());
        let task = tokio::spawn(async move {
            c.connect(h.listen_addrs()[0], Some(h.local_identity()))
                .await
                .expect("connect");
            crate::common::ping(&c, &h).await.expect("ping");
        });
        clients.push((client, task));
    }
    for (_, task) in &mut clients {
        task.await.expect("client task");
    }
    let connected = hub.peers().values().filter(|p| p.is_connected()).count();
    assert_eq!(connected, 20);
    for (client, _) in clients {
        client.shutdown().await;
    }
    hub.shutdown().await;
}

/// `write_chunk` and `read_chunk` move `Bytes` without copying them, with
/// flow control (8 MiB through 1.25 MB windows), in order, each chunk
/// within the size asked for, and `None` at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_move_without_copies_in_order_to_the_end() {
    use bytes::Bytes;
    let a = start(23, RuntimeKind::Tokio);
    let b = start(24, RuntimeKind::Tokio);
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let peer = a.peers()[&b.local_identity()].clone();
    let data: Bytes = (0..8u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let sent = data.clone();
    let sender = tokio::spawn(async move {
        let mut stream = peer.new_stream().await.unwrap();
        stream
            .write_chunk(TestHeader::Sink.to_bytes())
            .await
            .unwrap();
        for piece in sent.chunks(3 << 20) {
            stream.write_chunk(sent.slice_ref(piece)).await.unwrap();
        }
        stream.close().await.unwrap();
        stream
    });
    let mut incoming = b.accept().await.unwrap();
    let header = TestHeader::from_stream(&mut incoming).await.unwrap();
    assert!(matches!(header, TestHeader::Sink));
    let mut received = Vec::with_capacity(data.len());
    while let Some(chunk) = incoming.read_chunk(64 * 1024).await.unwrap() {
        assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
        received.extend_from_slice(&chunk);
    }
    assert!(received == data[..], "every byte, in order");
    assert_eq!(
        incoming.read_chunk(1024).await.unwrap(),
        None,
        "still the end"
    );
    drop(sender.await.unwrap());
    a.shutdown().await;
    b.shutdown().await;
}

/// A reader sends flow-control credit as it reads: a 4 MiB stream through
/// a 64 KiB stream window needs 64 window updates, each of which must go
/// out when the read that earns it happens (the read wakes the driver).
/// Healthy, this takes milliseconds; with that wake-up lost, each update
/// waits for an unrelated timer (seconds), and the transfer misses its
/// 20 s bound by far. Both ways of reading: `read` and `read_chunk`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sends_flow_control_credit_as_it_reads() {
    credit_flows(25, false).await;
    credit_flows(27, true).await;
}

async fn credit_flows(seed: u8, chunks: bool) {
    let mut small = config(seed);
    small.node.limits.stream_receive_window = 64 * 1024;
    let a = start(seed + 1, RuntimeKind::Tokio);
    let b = Arc::new(P2P::new(small).unwrap());
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let peer = a.peers()[&b.local_identity()].clone();
    const TOTAL: usize = 4 << 20;
    let sender = tokio::spawn(async move {
        let mut stream = peer.new_stream().await.unwrap();
        stream
            .write_all(&TestHeader::Sink.to_bytes())
            .await
            .unwrap();
        stream.write_all(&vec![7u8; TOTAL]).await.unwrap();
        stream.close().await.unwrap();
        stream
    });
    let mut incoming = b.accept().await.unwrap();
    TestHeader::from_stream(&mut incoming).await.unwrap();
    let received = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut received = 0;
        if chunks {
            while let Some(chunk) = incoming.read_chunk(16 * 1024).await.unwrap() {
                received += chunk.len();
            }
        } else {
            let mut all = Vec::new();
            incoming.read_to_end(&mut all).await.unwrap();
            received = all.len();
        }
        received
    })
    .await
    .expect("credit went out as the reader read");
    assert_eq!(received, TOTAL, "read_chunk: {chunks}");
    drop(sender.await.unwrap());
    a.shutdown().await;
    b.shutdown().await;
}
