use pos_p2p_derive::Header;

#[derive(Header)]
enum AppHeader {
    #[header(tag = 0)]
    Message { text: String },
}

fn main() {}
