//! The tunnel between two in-memory ends: success, every refusal on both
//! sides, tampering, relaying, chunking, rekeying, and the documented
//! transcript.

use proptest::prelude::*;

use super::*;

/// The application's view of libraries in these tests.
#[derive(Clone)]
pub(super) struct Keys {
    pub(super) library: LibraryId,
    pub(super) me: Option<Identity>,
    pub(super) members: Vec<RemoteIdentity>,
    pub(super) psk: Option<[u8; 32]>,
}

impl LibraryKeys for Keys {
    fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
        (*library == self.library)
            .then(|| self.me.clone())
            .flatten()
    }

    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
        *library == self.library && self.members.contains(instance)
    }

    fn psk(&self, library: &LibraryId) -> Option<[u8; 32]> {
        (*library == self.library).then_some(self.psk).flatten()
    }
}

pub(super) const LIBRARY: LibraryId = LibraryId::from_bytes([0x11; 16]);

pub(super) fn instance(n: u8) -> Identity {
    Identity::from_bytes(&[n; 32])
}

pub(super) fn nodes() -> NodePair {
    NodePair {
        initiator: Identity::from_bytes(&[0xa1; 32]).to_remote_identity(),
        responder: Identity::from_bytes(&[0xb2; 32]).to_remote_identity(),
    }
}

/// Two members of LIBRARY: instance 1 (initiator) and 2 (responder).
pub(super) fn members() -> (Keys, Keys) {
    let members = vec![
        instance(1).to_remote_identity(),
        instance(2).to_remote_identity(),
    ];
    let a = Keys {
        library: LIBRARY,
        me: Some(instance(1)),
        members: members.clone(),
        psk: None,
    };
    let b = Keys {
        library: LIBRARY,
        me: Some(instance(2)),
        members,
        psk: None,
    };
    (a, b)
}

/// The outcome of running a handshake to its end.
pub(super) struct Outcome {
    pub(super) initiator: Result<(TunnelTransport, TunnelInfo), TunnelError>,
    pub(super) responder: Result<(TunnelTransport, TunnelInfo), TunnelError>,
    /// Every byte the initiator sent, and the responder.
    pub(super) i_to_r: Vec<u8>,
    pub(super) r_to_i: Vec<u8>,
}

/// Run a handshake, passing each direction's bytes through `tamper`
/// (direction, bytes) before delivery.
pub(super) fn run(
    a: &dyn LibraryKeys,
    b: &dyn LibraryKeys,
    responder_nodes: NodePair,
    mut tamper: impl FnMut(bool, &mut Vec<u8>),
) -> Outcome {
    let mut outcome = Outcome {
        initiator: Err(TunnelError::Failed),
        responder: Err(TunnelError::Failed),
        i_to_r: Vec::new(),
        r_to_i: Vec::new(),
    };
    let mut initiator = match TunnelHandshake::initiator(nodes(), LIBRARY, a, [5; 32]) {
        Ok(h) => h,
        Err(e) => {
            outcome.initiator = Err(e);
            return outcome;
        }
    };
    let mut responder = TunnelHandshake::responder(responder_nodes, [6; 32]);
    let (mut i_err, mut r_err) = (None, None);
    // What the initiator sends after the responder finished: transport
    // frames (here, only a rejection of the responder's accept).
    let mut after_done = Vec::new();
    for _ in 0..8 {
        let mut to_r = Vec::new();
        initiator.take_output(&mut to_r);
        tamper(true, &mut to_r);
        outcome.i_to_r.extend_from_slice(&to_r);
        if responder.is_done() {
            after_done.extend_from_slice(&to_r);
        } else if r_err.is_none()
            && !to_r.is_empty()
            && let Err(e) = responder.handle_input(&to_r, b)
        {
            r_err = Some(e);
        }
        let mut to_i = Vec::new();
        responder.take_output(&mut to_i);
        tamper(false, &mut to_i);
        outcome.r_to_i.extend_from_slice(&to_i);
        if i_err.is_none()
            && !to_i.is_empty()
            && let Err(e) = initiator.handle_input(&to_i, a)
        {
            i_err = Some(e);
        }
        let finished =
            (initiator.is_done() || i_err.is_some()) && (responder.is_done() || r_err.is_some());
        if finished && to_r.is_empty() && to_i.is_empty() {
            break;
        }
    }
    // Anything an end said after failing (its rejection) still reaches the
    // other end's transport.
    if i_err.is_some() {
        initiator.take_output(&mut after_done);
    }
    outcome.initiator = match i_err {
        Some(e) => Err(e),
        None if initiator.is_done() => initiator.into_transport(),
        None => {
            let error = initiator.handle_eof();
            initiator.take_output(&mut after_done);
            Err(error)
        }
    };
    outcome.responder = match r_err {
        Some(e) => Err(e),
        None if responder.is_done() => responder.into_transport().and_then(|(mut t, info)| {
            // The responder reads on: a rejection of its accept arrives as
            // its first transport frame.
            let mut reader = FrameReader::new();
            let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
            let mut rest = &after_done[..];
            while !rest.is_empty() {
                let (used, done) = reader.push(rest);
                assert!(used > 0 || done, "a reader given bytes makes progress");
                rest = &rest[used..];
                if done {
                    t.open(reader.frame(), &mut plain)?;
                    reader.clear();
                }
            }
            Ok((t, info))
        }),
        None => Err(responder.handle_eof()),
    };
    outcome
}

