use pos_p2p_derive::Header;

#[derive(Header)]
enum AppHeader {
    #[header(tag = 0, requires = "at least one point five")]
    Ping,
}

fn main() {}
