//! The sans-IO node on the deterministic in-memory network: real QUIC, TLS,
//! Hellos and streams between nodes in one process, in virtual time.

mod abuse;
mod admission;
mod connect;
mod dial;
mod faults;
mod lifecycle;
mod manual;
mod punch;
mod relay;
mod streams;
mod tunnel;
