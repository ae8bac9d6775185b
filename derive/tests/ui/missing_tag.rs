use pos_p2p_derive::Header;

#[derive(Header)]
enum AppHeader {
    #[header(tag = 0)]
    Ping,
    Pong,
}

fn main() {}
