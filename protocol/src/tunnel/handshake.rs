//! [`TunnelHandshake`]: the hello, the Noise XX handshake with signed
//! instance keys, and the responder's accept.
//!
//! The initiator proves its instance first (in message 3); the responder
//! proves its own only in the accept, once it has checked the initiator's,
//! and refuses every stranger the same way whether or not it holds the
//! library (PROTOCOL.md §8.7).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::DHChoice;
use snow::resolvers::CryptoResolver;
use zeroize::Zeroizing;

use super::frame::{FrameReader, write_frame};
use super::rng::SeededResolver;
use super::transport::TunnelTransport;
use super::{LibraryId, LibraryKeys, NodePair, RejectCode, TunnelError, TunnelInfo};
use crate::{Identity, RemoteIdentity, SIGNATURE_LEN};

/// The tunnel protocol's label: the start of the prologue and of every
/// signed message.
pub(crate) const LABEL: &[u8] = b"pos-p2p/tunnel/2";
const VERSION: u8 = 2;
const FLAG_PSK: u8 = 0x01;
const PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";
const PATTERN_PSK: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";

/// Handshake frame kinds (the first byte of each handshake frame).
const KIND_HELLO: u8 = 0;
const KIND_NOISE: u8 = 1;
pub(crate) const KIND_REJECT: u8 = 2;
const KIND_ACCEPT: u8 = 3;

/// An instance key and its signature.
const PROOF_LEN: usize = 32 + SIGNATURE_LEN;
/// The AEAD tag of a transport message.
const TAG_LEN: usize = 16;
/// Room for any Noise handshake message here.
const NOISE_BUF: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Responder: waiting for the hello.
    AwaitHello,
    /// Responder: waiting for Noise message 1.
    AwaitMessage1,
    /// Initiator: waiting for message 2 (or a rejection).
    AwaitMessage2,
    /// Responder: waiting for message 3 (or a rejection).
    AwaitMessage3,
    /// Initiator: waiting for the accept (or a rejection).
    AwaitAccept,
    Done,
    Failed,
}

/// A tunnel handshake in progress, as initiator or responder.
///
/// Drive it like any sans-IO machine: send what
/// [`take_output`](Self::take_output) gives, feed what arrives to
/// [`handle_input`](Self::handle_input) (which consumes only handshake
/// bytes), until [`is_done`](Self::is_done); then
/// [`into_transport`](Self::into_transport).
pub struct TunnelHandshake {
    role: Role,
    stage: Stage,
    nodes: NodePair,
    seed: [u8; 32],
    noise: Option<snow::HandshakeState>,
    transport: Option<TunnelTransport>,
    library: Option<LibraryId>,
    instance: Option<Identity>,
    static_public: Vec<u8>,
    /// The other side's Noise static key, kept for checking its proof in
    /// the accept (the initiator).
    remote_static: Vec<u8>,
    /// The handshake hash after message 3, which the responder's proof
    /// signs.
    final_hash: Vec<u8>,
    /// Responder: why it will refuse the initiator once the initiator has
    /// proven its instance (no instance of the library here, or the PSK
    /// flag disagrees). Refusing at the hello would tell a stranger.
    refusal: Option<TunnelError>,
    remote_instance: Option<RemoteIdentity>,
    reader: FrameReader,
    output: Vec<u8>,
    error: Option<TunnelError>,
}

