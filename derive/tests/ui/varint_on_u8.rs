use pos_p2p_derive::Header;

#[derive(Header)]
struct Small {
    #[header(varint)]
    value: u8,
}

fn main() {}
