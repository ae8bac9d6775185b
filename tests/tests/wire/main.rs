//! Property and bad-input tests of the wire toolkit, built into one binary.

mod corpus;
mod derive;
mod frames;
mod headers;
mod primitives;
mod relay;
mod relay_tls;