fn both_fail(outcome: &Outcome) -> (TunnelError, TunnelError) {
    match (&outcome.initiator, &outcome.responder) {
        (Err(i), Err(r)) => (i.clone(), r.clone()),
        (i, r) => panic!(
            "both sides must fail: initiator ok={} responder ok={}",
            i.is_ok(),
            r.is_ok()
        ),
    }
}

/// Move `data` from `tx` to `rx` through sealed frames.
fn transfer(tx: &mut TunnelTransport, rx: &mut TunnelTransport, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut frame = vec![0u8; sealed_len(MAX_PLAINTEXT_LEN)];
    let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
    for chunk in data.chunks(MAX_PLAINTEXT_LEN) {
        let n = tx.seal(chunk, &mut frame).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([frame[0], frame[1]])), n - 2);
        let m = rx.open(&frame[2..n], &mut plain).unwrap();
        out.extend_from_slice(&plain[..m]);
    }
    out
}

#[test]
fn members_complete_the_handshake_and_exchange_data_both_ways() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut ta, ia) = outcome.initiator.unwrap();
    let (mut tb, ib) = outcome.responder.unwrap();
    assert_eq!(ia.library, LIBRARY);
    assert_eq!(ia.remote_instance, instance(2).to_remote_identity());
    assert_eq!(ib.remote_instance, instance(1).to_remote_identity());
    assert_eq!(ia.nodes, nodes());
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(transfer(&mut ta, &mut tb, &data), data);
    assert_eq!(transfer(&mut tb, &mut ta, &data), data);
}

#[test]
fn a_shared_library_secret_works_and_a_wrong_one_fails_both_sides() {
    let (mut a, mut b) = members();
    a.psk = Some([9; 32]);
    b.psk = Some([9; 32]);
    let outcome = run(&a, &b, nodes(), |_, _| {});
    assert!(outcome.initiator.is_ok() && outcome.responder.is_ok());

    // Another secret, or none where the initiator has one: message 3 fails
    // authentication, and the responder has shown nothing of itself.
    for other in [Some([10; 32]), None] {
        b.psk = other;
        let outcome = run(&a, &b, nodes(), |_, _| {});
        assert_eq!(
            both_fail(&outcome),
            (
                TunnelError::Rejected(RejectCode::AuthenticationFailed),
                TunnelError::Decrypt
            )
        );
    }

    // A member without the secret the responder has: told so, after it
    // proved its instance.
    let (mut a, mut b) = members();
    a.psk = None;
    b.psk = Some([9; 32]);
    let outcome = run(&a, &b, nodes(), |_, _| {});
    assert_eq!(
        both_fail(&outcome),
        (
            TunnelError::Rejected(RejectCode::Incompatible),
            TunnelError::Incompatible
        )
    );
}

/// What a prober (instance 3, no member) sees of a responder: the kinds of
/// the frames it received and the error it ended with.
fn probe(responder: &Keys, flags_psk: Option<[u8; 32]>) -> (Vec<u8>, TunnelError) {
    let prober = Keys {
        library: LIBRARY,
        me: Some(instance(3)),
        members: vec![
            instance(1).to_remote_identity(),
            instance(2).to_remote_identity(),
        ],
        psk: flags_psk,
    };
    let outcome = run(&prober, responder, nodes(), |_, _| {});
    let (error, _) = both_fail(&outcome);
    let mut reader = FrameReader::new();
    let mut kinds = Vec::new();
    let mut rest = &outcome.r_to_i[..];
    while !rest.is_empty() {
        let (used, done) = reader.push(rest);
        assert!(used > 0 || done, "a reader given bytes makes progress");
        rest = &rest[used..];
        if done {
            kinds.push(reader.frame()[0]);
            reader.clear();
        }
    }
    (kinds, error)
}

