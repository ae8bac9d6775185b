//! Nodes on real sockets reaching each other through a relay: in process
//! and through the `pos-p2p-relay` binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::{Identity, P2P, P2PConfig, P2PEvent, PathKind, RelayAddr, RelayStatus};
use pos_p2p_protocol::relay::RelayConfig;
use pos_p2p_relay::Relay;

/// Send everything, get its length back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sink;

impl Header for Sink {
    fn encode(&self, w: &mut Writer) {
        w.tag(1);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            1 => Ok(Sink),
            tag => Err(r.unknown_tag("Sink", tag)),
        }
    }
}

fn node(n: u8) -> P2PConfig {
    P2PConfig::new(
        Identity::from_bytes(&[n; 32]),
        "relayed",
        Version::new(1, 0, 0),
    )
    .unwrap()
    .listen(["127.0.0.1:0".parse().unwrap()])
    .discovery(false)
}

/// Answer each `Sink` stream with the number of bytes it carried.
async fn serve(p2p: Arc<P2P>) {
    while let Some(mut stream) = p2p.accept().await {
        tokio::spawn(async move {
            if Sink::from_stream(&mut stream).await.is_err() {
                return;
            }
            let mut buf = vec![0; 64 << 10];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = stream.write_all(&total.to_be_bytes()).await;
            let _ = stream.close().await;
        });
    }
}

async fn wait_relay_connected(p2p: &P2P) {
    for _ in 0..500 {
        if p2p
            .relays()
            .iter()
            .any(|(_, s)| matches!(s, RelayStatus::Connected { .. }))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not connected to the relay: {:?}", p2p.relays());
}

/// `b` sends `len` bytes to `a` through whatever path it has; returns what
/// `a` counted.
async fn send(b: &P2P, a: &P2P, len: usize) -> u64 {
    let peer = b.peers().get(&a.local_identity()).expect("peer known");
    let mut stream = peer.open(&Sink).await.expect("stream");
    let chunk = vec![0x5a; 64 << 10];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        stream.write_all(&chunk[..n]).await.unwrap();
        sent += n;
    }
    stream.close().await.unwrap();
    let mut reply = [0; 8];
    stream.read_exact(&mut reply).await.unwrap();
    u64::from_be_bytes(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_know_only_each_others_identity_and_relay_connect_then_go_direct() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = RelayConfig::default();
    config.bytes_per_second = 64 << 20;
    config.burst = 4 << 20;
    let relay = Relay::serve(listener, &Identity::from_bytes(&[0xee; 32]), config).unwrap();
    let a = P2P::new(node(1)).unwrap();
    let b = P2P::new(node(2)).unwrap();
    // Subscribed before the relay is added: its events are not missed.
    let events = a.events();
    a.add_relay(relay.relay_addr()).unwrap();
    tokio::spawn(serve(a.clone()));
    wait_relay_connected(&a).await;
    // b knows a's identity and relay, nothing else.
    let b_events = b.events();
    let peer = b
        .add_peer_via_relay(a.local_identity(), relay.relay_addr())
        .unwrap();
    assert_eq!(send(&b, &a, 1 << 20).await, 1 << 20);
    assert!(peer.stats().is_some(), "connected");
    // The connection started through the relay...
    assert!(b.stats().relayed_sent > 0 && a.stats().relayed_received > 0);
    // ...and, the two sockets reaching each other, went direct: each
    // told the other its candidates (its interface addresses, and where
    // the relay's probe responder saw it) and both dialed them.
    let direct = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_events.recv().await {
                Some(P2PEvent::PathChanged {
                    peer: p,
                    path: PathKind::Direct(addr),
                }) if p == a.local_identity() => break addr,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("b reaches a directly");
    let stats = peer.stats().expect("connected");
    assert_eq!(stats.path, PathKind::Direct(direct), "{stats:?}");
    assert!(relay.probes_answered() >= 2, "both nodes asked the relay");
    // From now on the relay carries nothing of a transfer.
    let before = relay.stats().forwarded;
    assert_eq!(send(&b, &a, 1 << 20).await, 1 << 20);
    let after = relay.stats().forwarded;
    assert!(
        after - before < 100,
        "{} datagrams through the relay",
        after - before
    );
    // a heard about its relay, with where it sees a from, and where the
    // relay sees a's UDP socket: its own address on loopback.
    let mut observed = None;
    let mut discovered = None;
    while observed.is_none() || discovered.is_none() {
        match events.recv().await {
            Some(P2PEvent::RelayConnected {
                relay: r,
                observed: o,
            }) => {
                assert_eq!(r, relay.relay_addr());
                observed = Some(o);
            }
            Some(P2PEvent::AddressDiscovered { relay: r, addr }) => {
                assert_eq!(r, relay.relay_addr());
                discovered = Some(addr);
            }
            Some(_) => {}
            None => panic!("no RelayConnected or AddressDiscovered event"),
        }
    }
    assert!(observed.is_some_and(|o| o.ip().is_loopback()));
    assert_eq!(discovered, a.listen_addrs().first().copied());
    a.shutdown().await;
    b.shutdown().await;
    relay.shutdown().await;
}

struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the relay binary; returns it and the address it printed.
fn start_binary(listen: &str, key: &std::path::Path) -> (Binary, RelayAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pos-p2p-relay"))
        .args(["--listen", listen, "--identity"])
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relay binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("relay ")
        .expect("prints its address")
        .parse()
        .expect("a relay address");
    (Binary(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_binary_keeps_its_identity_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("pos-p2p-relay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("relay.key");
    let _ = std::fs::remove_file(&key);
    let (binary, relay) = start_binary("127.0.0.1:0", &key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
    let a = P2P::new(node(3).relay(relay.clone())).unwrap();
    let events = a.events();
    wait_relay_connected(&a).await;
    drop(binary);
    // The node notices, and reconnects once the relay is back (same port,
    // same identity from the key file).
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(P2PEvent::RelayDisconnected { .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("no RelayDisconnected: {other:?}"),
        }
    }
    let (_binary, again) = start_binary(&relay.addr.to_string(), &key);
    assert_eq!(again, relay, "same identity, same address");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(P2PEvent::RelayConnected { .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("no RelayConnected after the restart: {other:?}"),
        }
    }
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_address_in_text_is_all_another_device_needs() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::serve(
        listener,
        &Identity::from_bytes(&[0xee; 32]),
        RelayConfig::default(),
    )
    .unwrap();
    let a = P2P::new(node(1).relay(relay.relay_addr())).unwrap();
    tokio::spawn(serve(a.clone()));
    wait_relay_connected(&a).await;
    // What a would show as a link or a QR code.
    let text = a.node_addr().to_string();
    assert!(text.starts_with(&a.local_identity().to_string()), "{text}");
    assert!(
        text.contains(&format!("relay={}", relay.relay_addr())),
        "{text}"
    );
    let b = P2P::new(node(2)).unwrap();
    b.add_manual_peer(text.parse::<pos_p2p::PeerAddr>().unwrap(), None);
    for _ in 0..500 {
        if b.peers().get(&a.local_identity()).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(send(&b, &a, 256 << 10).await, 256 << 10);
    a.shutdown().await;
    b.shutdown().await;
    relay.shutdown().await;
}
