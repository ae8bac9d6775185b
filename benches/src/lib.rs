//! Benchmarks of pos-p2p; the criterion benches live in `benches/`.
