//! The `sealbox` command's library: the embedded stack, the demo, the benchmark and the commands.

pub mod access;
pub mod bench;
pub mod cases;
pub mod commands;
pub mod demo;
pub mod output;
pub mod results;
pub mod stack;
pub mod submit;
