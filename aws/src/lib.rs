//! sealbox on AWS: the ports' adapters over the official SDK (S3, SQS, SNS, SageMaker Runtime),
//! the settings every AWS role reads from the environment, and what the Lambda functions share.
//! No Lambda runtime in here, so the CLI uses the same adapters as the functions.

pub mod bootstrap;
pub mod config;
pub mod lambda;
pub mod s3;
pub mod sagemaker;
pub mod sdk;
pub mod sns;
pub mod sqs;