#[test]
fn a_stranger_learns_neither_the_responders_instance_nor_whether_it_holds_the_library() {
    let (_, holder) = members();
    let stranger_to_it = Keys {
        library: LibraryId::from_bytes([0x22; 16]),
        ..holder.clone()
    };
    let with_secret = Keys {
        psk: Some([9; 32]),
        ..holder.clone()
    };
    // Without a PSK flag: a Noise message without payload, then "not a
    // member", from a node with the library, without it, or with a
    // secret for it.
    let expected = (vec![1, 2], TunnelError::Rejected(RejectCode::NotMember));
    assert_eq!(probe(&holder, None), expected);
    assert_eq!(probe(&stranger_to_it, None), expected);
    // (A member would be told the secret is missing; a stranger is not.)
    assert_eq!(probe(&with_secret, None), expected);
    // With the PSK flag and a guessed secret: "authentication failed" from
    // all three alike.
    let expected = (
        vec![1, 2],
        TunnelError::Rejected(RejectCode::AuthenticationFailed),
    );
    // Guesses include the obvious ones: a node without a secret stands in
    // a random one, not a fixed value a prober could guess.
    for guess in [[1; 32], [0; 32], [0xff; 32]] {
        assert_eq!(probe(&holder, Some(guess)), expected);
        assert_eq!(probe(&stranger_to_it, Some(guess)), expected);
        assert_eq!(probe(&with_secret, Some(guess)), expected);
    }
}

#[test]
fn an_unknown_library_fails_both_sides() {
    let (a, mut b) = members();
    b.library = LibraryId::from_bytes([0x22; 16]);
    let outcome = run(&a, &b, nodes(), |_, _| {});
    // The responder knows why; the initiator is told what any stranger
    // would be.
    assert_eq!(
        both_fail(&outcome),
        (
            TunnelError::Rejected(RejectCode::NotMember),
            TunnelError::UnknownLibrary
        )
    );
    // And an initiator cannot open a tunnel for a library it is not in.
    let (mut a, b) = members();
    a.me = None;
    let outcome = run(&a, &b, nodes(), |_, _| {});
    assert!(matches!(
        outcome.initiator,
        Err(TunnelError::UnknownLibrary)
    ));
}

#[test]
fn an_initiator_the_responder_does_not_accept_fails_both_sides() {
    let (a, mut b) = members();
    b.members.retain(|m| *m != instance(1).to_remote_identity());
    let outcome = run(&a, &b, nodes(), |_, _| {});
    assert_eq!(
        both_fail(&outcome),
        (
            TunnelError::Rejected(RejectCode::NotMember),
            TunnelError::NotMember
        )
    );
}

#[test]
fn a_responder_that_is_not_a_member_fails_both_sides() {
    let (mut a, b) = members();
    a.members.retain(|m| *m != instance(2).to_remote_identity());
    let outcome = run(&a, &b, nodes(), |_, _| {});
    assert_eq!(
        both_fail(&outcome),
        (
            TunnelError::NotMember,
            TunnelError::Rejected(RejectCode::NotMember)
        )
    );
}

#[test]
fn a_handshake_relayed_onto_another_connection_fails_both_sides() {
    let (a, b) = members();
    let other = NodePair {
        initiator: Identity::from_bytes(&[0xc3; 32]).to_remote_identity(),
        responder: nodes().responder,
    };
    let outcome = run(&a, &b, other, |_, _| {});
    assert_eq!(
        both_fail(&outcome),
        (
            TunnelError::Decrypt,
            TunnelError::Rejected(RejectCode::AuthenticationFailed)
        )
    );
}

#[test]
fn every_flipped_handshake_bit_fails_both_sides() {
    let (a, b) = members();
    let clean = run(&a, &b, nodes(), |_, _| {});
    for (to_responder, len) in [(true, clean.i_to_r.len()), (false, clean.r_to_i.len())] {
        for pos in 0..len {
            let mut offset = 0usize;
            let outcome = run(&a, &b, nodes(), |dir, bytes| {
                if dir == to_responder {
                    if let Some(b) = pos.checked_sub(offset).and_then(|p| bytes.get_mut(p)) {
                        *b ^= 0x01;
                    }
                    offset += bytes.len();
                }
            });
            let ok = outcome.initiator.is_ok() && outcome.responder.is_ok();
            assert!(!ok, "flip at byte {pos} ({to_responder}) went unnoticed");
            assert!(
                outcome.initiator.is_err() && outcome.responder.is_err(),
                "flip at byte {pos} toward responder={to_responder}: both sides must fail"
            );
        }
    }
}

