use pos_p2p_derive::Header;

#[derive(Header)]
enum AppHeader {
    #[header(tag = 0)]
    Ping,
    #[header(tag = 1)]
    File,
    #[header(tag = 1)]
    Sync,
}

fn main() {}
