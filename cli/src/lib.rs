//! The `sealbox` command's library: the demo, the benchmark, the AWS commands and the rest of
//! the commands, over the embedded stack of `sealbox-embedded`.

pub mod access;
pub mod aws;
pub mod bench;
pub mod bench_fair_share;
pub mod cases;
pub mod commands;
pub mod demo;
pub mod marketplace;
pub mod model;
pub mod output;
pub mod prices;
pub mod results;
pub mod seller_aws;
pub mod submit;
pub mod token_check;
pub mod usage;

/// The embedded stack, wired in `sealbox-embedded` (re-exported so `sealbox::stack` paths stay).
pub use sealbox_embedded::stack;
