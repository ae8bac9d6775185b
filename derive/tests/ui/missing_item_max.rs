use pos_p2p_derive::Header;

#[derive(Header)]
struct Tags {
    #[header(max = 16)]
    tags: Vec<String>,
}

fn main() {}