impl core::fmt::Debug for TunnelHandshake {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TunnelHandshake")
            .field("role", &self.role)
            .field("stage", &self.stage)
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl TunnelHandshake {
    /// Open a tunnel for `library`, as this node's instance of it.
    /// `rng_seed` must be fresh for every tunnel (take it from a CSPRNG):
    /// it makes the Noise keys.
    pub fn initiator(
        nodes: NodePair,
        library: LibraryId,
        keys: &dyn LibraryKeys,
        rng_seed: [u8; 32],
    ) -> Result<Self, TunnelError> {
        let instance = keys
            .local_instance(&library)
            .ok_or(TunnelError::UnknownLibrary)?;
        let psk = keys.psk(&library).map(Zeroizing::new);
        let hello = hello_bytes(library, psk.is_some());
        let mut this = Self::new(Role::Initiator, nodes, rng_seed);
        this.library = Some(library);
        this.instance = Some(instance);
        let mut noise = this.build(&hello, psk.as_deref())?;
        let mut msg = [0u8; NOISE_BUF];
        let n = noise
            .write_message(&[], &mut msg)
            .map_err(|_| TunnelError::Crypto)?;
        write_frame(&mut this.output, &[&hello])?;
        write_frame(&mut this.output, &[&[KIND_NOISE], &msg[..n]])?;
        this.noise = Some(noise);
        this.stage = Stage::AwaitMessage2;
        Ok(this)
    }

    /// Answer a tunnel; the library and everything else come from the
    /// initiator and from `keys` (given to `handle_input`).
    pub fn responder(nodes: NodePair, rng_seed: [u8; 32]) -> Self {
        let mut this = Self::new(Role::Responder, nodes, rng_seed);
        this.stage = Stage::AwaitHello;
        this
    }

    fn new(role: Role, nodes: NodePair, seed: [u8; 32]) -> Self {
        Self {
            role,
            stage: Stage::AwaitHello,
            nodes,
            seed,
            noise: None,
            transport: None,
            library: None,
            instance: None,
            static_public: Vec::new(),
            remote_static: Vec::new(),
            final_hash: Vec::new(),
            refusal: None,
            remote_instance: None,
            reader: FrameReader::new(),
            output: Vec::new(),
            error: None,
        }
    }

    /// Build the Noise state: pattern by PSK, a fresh static key from the
    /// seed, and the prologue binding both nodes and the hello.
    fn build(
        &mut self,
        hello: &[u8],
        psk: Option<&[u8; 32]>,
    ) -> Result<snow::HandshakeState, TunnelError> {
        let pattern = if psk.is_some() { PATTERN_PSK } else { PATTERN };
        let params: snow::params::NoiseParams = pattern.parse().map_err(|_| TunnelError::Crypto)?;
        // The resolver's generator (stream 0) makes the ephemeral key; the
        // static key comes from stream 1 of the same seed.
        let mut static_rng = ChaCha20Rng::from_seed(self.seed);
        static_rng.set_stream(1);
        let mut private = Zeroizing::new([0u8; 32]);
        static_rng.fill_bytes(private.as_mut());
        let resolver = SeededResolver::new(self.seed);
        let mut dh = resolver
            .resolve_dh(&DHChoice::Curve25519)
            .ok_or(TunnelError::Crypto)?;
        dh.set(private.as_ref());
        self.static_public = dh.pubkey().to_vec();
        let prologue = prologue(&self.nodes, hello);
        let mut builder = snow::Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(private.as_ref())
            .map_err(|_| TunnelError::Crypto)?
            .prologue(&prologue)
            .map_err(|_| TunnelError::Crypto)?;
        if let Some(psk) = psk {
            builder = builder.psk(3, psk).map_err(|_| TunnelError::Crypto)?;
        }
        match self.role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(|_| TunnelError::Crypto)
    }

    /// Bytes to send to the other side. Call after creating the handshake
    /// and after every `handle_input`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// Whether the handshake completed; [`into_transport`](Self::into_transport) next.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Feed bytes from the other side. Returns how many were consumed:
    /// never more than the handshake needs, so bytes after it (the first
    /// transport messages) stay with the caller.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        keys: &dyn LibraryKeys,
    ) -> Result<usize, TunnelError> {
        if self.error.is_some() {
            // Sticky: the first call reported why.
            return Err(TunnelError::Failed);
        }
        let mut used = 0;
        while self.stage != Stage::Done && used < input.len() {
            let (n, complete) = self.reader.push(&input[used..]);
            used += n;
            if !complete {
                break;
            }
            let frame = self.reader.frame().to_vec();
            self.reader.clear();
            if let Err(error) = self.handle_frame(&frame, keys) {
                // Tell the other side, so that both fail with a reason; a
                // rejection from the other side needs no answer.
                if let Some(code) = RejectCode::for_error(&error) {
                    let _ = write_frame(&mut self.output, &[&[KIND_REJECT, code.to_u8()]]);
                }
                self.stage = Stage::Failed;
                self.error = Some(error.clone());
                return Err(error);
            }
        }
        Ok(used)
    }

