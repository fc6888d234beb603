//! Long-running loops that receive messages from a queue and hand them to a handler: the
//! one-process way to run the pipeline (Lambda functions get their batches from the platform).

pub mod handoff;
pub mod inbox;
pub mod jobs;
