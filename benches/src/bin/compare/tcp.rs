//! Plain TCP on loopback (tokio): the physical reference for bulk transfer.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Result;

pub(crate) struct Pair {
    addr: SocketAddr,
}

impl Pair {
    pub(crate) async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut count = 0u64;
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => count += n as u64,
                        }
                    }
                    let _ = socket.write_all(&count.to_be_bytes()).await;
                });
            }
        });
        Ok(Self { addr })
    }

    /// Send `len` bytes on a fresh connection and check the count.
    pub(crate) async fn bulk(&self, len: usize) -> Result<()> {
        let mut socket = TcpStream::connect(self.addr).await?;
        socket.set_nodelay(true)?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut sent = 0;
        while sent < len {
            let n = chunk.len().min(len - sent);
            socket.write_all(&chunk[..n]).await?;
            sent += n;
        }
        socket.shutdown().await?;
        let mut count = [0u8; 8];
        socket.read_exact(&mut count).await?;
        if u64::from_be_bytes(count) != len as u64 {
            return Err("TCP server miscounted".into());
        }
        Ok(())
    }
}