    fn handle_frame(&mut self, frame: &[u8], keys: &dyn LibraryKeys) -> Result<(), TunnelError> {
        let (&kind, body) = frame
            .split_first()
            .ok_or(TunnelError::Protocol("empty handshake frame"))?;
        if kind == KIND_REJECT && self.stage != Stage::AwaitHello {
            let [code] = body else {
                return Err(TunnelError::Protocol("malformed reject"));
            };
            return Err(TunnelError::Rejected(RejectCode::from_u8(*code)));
        }
        match (self.stage, kind) {
            (Stage::AwaitHello, KIND_HELLO) => self.on_hello(frame, keys),
            (Stage::AwaitMessage1, KIND_NOISE) => self.on_message1(body),
            (Stage::AwaitMessage2, KIND_NOISE) => self.on_message2(body),
            (Stage::AwaitMessage3, KIND_NOISE) => self.on_message3(body, keys),
            (Stage::AwaitAccept, KIND_ACCEPT) => self.on_accept(body, keys),
            _ => Err(TunnelError::Protocol("unexpected handshake frame")),
        }
    }

    /// The stream ended before the handshake did (or the caller gave up
    /// waiting): fail, and leave a rejection in the output for the other
    /// side in case its direction is still open.
    pub fn handle_eof(&mut self) -> TunnelError {
        let error = if self.stage == Stage::Done {
            return TunnelError::Protocol("stream ended");
        } else {
            TunnelError::Protocol("stream ended during the tunnel handshake")
        };
        if let Some(code) = RejectCode::for_error(&error) {
            let _ = write_frame(&mut self.output, &[&[KIND_REJECT, code.to_u8()]]);
        }
        self.stage = Stage::Failed;
        self.error = Some(error.clone());
        error
    }

