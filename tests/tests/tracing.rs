//! Observability: the node, each connection (with its peer and path) and
//! each stream have a tracing span, and a connection's life is logged in
//! its span.
//!
//! A test binary of its own: `tracing` caches whether a log statement is
//! wanted when the statement first runs, and a statement first run by
//! another test's thread while this test installs its subscriber can be
//! cached as unwanted (one run in four missed "connection established"
//! when this test shared the `adapters` binary).

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::AsyncWriteExt;
use pos_p2p::P2P;
use pos_p2p::prelude::*;
use tracing_subscriber::fmt::MakeWriter;

#[allow(dead_code, unreachable_pub)]
#[path = "adapters/common.rs"]
mod common;

use common::{TestHeader, config};

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn connections_and_streams_are_traced_with_their_node_and_peer() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    // One thread runs everything, so the subscriber sees all of it.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client_id, server_id) = runtime.block_on(async {
        let server = P2P::new(config(102)).unwrap();
        let client = P2P::new(config(103)).unwrap();
        let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
        let mut stream = peer.new_stream().await.unwrap();
        stream
            .write_all(&TestHeader::Ping.to_bytes())
            .await
            .unwrap();
        stream.reset(0x1234).unwrap();
        let ids = (client.local_identity(), server.local_identity());
        client.shutdown().await;
        server.shutdown().await;
        ids
    });
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let logged = |span: &str, message: &str| {
        lines
            .iter()
            .any(|l| l.contains(span) && l.contains(message))
    };
    // The client's connection to the server: inside the client's node
    // span, with the server's identity and the path.
    let client_conn = format!("node{{id={client_id}}}:conn{{");
    assert!(logged(&client_conn, "connection established"), "{text}");
    assert!(
        lines.iter().any(|l| l.contains(&client_conn)
            && l.contains(&format!("peer={server_id}"))
            && l.contains("path=127.0.0.1:")),
        "{text}"
    );
    // And the server's, the other way round.
    let server_conn = format!("node{{id={server_id}}}:conn{{");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&server_conn) && l.contains(&format!("peer={client_id}"))),
        "{text}"
    );
    // Its end, with the reason.
    assert!(logged(&client_conn, "connection over"), "{text}");
    // The stream's operations, in a span with the stream and its peer.
    let stream = "stream{id=";
    assert!(
        lines.iter().any(|l| l.contains(stream)
            && l.contains(&format!("peer={server_id}"))
            && l.contains("reset")
            && l.contains("code=4660")),
        "{text}"
    );
    // The driver says what it sleeps for.
    assert!(
        logged("", "driver sleeps until the next of these"),
        "{text}"
    );
}