#[test]
fn truncated_and_replayed_handshake_messages_fail() {
    let (a, b) = members();
    // The stream ends in the middle of the initiator's first flight.
    let outcome = run(&a, &b, nodes(), |dir, bytes| {
        if dir {
            bytes.truncate(10);
        }
    });
    assert!(outcome.initiator.is_err() && outcome.responder.is_err());
    // A Noise message cut short inside a consistent frame.
    let outcome = run(&a, &b, nodes(), |dir, bytes| {
        if !dir && bytes.len() > 40 {
            let keep = bytes.len() - 20;
            bytes.truncate(keep);
            let body = (keep - 2) as u16;
            bytes[..2].copy_from_slice(&body.to_be_bytes());
        }
    });
    assert!(outcome.initiator.is_err() && outcome.responder.is_err());

    // Replaying the responder's recorded answer to a new initiator fails:
    // it was made for another ephemeral key.
    let recorded = run(&a, &b, nodes(), |_, _| {}).r_to_i;
    let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [77; 32]).unwrap();
    let mut sent = Vec::new();
    initiator.take_output(&mut sent);
    assert_eq!(
        initiator.handle_input(&recorded, &a),
        Err(TunnelError::Decrypt)
    );
    // Replaying the initiator's first flight twice to one responder fails.
    let first = run(&a, &b, nodes(), |_, _| {}).i_to_r;
    let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
    let flight_len = 2 + 19 + 2 + 1 + 32;
    responder.handle_input(&first[..flight_len], &b).unwrap();
    assert!(matches!(
        responder.handle_input(&first[..flight_len], &b),
        Err(TunnelError::Protocol(_))
    ));
}

#[test]
fn transport_rejects_tampering_reordering_loss_and_replay() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut frames = Vec::new();
    for i in 0..4u8 {
        let mut frame = vec![0u8; sealed_len(10)];
        let n = tx.seal(&[i; 10], &mut frame).unwrap();
        frames.push(frame[2..n].to_vec());
    }
    let mut plain = [0u8; 64];
    assert_eq!(rx.open(&frames[0], &mut plain), Ok(10));
    // Replay of message 0.
    assert_eq!(rx.open(&frames[0], &mut plain), Err(TunnelError::Decrypt));
    // The transport is dead after a failure.
    assert_eq!(rx.open(&frames[1], &mut plain), Err(TunnelError::Failed));

    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut sealed = Vec::new();
    for i in 0..3u8 {
        let mut frame = vec![0u8; sealed_len(4)];
        let n = tx.seal(&[i; 4], &mut frame).unwrap();
        sealed.push(frame[2..n].to_vec());
    }
    // Message 1 dropped: message 2 does not open.
    assert_eq!(rx.open(&sealed[0], &mut plain), Ok(4));
    assert_eq!(rx.open(&sealed[2], &mut plain), Err(TunnelError::Decrypt));
    // Too short to hold a tag.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (_, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    assert_eq!(rx.open(&[0; 15], &mut plain), Err(TunnelError::Decrypt));
}

#[test]
fn rekeying_keeps_both_sides_in_step() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    tx.set_rekey_interval(3);
    rx.set_rekey_interval(3);
    let data = vec![0x5a; 100];
    let mut frame = vec![0u8; sealed_len(100)];
    let mut plain = [0u8; 100];
    let mut first = Vec::new();
    for i in 0..10 {
        let n = tx.seal(&data, &mut frame).unwrap();
        if i == 0 {
            first = frame[..n].to_vec();
        }
        // After a rekey the same plaintext at the same nonce position of a
        // new key looks different; it still opens.
        assert_eq!(rx.open(&frame[2..n], &mut plain), Ok(100), "message {i}");
    }
    assert_ne!(first, frame[..first.len()].to_vec());
    // A receiver that does not rekey falls out of step.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    tx.set_rekey_interval(2);
    let mut results = Vec::new();
    for _ in 0..3 {
        let n = tx.seal(&data, &mut frame).unwrap();
        results.push(rx.open(&frame[2..n], &mut plain));
    }
    assert_eq!(results[2], Err(TunnelError::Decrypt));
}

#[test]
fn buffers_and_sizes_are_checked() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let mut small = [0u8; 10];
    assert_eq!(tx.seal(&[0; 10], &mut small), Err(TunnelError::Buffer));
    let mut big = vec![0u8; sealed_len(MAX_PLAINTEXT_LEN + 1)];
    assert_eq!(
        tx.seal(&vec![0; MAX_PLAINTEXT_LEN + 1], &mut big),
        Err(TunnelError::Buffer)
    );
    assert_eq!(
        tx.seal(&vec![0; MAX_PLAINTEXT_LEN], &mut big)
            .map(|n| n - 2),
        Ok(MAX_FRAME_LEN)
    );
}