    /// The hello, checked in the order of PROTOCOL.md §8.4: its size, the
    /// version, the reserved flag bits. Nothing about the library is
    /// decided yet: a responder without it, or with another idea of its
    /// secret, runs the handshake all the same and refuses only after the
    /// initiator has proven an instance.
    fn on_hello(&mut self, hello: &[u8], keys: &dyn LibraryKeys) -> Result<(), TunnelError> {
        let [KIND_HELLO, version, flags, id @ ..] = hello else {
            return Err(TunnelError::Protocol("malformed hello"));
        };
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| TunnelError::Protocol("malformed hello"))?;
        if *version != VERSION || flags & !FLAG_PSK != 0 {
            return Err(TunnelError::Incompatible);
        }
        let library = LibraryId::from_bytes(id);
        let instance = keys.local_instance(&library);
        let secret = instance
            .as_ref()
            .and_then(|_| keys.psk(&library))
            .map(Zeroizing::new);
        let wants_psk = flags & FLAG_PSK != 0;
        // Decided now, told after the initiator's proof (message 3); a
        // library this node does not hold is refused there too.
        self.refusal = match (&instance, &secret) {
            (Some(_), secret) if secret.is_some() != wants_psk => Some(TunnelError::Incompatible),
            _ => None,
        };
        // With the PSK flag but no matching secret here, a random one: the
        // initiator's message 3 then fails authentication, as it does for
        // a wrong secret.
        let psk = match secret {
            Some(secret) if wants_psk => Some(secret),
            _ if wants_psk => Some(self.random_psk()),
            _ => None,
        };
        self.library = Some(library);
        self.instance = instance;
        self.noise = Some(self.build(hello, psk.as_deref())?);
        self.stage = Stage::AwaitMessage1;
        Ok(())
    }

    /// A secret nobody knows, from the tunnel's seed (stream 2).
    fn random_psk(&self) -> Zeroizing<[u8; 32]> {
        let mut rng = ChaCha20Rng::from_seed(self.seed);
        rng.set_stream(2);
        let mut psk = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(psk.as_mut());
        psk
    }

    /// Message 1 (`-> e`, empty payload); answer with message 2 (`<- e, ee,
    /// s, es`), whose payload is empty too: the responder proves nothing
    /// before the initiator has.
    fn on_message1(&mut self, message: &[u8]) -> Result<(), TunnelError> {
        let noise = self.noise.as_mut().ok_or(TunnelError::Failed)?;
        let mut payload = [0u8; NOISE_BUF];
        let n = noise
            .read_message(message, &mut payload)
            .map_err(|_| TunnelError::Decrypt)?;
        if n != 0 {
            return Err(TunnelError::Protocol("message 1 has a payload"));
        }
        let mut msg = [0u8; NOISE_BUF];
        let n = noise
            .write_message(&[], &mut msg)
            .map_err(|_| TunnelError::Crypto)?;
        write_frame(&mut self.output, &[&[KIND_NOISE], &msg[..n]])?;
        self.stage = Stage::AwaitMessage3;
        Ok(())
    }

    /// Message 2; answer with message 3 (`-> s, se`), carrying this side's
    /// proof, and wait for the responder's in the accept.
    fn on_message2(&mut self, message: &[u8]) -> Result<(), TunnelError> {
        let noise = self.noise.as_mut().ok_or(TunnelError::Failed)?;
        let mut payload = [0u8; NOISE_BUF];
        let n = noise
            .read_message(message, &mut payload)
            .map_err(|_| TunnelError::Decrypt)?;
        if n != 0 {
            return Err(TunnelError::Protocol("message 2 has a payload"));
        }
        self.remote_static = noise
            .get_remote_static()
            .ok_or(TunnelError::Protocol("no static key"))?
            .to_vec();
        let proof = self.proof(self.noise_hash()?)?;
        let noise = self.noise.as_mut().ok_or(TunnelError::Failed)?;
        let mut msg = [0u8; NOISE_BUF];
        let n = noise
            .write_message(&proof, &mut msg)
            .map_err(|_| TunnelError::Crypto)?;
        write_frame(&mut self.output, &[&[KIND_NOISE], &msg[..n]])?;
        self.final_hash = noise.get_handshake_hash().to_vec();
        self.transport = Some(self.split()?);
        self.stage = Stage::AwaitAccept;
        Ok(())
    }

    /// Message 3: check the initiator's proof, then refuse it if this side
    /// decided so at the hello; else accept, with this side's proof as the
    /// accept's plaintext.
    fn on_message3(&mut self, message: &[u8], keys: &dyn LibraryKeys) -> Result<(), TunnelError> {
        let noise = self.noise.as_mut().ok_or(TunnelError::Failed)?;
        let hash_before = noise.get_handshake_hash().to_vec();
        let mut payload = [0u8; NOISE_BUF];
        let n = noise
            .read_message(message, &mut payload)
            .map_err(|_| TunnelError::Decrypt)?;
        let remote_static = noise
            .get_remote_static()
            .ok_or(TunnelError::Protocol("no static key"))?
            .to_vec();
        self.final_hash = noise.get_handshake_hash().to_vec();
        let instance =
            check_signature(&payload[..n], Role::Initiator, &hash_before, &remote_static)?;
        // A stranger is told "not a member" whether or not this node holds
        // the library (UNKNOWN_LIBRARY maps to that code on the wire).
        let library = self.library.ok_or(TunnelError::Failed)?;
        if self.instance.is_none() {
            return Err(TunnelError::UnknownLibrary);
        }
        if !keys.is_member(&library, &instance) {
            return Err(TunnelError::NotMember);
        }
        if let Some(refusal) = self.refusal.take() {
            return Err(refusal);
        }
        self.remote_instance = Some(instance);
        let proof = self.proof(self.final_hash.clone())?;
        let mut transport = self.split()?;
        let mut sealed = [0u8; 2 + PROOF_LEN + TAG_LEN];
        let n = transport.seal(&proof, &mut sealed)?;
        write_frame(&mut self.output, &[&[KIND_ACCEPT], &sealed[2..n]])?;
        self.transport = Some(transport);
        self.stage = Stage::Done;
        Ok(())
    }

    /// The accept: the responder's proof, as its first transport message.
    fn on_accept(&mut self, body: &[u8], keys: &dyn LibraryKeys) -> Result<(), TunnelError> {
        if body.len() != PROOF_LEN + TAG_LEN {
            return Err(TunnelError::Protocol("malformed accept"));
        }
        let transport = self.transport.as_mut().ok_or(TunnelError::Failed)?;
        let mut proof = [0u8; PROOF_LEN];
        transport.open(body, &mut proof)?;
        let instance = check_signature(
            &proof,
            Role::Responder,
            &self.final_hash,
            &self.remote_static,
        )?;
        let library = self.library.ok_or(TunnelError::Failed)?;
        if !keys.is_member(&library, &instance) {
            return Err(TunnelError::NotMember);
        }
        self.remote_instance = Some(instance);
        self.stage = Stage::Done;
        Ok(())
    }

    /// The handshake hash so far.
    fn noise_hash(&self) -> Result<Vec<u8>, TunnelError> {
        let noise = self.noise.as_ref().ok_or(TunnelError::Failed)?;
        Ok(noise.get_handshake_hash().to_vec())
    }

    /// The finished Noise state's cipher states.
    fn split(&mut self) -> Result<TunnelTransport, TunnelError> {
        let mut noise = self.noise.take().ok_or(TunnelError::Failed)?;
        if !noise.is_handshake_finished() {
            return Err(TunnelError::Crypto);
        }
        // Split(): the first key is the initiator's sending key.
        let (first, second) = noise.dangerously_get_raw_split();
        let (first, second) = (
            zeroize::Zeroizing::new(first),
            zeroize::Zeroizing::new(second),
        );
        match self.role {
            Role::Initiator => TunnelTransport::new(&first, &second),
            Role::Responder => TunnelTransport::new(&second, &first),
        }
    }

    /// This side's instance key and its signature over `hash`, the role,
    /// and this side's Noise static key.
    fn proof(&self, hash: Vec<u8>) -> Result<[u8; PROOF_LEN], TunnelError> {
        let instance = self.instance.as_ref().ok_or(TunnelError::Failed)?;
        let signed = signed_message(self.role, &hash, &self.static_public);
        let mut proof = [0u8; PROOF_LEN];
        proof[..32].copy_from_slice(instance.to_remote_identity().as_bytes());
        proof[32..].copy_from_slice(&instance.sign(&signed));
        Ok(proof)
    }

    /// The transport and what the handshake established.
    pub fn into_transport(self) -> Result<(TunnelTransport, TunnelInfo), TunnelError> {
        if self.stage != Stage::Done {
            return Err(self
                .error
                .unwrap_or(TunnelError::Protocol("handshake not done")));
        }
        let (Some(transport), Some(library), Some(remote_instance)) =
            (self.transport, self.library, self.remote_instance)
        else {
            return Err(TunnelError::Failed);
        };
        Ok((
            transport,
            TunnelInfo {
                library,
                remote_instance,
                nodes: self.nodes,
            },
        ))
    }
}

