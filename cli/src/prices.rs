//! What AWS charges per request, for `bench --backend aws`'s cost per million jobs: the one place
//! prices live. US East (N. Virginia) on-demand list prices, free tiers left out, as the public
//! pricing pages give them (sources below; not re-read by the program, which has no network):
//! - S3 Standard: PUT, COPY, POST, LIST $0.005 per 1,000; GET and every other request $0.0004 per
//!   1,000; DELETE free (<https://aws.amazon.com/s3/pricing/>).
//! - SQS standard (fair) queues: $0.40 per million requests, a batch of up to 10 one request per
//!   64 KiB (<https://aws.amazon.com/sqs/pricing/>).
//! - SNS standard topics: $0.50 per million requests, `PublishBatch` one request per 64 KiB
//!   (<https://aws.amazon.com/sns/pricing/>).
//! - DynamoDB on demand: $0.625 per million write request units, $0.125 per million read request
//!   units (<https://aws.amazon.com/dynamodb/pricing/on-demand/>).
//! - KMS: $0.03 per 10,000 requests (<https://aws.amazon.com/kms/pricing/>).
//! - Lambda: $0.20 per million requests (`Lambda.Invoke`: an event source mapping's invocation);
//!   arm64 duration $0.0000133334 per GB-second, the first tier
//!   (<https://aws.amazon.com/lambda/pricing/>).
//!
//! Each call counts as one billed request: sealbox's messages and items are far under 64 KiB and
//! 1 KB. The endpoint (`InvokeEndpoint`: instance hours and the seller's price) is the model's
//! cost, not the pipeline's, and is left out; so are calls AWS makes for us that the SDK does
//! not see (S3's own KMS requests for an SSE-KMS bucket, the Lambda service's receives).

use std::collections::BTreeMap;

/// When the prices below were taken from the pages above.
pub const PRICES_AS_OF: &str = "2026-12-06";

/// What one call of `operation` (`Service.Operation`, as the SDK's call counter names it) costs,
/// in USD; `None` for the endpoint and for operations this table does not know.
pub fn usd_per_call(operation: &str) -> Option<f64> {
    let (service, op) = operation.split_once('.')?;
    let per_million = match service {
        "S3" => match op {
            "PutObject"
            | "CopyObject"
            | "PostObject"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload" => 5.0,
            "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => 0.0,
            _ => 0.4,
        },
        "SQS" => 0.40,
        "SNS" => 0.50,
        "DynamoDB" => match op {
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => {
                0.625
            }
            "GetItem" | "Query" | "Scan" | "BatchGetItem" => 0.125,
            _ => return None,
        },
        "KMS" => 3.0,
        "Lambda" if op == "Invoke" => 0.20,
        _ => return None,
    };
    Some(per_million / 1e6)
}

/// What a GB-second of an arm64 Lambda function costs, in USD.
pub const LAMBDA_ARM64_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;

/// The cost of a million jobs, in USD, from the calls one job makes by operation: the total,
/// each operation's share, and the operations left out (the endpoint, or not in the table).
pub fn per_million_jobs(
    calls_per_job: &BTreeMap<String, f64>,
) -> (f64, BTreeMap<String, f64>, Vec<String>) {
    let mut by_operation = BTreeMap::new();
    let mut left_out = Vec::new();
    for (op, per_job) in calls_per_job {
        match usd_per_call(op) {
            Some(usd) => {
                by_operation.insert(op.clone(), per_job * usd * 1e6);
            }
            None => left_out.push(op.clone()),
        }
    }
    (by_operation.values().sum(), by_operation, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_of_the_one_process_path_costs_what_its_calls_cost_and_the_endpoint_is_left_out() {
        let calls: BTreeMap<String, f64> = [
            ("S3.GetObject", 1.0),
            ("S3.PutObject", 2.0),
            ("SageMaker Runtime.InvokeEndpoint", 1.0),
            ("SNS.PublishBatch", 0.1),
            ("SQS.ReceiveMessage", 0.1),
            ("SQS.DeleteMessageBatch", 0.1),
            ("DynamoDB.PutItem", 1.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let (total, by, left_out) = per_million_jobs(&calls);
        // 0.4 + 10 + 0.05 + 0.04 + 0.04 + 0.625
        assert!((total - 11.155).abs() < 1e-9, "{total} {by:?}");
        assert!((by["S3.PutObject"] - 10.0).abs() < 1e-9);
        assert_eq!(left_out, ["SageMaker Runtime.InvokeEndpoint"]);
    }

    #[test]
    fn unknown_operations_are_named_not_priced_at_zero() {
        assert_eq!(usd_per_call("Lambda.GetFunction"), None);
        assert_eq!(usd_per_call("Lambda.Invoke"), Some(0.20 / 1e6));
        assert_eq!(usd_per_call("DynamoDB.DescribeTable"), None);
        assert_eq!(usd_per_call("no-dot"), None);
        assert_eq!(usd_per_call("S3.DeleteObject"), Some(0.0));
    }
}