/// The transcripts in docs/PROTOCOL.md §8.6: both byte streams of a
/// handshake with fixed seeds and keys, without and with a pre-shared
/// secret, checked against the document.
#[test]
fn the_documented_transcripts_match() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut a_psk, mut b_psk) = members();
    a_psk.psk = Some([0x33; 32]);
    b_psk.psk = Some([0x33; 32]);
    let with_psk = run(&a_psk, &b_psk, nodes(), |_, _| {});
    assert!(with_psk.initiator.is_ok() && with_psk.responder.is_ok());
    if std::env::var_os("POS_P2P_PRINT_TRANSCRIPT").is_some() {
        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        println!("I->R {}", hex(&outcome.i_to_r));
        println!("R->I {}", hex(&outcome.r_to_i));
        println!("psk I->R {}", hex(&with_psk.i_to_r));
        println!("psk R->I {}", hex(&with_psk.r_to_i));
    }
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let section = |marker: &str| -> String {
        let start = doc
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in PROTOCOL.md"));
        let rest = &doc[start + marker.len()..];
        let rest = &rest[rest.find("```").unwrap() + 3..];
        let rest = &rest[rest.find('\n').unwrap() + 1..];
        let block = &rest[..rest.find("```").unwrap()];
        block.chars().filter(|c| c.is_ascii_hexdigit()).collect()
    };
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    assert_eq!(
        hex(&outcome.i_to_r),
        section("Initiator to responder:"),
        "initiator's bytes"
    );
    assert_eq!(
        hex(&outcome.r_to_i),
        section("Responder to initiator:"),
        "responder's bytes"
    );
    assert_eq!(
        hex(&with_psk.i_to_r),
        section("With the secret, initiator to responder:"),
        "initiator's bytes, XXpsk3"
    );
    assert_eq!(
        hex(&with_psk.r_to_i),
        section("With the secret, responder to initiator:"),
        "responder's bytes, XXpsk3"
    );
}

/// The transport's own AES-GCM cipher states are Noise's: they interoperate
/// with snow's transport in both directions, across rekeys, and a copy
/// (`Clone`) opens what the original would.
#[test]
fn the_transport_is_noise_transport_including_rekey() {
    let params: snow::params::NoiseParams = "Noise_NN_25519_AESGCM_SHA256".parse().unwrap();
    let mut i = snow::Builder::new(params.clone())
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params).build_responder().unwrap();
    let mut buf = [0u8; 256];
    let mut scratch = [0u8; 256];
    let n = i.write_message(&[], &mut buf).unwrap();
    r.read_message(&buf[..n], &mut scratch).unwrap();
    let n = r.write_message(&[], &mut buf).unwrap();
    i.read_message(&buf[..n], &mut scratch).unwrap();
    let (k1, k2) = i.dangerously_get_raw_split();
    let mut ours = TunnelTransport::new(&k1, &k2).unwrap();
    let mut theirs = r.into_transport_mode().unwrap();
    ours.set_rekey_interval(3);
    let mut frame = vec![0u8; sealed_len(64)];
    let mut plain = [0u8; 64];
    for round in 0..10u8 {
        let message = [round; 40];
        // Ours to snow.
        let n = ours.seal(&message, &mut frame).unwrap();
        let got = theirs.read_message(&frame[2..n], &mut plain).unwrap();
        assert_eq!(&plain[..got], &message, "round {round}: snow opens ours");
        // Snow to ours.
        let n = theirs.write_message(&message, &mut buf).unwrap();
        let mut copy = ours.receive_only_copy();
        assert_eq!(copy.seal(b"x", &mut frame), Err(TunnelError::Ended));
        assert_eq!(ours.open(&buf[..n], &mut plain), Ok(40), "round {round}");
        assert_eq!(&plain[..40], &message);
        assert_eq!(
            copy.open(&buf[..n], &mut plain),
            Ok(40),
            "a copy opens it too"
        );
        if (round + 1) % 3 == 0 {
            theirs.rekey_outgoing();
            theirs.rekey_incoming();
        }
    }
}

/// Keys that leave `psk` to the trait's default.
struct DefaultPsk<'a>(&'a Keys);

impl LibraryKeys for DefaultPsk<'_> {
    fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
        self.0.local_instance(library)
    }

    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
        self.0.is_member(library, instance)
    }
}