fn hello_bytes(library: LibraryId, psk: bool) -> [u8; 19] {
    let mut hello = [0u8; 19];
    hello[0] = KIND_HELLO;
    hello[1] = VERSION;
    hello[2] = if psk { FLAG_PSK } else { 0 };
    hello[3..].copy_from_slice(library.as_bytes());
    hello
}

/// `LABEL || initiator node || responder node || hello frame body`.
pub(crate) fn prologue(nodes: &NodePair, hello: &[u8]) -> Vec<u8> {
    let mut prologue = Vec::with_capacity(LABEL.len() + 64 + hello.len());
    prologue.extend_from_slice(LABEL);
    prologue.extend_from_slice(nodes.initiator.as_bytes());
    prologue.extend_from_slice(nodes.responder.as_bytes());
    prologue.extend_from_slice(hello);
    prologue
}

/// Check a proof (PROTOCOL.md §8.2): 96 bytes, a valid instance key, and its
/// signature by `signer` over `hash` and the signer's Noise static key.
/// Returns the proven instance.
fn check_signature(
    proof: &[u8],
    signer: Role,
    hash: &[u8],
    signer_static: &[u8],
) -> Result<RemoteIdentity, TunnelError> {
    let proof: &[u8; PROOF_LEN] = proof
        .try_into()
        .map_err(|_| TunnelError::Protocol("malformed instance proof"))?;
    let instance = match proof[..32].try_into().map(RemoteIdentity::from_bytes) {
        Ok(Ok(instance)) => instance,
        _ => return Err(TunnelError::BadSignature),
    };
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&proof[32..]);
    let signed = signed_message(signer, hash, signer_static);
    instance
        .verify(&signed, &signature)
        .map_err(|_| TunnelError::BadSignature)?;
    Ok(instance)
}

