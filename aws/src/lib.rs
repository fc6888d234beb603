//! sealbox on AWS: the ports' adapters over the official SDK (S3, SQS, SNS, SageMaker Runtime),
//! the settings every AWS role reads from the environment, and what the Lambda functions share.
//! No Lambda runtime in here, so the CLI uses the same adapters as the functions.

pub mod bootstrap;
pub mod config;
#[cfg(feature = "dynamodb-claims")]
pub mod dynamodb_claims;
#[cfg(any(feature = "dynamodb-claims", feature = "seller"))]
pub mod dynamodb_table;
#[cfg(feature = "identity")]
pub mod identity;
pub mod lambda;
pub mod s3;
pub mod sagemaker;
pub mod sdk;
#[cfg(feature = "seller")]
pub mod seller;
pub mod sns;
pub mod sqs;
pub mod teardown;

/// How long a call that can carry a batch (a publish, a delete, a receive) waits for others to
/// join it when the load is too light to fill it at once, in the one-process runtime. The same
/// trade as the AWS SDK for Java's buffered SQS client, whose `maxBatchOpenMs` is 200 ms by
/// default: a little latency on a pipeline that takes seconds anyway, for a third of the calls.
pub const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(200);