#[test]
fn keys_without_a_secret_run_plain_xx() {
    let (a, b) = members();
    let plain = run(&a, &b, nodes(), |_, _| {});
    let defaulted = run(&DefaultPsk(&a), &DefaultPsk(&b), nodes(), |_, _| {});
    assert!(defaulted.initiator.is_ok() && defaulted.responder.is_ok());
    assert_eq!(
        defaulted.i_to_r, plain.i_to_r,
        "the same bytes as without a secret"
    );
    assert_eq!(defaulted.r_to_i, plain.r_to_i);
}

/// The responder's accept and its first transport message can arrive in
/// one read: the handshake takes its own bytes and leaves the rest for the
/// transport.
#[test]
fn the_handshake_leaves_what_follows_it_to_the_transport() {
    let (a, b) = members();
    let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
    let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
    let mut to_r = Vec::new();
    let mut to_i = Vec::new();
    for _ in 0..4 {
        if responder.is_done() {
            break;
        }
        initiator.take_output(&mut to_r);
        let used = responder.handle_input(&to_r, &b).unwrap();
        to_r.drain(..used);
        responder.take_output(&mut to_i);
        if !responder.is_done() {
            let used = initiator.handle_input(&to_i, &a).unwrap();
            to_i.drain(..used);
        }
    }
    assert!(
        responder.is_done(),
        "the responder finished in two round trips"
    );
    // to_i holds the accept; the responder's first message follows it.
    let accept_len = to_i.len();
    let (mut r_transport, _) = responder.into_transport().unwrap();
    let mut frame = vec![0u8; sealed_len(5)];
    let n = r_transport.seal(b"first", &mut frame).unwrap();
    to_i.extend_from_slice(&frame[..n]);
    let used = initiator.handle_input(&to_i, &a).unwrap();
    assert!(initiator.is_done());
    assert_eq!(used, accept_len, "only the handshake's bytes are taken");
    let (mut i_transport, _) = initiator.into_transport().unwrap();
    let mut plain = [0u8; 5];
    assert_eq!(i_transport.open(&to_i[used + 2..], &mut plain), Ok(5));
    assert_eq!(&plain, b"first");
}

#[test]
fn a_handshake_shows_its_role_and_stage_but_no_keys() {
    let (a, _) = members();
    let initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
    let shown = format!("{initiator:?}");
    assert!(shown.starts_with("TunnelHandshake {"), "{shown}");
    assert!(shown.contains("role: Initiator"), "{shown}");
    assert!(shown.contains("library:"), "{shown}");
}

#[test]
fn a_buffer_too_small_is_not_a_failure_and_the_message_still_opens() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut frame = vec![0u8; sealed_len(100)];
    let n = tx.seal(&[7; 100], &mut frame).unwrap();
    let mut small = [0u8; 99];
    assert_eq!(rx.open(&frame[2..n], &mut small), Err(TunnelError::Buffer));
    let mut plain = [0u8; 100];
    assert_eq!(rx.open(&frame[2..n], &mut plain), Ok(100));
    assert_eq!(plain, [7; 100]);
    // Sealing into too small a buffer is refused the same way.
    assert_eq!(
        tx.seal(&[7; 100], &mut frame[..n - 1]),
        Err(TunnelError::Buffer)
    );
}

#[test]
fn the_rekey_interval_is_the_documented_one() {
    // A peer that rekeys at another interval cannot read us after it.
    assert_eq!(super::transport::REKEY_INTERVAL, 1 << 20);
    let doc = include_str!("../../../docs/PROTOCOL.md");
    assert!(doc.contains("after every 2^20 messages"));
}

#[test]
fn a_transport_shows_its_counters_but_no_keys() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (tx, _) = outcome.initiator.unwrap();
    let shown = format!("{tx:?}");
    assert!(shown.starts_with("TunnelTransport {"), "{shown}");
    assert!(shown.contains("sent: 0"), "{shown}");
    assert!(!shown.contains("key"), "{shown}");
}

#[test]
fn a_library_id_shows_as_hex() {
    let id = LibraryId::from_bytes([0xab; 16]);
    assert_eq!(format!("{id:?}"), format!("LibraryId({})", "ab".repeat(16)));
}

