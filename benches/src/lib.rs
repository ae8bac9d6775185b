//! Benchmarks of pos-p2p. The criterion benchmarks live in `benches/`;
//! `BENCHMARKS.md` at the repository root says how to run them and what they
//! measured last.
