//! Macros of the node's modules.

/// `self.conns.get_mut(&id)` for a connection the caller knows is live.
///
/// A connection leaves `conns` in one place only: at the end of
/// `Node::process` for that connection, once every event of its
/// turn was handled. The functions that take a connection id are called
/// within such a turn, with an id a lookup in `conns` just produced, so the
/// lookup cannot fail; if it does, that is a bug in the node. It is
/// asserted in debug builds (the tests and the fuzz corpora replayed by
/// `cargo test` run them), and a release build returns instead, so that a
/// bug can never become a panic that a peer could trigger.
macro_rules! live_conn {
    (& $node:ident, $id:expr) => {{
        let conn = $node.conns.get(&$id);
        debug_assert!(
            conn.is_some(),
            "connection {:?} used after its removal",
            $id
        );
        conn
    }};
    ($node:ident, $id:expr) => {{
        let conn = $node.conns.get_mut(&$id);
        debug_assert!(
            conn.is_some(),
            "connection {:?} used after its removal",
            $id
        );
        conn
    }};
}