#[test]
fn each_direction_ends_with_an_authenticated_end() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut frame = vec![0u8; sealed_len(100)];
    let mut plain = [0u8; 100];
    // An empty plaintext is reserved for the end.
    assert_eq!(tx.seal(&[], &mut frame), Err(TunnelError::Buffer));
    let n = tx.seal(b"last words", &mut frame).unwrap();
    assert_eq!(rx.open(&frame[2..n], &mut plain), Ok(10));
    // The stream ending here, before the end, is a truncation.
    assert!(!rx.is_end_received());
    assert!(!tx.is_end_sent());
    let n = tx.seal_end(&mut frame).unwrap();
    assert!(tx.is_end_sent());
    assert_eq!(n, sealed_len(0));
    assert!(tx.is_end_sent());
    assert_eq!(tx.seal(b"more", &mut frame), Err(TunnelError::Ended));
    assert_eq!(tx.seal_end(&mut frame), Err(TunnelError::Ended));
    let end = frame[2..n].to_vec();
    assert_eq!(rx.open(&end, &mut plain), Ok(0));
    assert!(rx.is_end_received());
    assert_eq!(rx.handle_eof(), Ok(()));
    // Nothing is read after the end.
    assert_eq!(rx.open(&end, &mut plain), Err(TunnelError::Ended));
    assert_eq!(rx.open(&end, &mut plain), Err(TunnelError::Failed));
}

#[test]
fn a_stream_that_stops_without_the_end_is_truncated() {
    let (a, b) = members();
    // Before any message.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut rx, _) = outcome.responder.unwrap();
    assert_eq!(rx.handle_eof(), Err(TunnelError::Truncated));
    // After data, at a message boundary.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut frame = vec![0u8; sealed_len(4)];
    let mut plain = [0u8; 4];
    let n = tx.seal(b"half", &mut frame).unwrap();
    assert_eq!(rx.open(&frame[2..n], &mut plain), Ok(4));
    assert_eq!(rx.handle_eof(), Err(TunnelError::Truncated));
    // The transport is done for.
    assert_eq!(rx.open(&frame[2..n], &mut plain), Err(TunnelError::Failed));
}