/// `LABEL || " sig " || role || handshake hash || Noise static key`.
fn signed_message(signer: Role, hash: &[u8], static_key: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(LABEL.len() + 6 + hash.len() + static_key.len());
    signed.extend_from_slice(LABEL);
    signed.extend_from_slice(b" sig ");
    signed.push(match signer {
        Role::Initiator => b'I',
        Role::Responder => b'R',
    });
    signed.extend_from_slice(hash);
    signed.extend_from_slice(static_key);
    signed
}

/// Impostors: a side that knows a member's public instance key but not its
/// secret, and proves the claim with a signature by another key. Only the
/// signature check stands between it and the member's place (without a
/// pre-shared secret).
#[cfg(test)]
mod forgery_tests {
    use super::*;
    use crate::tunnel::tests::{Keys, LIBRARY, instance, members, nodes};

    /// The frames in `bytes`, bodies only.
    fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = FrameReader::new();
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (used, done) = reader.push(bytes);
            assert!(done && used > 0, "whole frames");
            bytes = &bytes[used..];
            out.push(reader.frame().to_vec());
            reader.clear();
        }
        out
    }

    fn output(h: &mut TunnelHandshake) -> Vec<u8> {
        let mut out = Vec::new();
        h.take_output(&mut out);
        out
    }

    /// A proof that claims `claimed` and is signed by `signer` over `hash`
    /// and `h`'s Noise static key, in `h`'s role.
    fn forged_proof(
        h: &TunnelHandshake,
        hash: &[u8],
        claimed: [u8; 32],
        signer: &Identity,
    ) -> [u8; PROOF_LEN] {
        let signed = signed_message(h.role, hash, &h.static_public);
        let mut proof = [0u8; PROOF_LEN];
        proof[..32].copy_from_slice(&claimed);
        proof[32..].copy_from_slice(&signer.sign(&signed));
        proof
    }

    /// An initiator and a responder (`responder_keys`) run to the point
    /// where the responder has read message 3 and would accept; returns
    /// both, the responder's Noise state split, and the final hash.
    fn up_to_accept(responder_keys: &Keys) -> (TunnelHandshake, TunnelHandshake, Keys) {
        let (a, _) = members();
        let mut initiator = TunnelHandshake::initiator(nodes(), LIBRARY, &a, [5; 32]).unwrap();
        let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
        responder
            .handle_input(&output(&mut initiator), responder_keys)
            .unwrap();
        initiator.handle_input(&output(&mut responder), &a).unwrap();
        let message3 = frames(&output(&mut initiator));
        let noise = responder.noise.as_mut().unwrap();
        let mut payload = [0u8; NOISE_BUF];
        noise.read_message(&message3[0][1..], &mut payload).unwrap();
        responder.final_hash = noise.get_handshake_hash().to_vec();
        (initiator, responder, a)
    }

    /// A responder impostor's accept: claims `claimed`, signs with `signer`.
    fn accept_from_impostor(
        claimed: [u8; 32],
        signer: &Identity,
    ) -> (Result<usize, TunnelError>, Vec<Vec<u8>>) {
        let (_, b) = members();
        let keys = Keys {
            me: Some(signer.clone()),
            ..b
        };
        let (mut initiator, mut impostor, a) = up_to_accept(&keys);
        let proof = forged_proof(&impostor, &impostor.final_hash.clone(), claimed, signer);
        let mut transport = impostor.split().unwrap();
        let mut sealed = [0u8; 2 + PROOF_LEN + TAG_LEN];
        let n = transport.seal(&proof, &mut sealed).unwrap();
        let mut accept = Vec::new();
        write_frame(&mut accept, &[&[KIND_ACCEPT], &sealed[2..n]]).unwrap();
        let result = initiator.handle_input(&accept, &a);
        (result, frames(&output(&mut initiator)))
    }

    #[test]
    fn a_responder_proof_signed_by_another_key_fails_with_bad_signature() {
        let claimed = *instance(2).to_remote_identity().as_bytes();
        let (result, told) = accept_from_impostor(claimed, &instance(3));
        assert_eq!(result, Err(TunnelError::BadSignature));
        assert_eq!(
            told,
            vec![vec![KIND_REJECT, RejectCode::BadSignature.to_u8()]],
            "the impostor is told why"
        );
        // The same accept signed by the member's own key succeeds: the
        // signature is what made the difference.
        let (result, told) = accept_from_impostor(claimed, &instance(2));
        assert!(result.is_ok());
        assert!(told.is_empty());
    }

    #[test]
    fn a_claimed_key_that_is_no_valid_identity_fails_with_bad_signature() {
        // The identity point: small order, never a valid identity.
        let mut small_order = [0u8; 32];
        small_order[0] = 1;
        let (result, _) = accept_from_impostor(small_order, &instance(3));
        assert_eq!(result, Err(TunnelError::BadSignature));
    }

    #[test]
    fn an_initiator_proof_signed_by_another_key_fails_with_bad_signature() {
        let (_, b) = members();
        // The impostor has its own key (3) and claims member 1.
        let impostor_keys = Keys {
            me: Some(instance(3)),
            ..b.clone()
        };
        let mut impostor =
            TunnelHandshake::initiator(nodes(), LIBRARY, &impostor_keys, [5; 32]).unwrap();
        let mut responder = TunnelHandshake::responder(nodes(), [6; 32]);
        responder.handle_input(&output(&mut impostor), &b).unwrap();
        let message2 = frames(&output(&mut responder));
        let noise = impostor.noise.as_mut().unwrap();
        let mut payload = [0u8; NOISE_BUF];
        noise.read_message(&message2[0][1..], &mut payload).unwrap();
        let hash = noise.get_handshake_hash().to_vec();
        let forge = |impostor: &mut TunnelHandshake, signer: &Identity| {
            let claimed = *instance(1).to_remote_identity().as_bytes();
            let proof = forged_proof(impostor, &hash, claimed, signer);
            let mut msg = [0u8; NOISE_BUF];
            let noise = impostor.noise.as_mut().unwrap();
            let n = noise.write_message(&proof, &mut msg).unwrap();
            let mut out = Vec::new();
            write_frame(&mut out, &[&[KIND_NOISE], &msg[..n]]).unwrap();
            out
        };
        let message3 = forge(&mut impostor, &instance(3));
        assert_eq!(
            responder.handle_input(&message3, &b).unwrap_err(),
            TunnelError::BadSignature
        );
        assert_eq!(
            frames(&output(&mut responder)),
            vec![vec![KIND_REJECT, RejectCode::BadSignature.to_u8()]],
            "told why, and nothing else: no accept, no proof of the responder"
        );
    }
}
