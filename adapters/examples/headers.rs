//! A tour of the wire toolkit that every pos-p2p feature is built on, run
//! without a network: two devices' identities, their metadata, the version
//! check each runs on the other, and stream headers framed on one side and
//! decoded on the other from a byte stream cut into awkward pieces.
//!
//! `cargo run -p pos-p2p --example headers`

use pos_p2p::codec::{DecodeError, FrameDecoder, Header, Reader, Writer};
use pos_p2p::semver::Version;
use pos_p2p::{Identity, Metadata, PeerMetadata, VersionPolicy, Versions};

/// The application's stream header: one variant per operation.
#[derive(Debug, PartialEq)]
enum AppHeader {
    Ping,
    /// Ask for bytes of a file by its id.
    File {
        id: [u8; 16],
        offset: u64,
        len: u64,
    },
    /// A chat message.
    Message(String),
}

impl Header for AppHeader {
    fn encode(&self, w: &mut Writer) {
        match self {
            AppHeader::Ping => w.tag(0),
            AppHeader::File { id, offset, len } => {
                w.tag(1);
                w.id16(id);
                w.varint(*offset);
                w.varint(*len);
            }
            AppHeader::Message(text) => {
                w.tag(2);
                w.str(text, 4096);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => AppHeader::Ping,
            1 => AppHeader::File {
                id: r.id16()?,
                offset: r.varint()?,
                len: r.varint()?,
            },
            2 => AppHeader::Message(r.string(4096)?),
            tag => return Err(r.unknown_tag("AppHeader", tag)),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Identities: in an application, generate once with a CSPRNG
    // (`Identity::generate(&mut rng)`) and store `to_bytes()` securely.
    let laptop = Identity::from_bytes(&[1; 32]);
    let phone = Identity::from_bytes(&[2; 32]);
    println!("laptop is {}", laptop.to_remote_identity());
    println!("phone  is {}", phone.to_remote_identity());

    let challenge = b"prove you are the laptop";
    let signature = laptop.sign(challenge);
    laptop.to_remote_identity().verify(challenge, &signature)?;
    println!("laptop's signature verifies against its public identity");

    // Metadata travels in the handshake; the typed view is lossless.
    let mut metadata = Metadata::new();
    metadata.insert("name", "Oscar's laptop")?;
    metadata.insert("os", "linux")?;
    metadata.insert("version", "1.4.0")?;
    let received = Metadata::from_bytes(&metadata.to_bytes())?;
    let typed = PeerMetadata::from_metadata(&received)?;
    println!(
        "laptop's metadata ({} bytes on the wire): name={:?} os={:?} version={:?}",
        metadata.encoded_len(),
        typed.name,
        typed.os.map(|os| os.to_string()),
        typed.version.map(|v| v.to_string()),
    );

    // Version gating, as both sides of a handshake would run it.
    let policy = VersionPolicy::default();
    let laptop_versions = Versions::new(Version::new(1, 4, 0));
    for phone_app in [Version::new(1, 2, 0), Version::new(2, 0, 0)] {
        let phone_versions = Versions::new(phone_app.clone());
        match policy.check(&laptop_versions, &phone_versions) {
            Ok(()) => println!("laptop accepts phone running {phone_app}"),
            Err(rejection) => println!("laptop rejects phone: {rejection}"),
        }
    }

    // Headers: the phone writes three stream headers; the bytes reach the
    // laptop in 3-byte pieces, followed by application data that the
    // decoder must leave alone.
    let sent = [
        AppHeader::Ping,
        AppHeader::File {
            id: *b"0123456789abcdef",
            offset: 4096,
            len: 1 << 20,
        },
        AppHeader::Message("hello from the phone ☃".into()),
    ];
    let mut stream = Vec::new();
    for header in &sent {
        stream.extend_from_slice(&header.to_bytes());
    }
    stream.extend_from_slice(b"<file bytes>");

    let mut decoder = AppHeader::decoder();
    let mut received = Vec::new();
    let mut pos = 0;
    while received.len() < sent.len() {
        let end = (pos + 3).min(stream.len());
        let decoded = decoder.decode(&stream[pos..end])?;
        pos += decoded.consumed;
        if let Some(frame) = decoded.frame {
            let header = AppHeader::from_frame_body(&frame)?;
            println!("laptop received {header:?} ({} bytes framed)", frame.len());
            received.push(header);
        }
    }
    assert_eq!(received, sent);
    println!(
        "left for the application after the headers: {:?}",
        String::from_utf8_lossy(&stream[pos..])
    );

    // A hostile peer announcing a 4 GiB header gets a typed error, and no
    // memory is reserved for it.
    let mut hostile = FrameDecoder::new();
    match hostile.decode(&[0x80, 0x80, 0x80, 0x80, 0x10]) {
        Ok(_) => unreachable!("a 4 GiB frame is over the 64 KiB limit"),
        Err(error) => println!("hostile frame refused: {error}"),
    }
    Ok(())
}