#[test]
fn a_reject_counts_only_as_the_initiators_first_frame_after_the_handshake() {
    let (a, b) = members();
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (_, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut plain = [0u8; 16];
    assert_eq!(
        rx.open(&[2, 3], &mut plain),
        Err(TunnelError::Rejected(RejectCode::BadSignature))
    );
    // After a message, the same two bytes are a message that fails.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut tx, _) = outcome.initiator.unwrap();
    let (mut rx, _) = outcome.responder.unwrap();
    let mut frame = vec![0u8; sealed_len(1)];
    let n = tx.seal(b"x", &mut frame).unwrap();
    assert_eq!(rx.open(&frame[2..n], &mut plain), Ok(1));
    assert_eq!(rx.open(&[2, 3], &mut plain), Err(TunnelError::Decrypt));
    // The initiator's transport opened the accept already: a responder's
    // "reject" after it is no reject.
    let outcome = run(&a, &b, nodes(), |_, _| {});
    let (mut initiator, _) = outcome.initiator.unwrap();
    assert_eq!(
        initiator.open(&[2, 3], &mut plain),
        Err(TunnelError::Decrypt)
    );
}

#[test]
fn a_rejection_is_never_answered() {
    let (a, _) = members();
    let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
    let mut sent = Vec::new();
    initiator.take_output(&mut sent);
    assert_eq!(
        initiator.handle_input(&[0, 2, 2, 4], &a),
        Err(TunnelError::Rejected(RejectCode::Incompatible))
    );
    let mut answer = Vec::new();
    initiator.take_output(&mut answer);
    assert!(answer.is_empty(), "{answer:?}");
    // A code this version does not know is reported as it is.
    let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
    assert_eq!(
        initiator.handle_input(&[0, 2, 2, 200], &a),
        Err(TunnelError::Rejected(RejectCode::Other(200)))
    );
    // A reject frame of another size is a malformed frame, and answered.
    let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
    initiator.take_output(&mut sent);
    assert_eq!(
        initiator.handle_input(&[0, 3, 2, 4, 4], &a),
        Err(TunnelError::Protocol("malformed reject"))
    );
    initiator.take_output(&mut answer);
    assert_eq!(answer, [0, 2, 2, 6]);
}

#[test]
fn the_hello_is_checked_in_the_documented_order() {
    let (_, b) = members();
    let hello = |version: u8, flags: u8, library: [u8; 16]| {
        let mut frame = vec![0, 19, 0, version, flags];
        frame.extend_from_slice(&library);
        frame
    };
    let answer = |input: &[u8]| {
        let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
        let result = responder.handle_input(input, &b);
        let mut out = Vec::new();
        responder.take_output(&mut out);
        (result.err(), out)
    };
    // Size first: a hello of 18 bytes is malformed, whatever it says.
    assert_eq!(
        answer(&[
            0, 18, 0, 9, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]),
        (
            Some(TunnelError::Protocol("malformed hello")),
            vec![0, 2, 2, 6]
        )
    );
    // Then the version, then reserved flag bits: both INCOMPATIBLE, for a
    // library the responder holds or not.
    for library in [*LIBRARY.as_bytes(), [0x99; 16]] {
        for (version, flags) in [(1, 0), (3, 1), (2, 0x02), (2, 0x80)] {
            assert_eq!(
                answer(&hello(version, flags, library)),
                (Some(TunnelError::Incompatible), vec![0, 2, 2, 4]),
                "version {version} flags {flags:#x}"
            );
        }
        // A valid hello for any library is answered alike: nothing yet.
        assert_eq!(answer(&hello(2, 0, library)), (None, vec![]));
        assert_eq!(answer(&hello(2, 1, library)), (None, vec![]));
    }
}

#[test]
fn an_accept_that_is_not_exactly_a_proof_is_a_protocol_violation() {
    let (a, b) = members();
    for extra in [-1i32, 1] {
        let outcome = run(&a, &b, nodes(), |dir, bytes| {
            // The accept is the responder's last frame: 2 + 1 + 96 + 16.
            if !dir && bytes.len() >= 115 && bytes[bytes.len() - 113] == 3 {
                let start = bytes.len() - 115;
                let len = (113 + extra) as u16;
                bytes[start..start + 2].copy_from_slice(&len.to_be_bytes());
                if extra > 0 {
                    bytes.push(0);
                } else {
                    bytes.pop();
                }
            }
        });
        assert_eq!(
            outcome.initiator.as_ref().err(),
            Some(&TunnelError::Protocol("malformed accept")),
            "{extra}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_handshake_and_plaintext(
        chunks in proptest::collection::vec(1usize..40, 1..8),
        data in proptest::collection::vec(any::<u8>(), 0..5000),
    ) {
        let (a, b) = members();
        let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
        let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
        let (mut to_r, mut to_i) = (Vec::new(), Vec::new());
        let mut k = 0;
        let mut next = || { k += 1; chunks[k % chunks.len()] };
        for _ in 0..5000 {
            if initiator.is_done() && responder.is_done() { break; }
            initiator.take_output(&mut to_r);
            let n = next().min(to_r.len());
            let used = responder.handle_input(&to_r[..n], &b).unwrap();
            prop_assert!(used <= n);
            to_r.drain(..used);
            responder.take_output(&mut to_i);
            let n = next().min(to_i.len());
            let used = initiator.handle_input(&to_i[..n], &a).unwrap();
            to_i.drain(..used);
        }
        prop_assert!(initiator.is_done() && responder.is_done());
        let (mut tx, _) = initiator.into_transport().unwrap();
        let (mut rx, _) = responder.into_transport().unwrap();
        // Send in small messages, deliver the byte stream in arbitrary chunks.
        let mut stream = Vec::new();
        let mut frame = vec![0u8; sealed_len(1000)];
        for piece in data.chunks(997) {
            let n = tx.seal(piece, &mut frame).unwrap();
            stream.extend_from_slice(&frame[..n]);
        }
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        let mut plain = vec![0u8; 1000];
        let mut pos = 0;
        while pos < stream.len() {
            let end = (pos + next()).min(stream.len());
            let (used, done) = reader.push(&stream[pos..end]);
            assert!(used > 0 || done, "a reader given bytes makes progress");
            pos += used;
            if done {
                let m = rx.open(reader.frame(), &mut plain).unwrap();
                got.extend_from_slice(&plain[..m]);
                reader.clear();
            }
        }
        prop_assert_eq!(got, data);
    }

    #[test]
    fn any_single_byte_corruption_of_a_message_is_detected(
        data in proptest::collection::vec(any::<u8>(), 1..200),
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (a, b) = members();
        let outcome = run(&a, &b, nodes(), |_, _| {});
        let (mut tx, _) = outcome.initiator.unwrap();
        let (mut rx, _) = outcome.responder.unwrap();
        let mut frame = vec![0u8; sealed_len(data.len())];
        let n = tx.seal(&data, &mut frame).unwrap();
        let body = &mut frame[2..n];
        let i = pos.index(body.len());
        body[i] ^= flip;
        let mut plain = vec![0u8; data.len()];
        prop_assert_eq!(rx.open(body, &mut plain), Err(TunnelError::Decrypt));
    }
}

#[test]
fn errors_are_sticky() {
    // Found by the tunnel_responder fuzz target: after a failure, later
    // input must report `Failed`, not the first error again.
    let (_, b) = members();
    let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
    let mut hello = vec![0, 19, 0, 1, 0];
    hello.extend_from_slice(&[0x99; 16]);
    assert_eq!(
        responder.handle_input(&hello, &b),
        Err(TunnelError::Incompatible),
        "version 1"
    );
    assert_eq!(responder.handle_input(&[0], &b), Err(TunnelError::Failed));
}
