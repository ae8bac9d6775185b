//! Library-scoped data travels inside a `Tunnel`. The laptop and the phone
//! are instances of the user's "Photos" library; the laptop opens a
//! `Sync` stream, and only after the tunnel proves both are members does the
//! library-scoped request (and the reply) go through, encrypted end to end.
//! A third device that is not a member is refused on both sides.
//!
//! `cargo run -p pos-p2p --example library_sync`

use std::error::Error;
use std::sync::Arc;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::tunnel::{LibraryId, LibraryKeys};
use pos_p2p::{
    Identity, P2P, P2PConfig, RemoteIdentity, Tunnel, generate_identity, semver::Version,
};

/// The outer stream header: says only which operation, nothing about the
/// library.
#[derive(Debug)]
enum AppHeader {
    /// A library sync; a `Tunnel` follows, then a `SyncHeader` inside it.
    Sync,
}

impl Header for AppHeader {
    fn encode(&self, w: &mut Writer) {
        match self {
            AppHeader::Sync => w.tag(0),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            0 => Ok(AppHeader::Sync),
            tag => Err(r.unknown_tag("AppHeader", tag)),
        }
    }
}

/// The library-scoped header, inside the tunnel.
#[derive(Debug)]
struct SyncHeader {
    /// Send the operations after this one.
    since: u64,
}

impl Header for SyncHeader {
    fn encode(&self, w: &mut Writer) {
        w.varint(self.since);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SyncHeader { since: r.varint()? })
    }
}

/// What a device knows of its libraries.
struct Libraries {
    photos: LibraryId,
    me: Identity,
    members: Vec<RemoteIdentity>,
}

impl LibraryKeys for Libraries {
    fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
        (*library == self.photos).then(|| self.me.clone())
    }

    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
        *library == self.photos && self.members.contains(instance)
    }
}

async fn serve(p2p: Arc<P2P>, keys: Arc<Libraries>) {
    while let Some(mut stream) = p2p.accept().await {
        let keys = keys.clone();
        tokio::spawn(async move {
            let result: Result<(), Box<dyn Error + Send + Sync>> = async {
                match AppHeader::from_stream(&mut stream).await? {
                    AppHeader::Sync => {
                        let mut tunnel = Tunnel::responder(stream, &*keys).await?;
                        let request = SyncHeader::from_stream(&mut tunnel).await?;
                        println!(
                            "phone: instance {} asks for operations since {}",
                            tunnel.remote_instance(),
                            request.since
                        );
                        for op in request.since + 1..=request.since + 3 {
                            tunnel.write_all(format!("op {op}\n").as_bytes()).await?;
                        }
                        tunnel.close().await?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(error) = result {
                println!("phone: refused a sync: {error}");
            }
        });
    }
}

async fn sync(
    from: &P2P,
    to: RemoteIdentity,
    keys: &Libraries,
) -> Result<String, Box<dyn Error + Send + Sync>> {
    let peer = from.peers().get(&to).ok_or("unknown peer")?;
    let mut stream = peer.new_stream().await?;
    stream.write_all(&AppHeader::Sync.to_bytes()).await?;
    let mut tunnel = Tunnel::initiator(stream, keys.photos, keys).await?;
    tunnel
        .write_all(&SyncHeader { since: 41 }.to_bytes())
        .await?;
    let mut ops = String::new();
    tunnel.read_to_string(&mut ops).await?;
    Ok(ops)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let photos = LibraryId::from_bytes(*b"photos-library-1");
    let (laptop_instance, phone_instance) = (generate_identity()?, generate_identity()?);
    let members = vec![
        laptop_instance.to_remote_identity(),
        phone_instance.to_remote_identity(),
    ];
    let laptop_keys = Libraries {
        photos,
        me: laptop_instance,
        members: members.clone(),
    };
    let phone_keys = Arc::new(Libraries {
        photos,
        me: phone_instance,
        members,
    });

    let config = || -> Result<P2PConfig, Box<dyn Error + Send + Sync>> {
        Ok(
            P2PConfig::new(generate_identity()?, "photos-app", Version::new(1, 0, 0))?
                .listen(["127.0.0.1:0".parse()?])
                .discovery(false),
        )
    };
    let laptop = P2P::new(config()?)?;
    let phone = P2P::new(config()?)?;
    tokio::spawn(serve(phone.clone(), phone_keys.clone()));
    laptop.add_peer(phone.local_identity(), phone.listen_addrs()[0]);

    let ops = sync(&laptop, phone.local_identity(), &laptop_keys).await?;
    print!("laptop: received through the tunnel:\n{ops}");

    // A device with an instance key the library does not list.
    let stranger = P2P::new(config()?)?;
    stranger.add_peer(phone.local_identity(), phone.listen_addrs()[0]);
    let stranger_keys = Libraries {
        photos,
        me: generate_identity()?,
        members: phone_keys.members.clone(),
    };
    match sync(&stranger, phone.local_identity(), &stranger_keys).await {
        Ok(_) => return Err("a non-member synced".into()),
        Err(error) => println!("stranger: refused: {error}"),
    }
    // Let the phone's refusal print before shutting down.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for node in [&laptop, &phone, &stranger] {
        node.shutdown().await;
    }
    Ok(())
}
