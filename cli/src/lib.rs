//! The `sealbox` command's library: the demo, the benchmark, the AWS commands and the rest of
//! the commands, over the one-machine stack ([`stack`]) of the embedded adapters.

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

/// The one-machine stack (`sealbox up`): the embedded adapters of a data directory wired to the
/// handlers and the pollers.
pub mod stack;
