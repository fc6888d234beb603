//! The `sealbox` command's library: the embedded stack, the demo, the benchmark, the AWS
//! commands and the rest of the commands.

pub mod access;
pub mod aws;
pub mod bench;
pub mod cases;
pub mod commands;
pub mod demo;
pub mod model;
pub mod output;
pub mod results;
pub mod stack;
pub mod submit;
