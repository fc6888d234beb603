//! `sealbox aws bootstrap`: creates, idempotently, a development stack on whatever endpoint the
//! AWS environment names (an emulator or a sandbox account): the inbox and outbox buckets, the
//! inbox-events and jobs queues with their dead-letter queues, the notifications topic, and the
//! inbox's event notification to the inbox-events queue with the queue policy S3 needs.
//! Production uses the CloudFormation templates, which create the same things.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName,
    NotificationConfiguration, NotificationConfigurationFilter, PublicAccessBlockConfiguration,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;
use sealbox_core::{Error, Result};

use crate::config::Var;
use crate::sdk::{Clients, storage_error};
use crate::sqs::{
    DEAD_LETTER_RETENTION_SECS, MAX_VISIBILITY_SECS, SqsQueue, sqs_error, whole_seconds,
};

/// Receives of an inbox event or a job before it is dead-lettered.
pub const MAX_RECEIVES: u32 = 5;
/// Default visibility timeout of the inbox-events queue (six times a 10 s function timeout).
pub const INBOX_EVENTS_VISIBILITY: Duration = Duration::from_secs(60);
/// Default visibility timeout of the jobs queue (six times a 60 s function timeout, as AWS
/// advises for a queue that feeds a function).
pub const JOBS_VISIBILITY: Duration = Duration::from_secs(360);

/// The names of a stack's resources, from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Inbox bucket.
    pub inbox: String,
    /// Outbox bucket.
    pub outbox: String,
    /// Inbox-events queue (its dead-letter queue adds `-dlq`).
    pub inbox_events: String,
    /// Jobs queue (its dead-letter queue adds `-dlq`).
    pub jobs: String,
    /// Notifications topic.
    pub topic: String,
    /// Claims table (with the `dynamodb-claims` feature).
    pub claims: String,
}

impl Names {
    /// The names for stack `name`, which must be 3-40 of `a-z`, `0-9` and `-`, starting and
    /// ending with a letter or digit (so every bucket and queue name derived from it is valid).
    pub fn new(name: &str) -> Result<Names> {
        let ok = (3..=40).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            return Err(Error::InvalidKey {
                key: name.to_owned(),
                rule: "a stack name is 3-40 of a-z, 0-9 and -, starting and ending with a letter or digit",
            });
        }
        Ok(Names {
            inbox: format!("{name}-inbox"),
            outbox: format!("{name}-outbox"),
            inbox_events: format!("{name}-inbox-events"),
            jobs: format!("{name}-jobs"),
            topic: format!("{name}-notifications"),
            claims: format!("{name}-claims"),
        })
    }
}

/// Creates what is missing of stack `name` and returns the settings that reach it.
pub async fn bootstrap(clients: &Clients, name: &str) -> Result<Vec<(Var, String)>> {
    let names = Names::new(name)?;
    let region = clients
        .s3
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    for bucket in [&names.inbox, &names.outbox] {
        create_bucket(clients, bucket, &region).await?;
    }
    let (events_url, _) = create_queue_pair(
        &clients.sqs,
        &names.inbox_events,
        MAX_RECEIVES,
        INBOX_EVENTS_VISIBILITY,
    )
    .await?;
    let (jobs_url, _) =
        create_queue_pair(&clients.sqs, &names.jobs, MAX_RECEIVES, JOBS_VISIBILITY).await?;
    let topic_arn = clients
        .sns
        .create_topic()
        .name(&names.topic)
        .send()
        .await
        .map_err(|e| storage_error(format!("creating the topic {}", names.topic), e))?
        .topic_arn
        .ok_or_else(|| Error::storage("creating the topic", "no ARN in the answer"))?;
    notify_queue_of_requests(clients, &names.inbox, &events_url).await?;
    #[allow(unused_mut)]
    let mut settings = vec![
        (Var::InboxBucket, names.inbox),
        (Var::OutboxBucket, names.outbox),
        (Var::InboxEventsQueueUrl, events_url),
        (Var::JobsQueueUrl, jobs_url),
        (Var::TopicArn, topic_arn),
    ];
    // Claims as conditional writes in a table (a new stack has no claims in its outbox).
    #[cfg(feature = "dynamodb-claims")]
    {
        crate::dynamodb_claims::create_table(&clients.dynamodb, &names.claims).await?;
        settings.push((Var::ClaimsTable, names.claims));
        settings.push((Var::OutboxClaims, "ignore".into()));
    }
    Ok(settings)
}

pub(crate) async fn create_bucket(clients: &Clients, bucket: &str, region: &str) -> Result<()> {
    let mut create = clients.s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses to be named as a location constraint.
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(storage_error(format!("creating the bucket {bucket}"), e)),
    }
    clients
        .s3
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| storage_error(format!("blocking public access to {bucket}"), e))?;
    Ok(())
}

/// Lets the inbox bucket, and only it, send to the queue, then tells S3 to notify the queue of
/// every `.json` object written (requests are `<buyer>/requests/<id>.json`; S3's filters cannot
/// express the middle part, so ingest ignores other keys).
async fn notify_queue_of_requests(clients: &Clients, inbox: &str, queue_url: &str) -> Result<()> {
    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| storage_error(format!("reading the ARN of {queue_url}"), e))?;
    let queue_arn = attrs
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| Error::storage("reading a queue ARN", format!("{queue_url} has none")))?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "inbox-notifications",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": format!("arn:aws:s3:::{inbox}")}},
        }],
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| storage_error(format!("setting the policy of {queue_url}"), e))?;
    let rule = FilterRule::builder()
        .name(FilterRuleName::Suffix)
        .value(".json")
        .build();
    let queue = QueueConfiguration::builder()
        .id("sealbox-inbox-events")
        .queue_arn(queue_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().filter_rules(rule).build())
                .build(),
        )
        .build()
        .map_err(|e| storage_error("building the inbox notification", e))?;
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(inbox)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(queue)
                .build(),
        )
        .send()
        .await
        .map_err(|e| storage_error(format!("configuring the notifications of {inbox}"), e))?;
    Ok(())
}

/// Creates (or, when they exist, updates) the queue `name` and its dead-letter queue
/// `name-dlq`, which takes a message after `max_receives` receives; returns their URLs
/// (queue, dead-letter queue). `visibility` is the queue's default visibility timeout.
pub async fn create_queue_pair(
    sqs: &Client,
    name: &str,
    max_receives: u32,
    visibility: Duration,
) -> Result<(String, String)> {
    let dead_name = format!("{name}-dlq");
    let dead_url = ensure_queue(
        sqs,
        &dead_name,
        vec![(
            QueueAttributeName::MessageRetentionPeriod,
            DEAD_LETTER_RETENTION_SECS.to_string(),
        )],
    )
    .await?;
    let dead_arn = SqsQueue::new(sqs.clone(), dead_url.clone())
        .attributes(&dead_url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .ok_or_else(|| {
            Error::storage(
                format!("creating the queue {name}"),
                format!("{dead_url} has no ARN"),
            )
        })?;
    let policy = serde_json::json!({
        "deadLetterTargetArn": dead_arn,
        "maxReceiveCount": max_receives,
    })
    .to_string();
    let url = ensure_queue(
        sqs,
        name,
        vec![
            (
                QueueAttributeName::VisibilityTimeout,
                whole_seconds(visibility)
                    .min(MAX_VISIBILITY_SECS)
                    .to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, policy),
        ],
    )
    .await?;
    Ok((url, dead_url))
}

/// Creates the queue `name` with `attributes`; if it exists with others, sets them.
async fn ensure_queue(
    sqs: &Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String> {
    let attributes: HashMap<_, _> = attributes.into_iter().collect();
    let created = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    let url = match created {
        Ok(out) => out.queue_url().map(str::to_owned),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists())
                || matches!(e.code(), Some("QueueAlreadyExists" | "QueueNameExists")) =>
        {
            let url = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| sqs_error("looking up the queue", name, e))?
                .queue_url()
                .map(str::to_owned);
            if let Some(url) = &url {
                sqs.set_queue_attributes()
                    .queue_url(url)
                    .set_attributes(Some(attributes))
                    .send()
                    .await
                    .map_err(|e| sqs_error("updating the queue's attributes", url, e))?;
            }
            url
        }
        Err(e) => return Err(sqs_error("creating the queue", name, e)),
    };
    url.ok_or_else(|| Error::storage(format!("creating the queue {name}"), "no queue URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_name_gives_valid_resource_names_or_a_rule() {
        let n = Names::new("dev-1");
        assert_eq!(
            n.as_ref().map(|n| n.inbox.as_str()).ok(),
            Some("dev-1-inbox")
        );
        for bad in ["", "ab", "Dev", "-dev", "dev-", "dev_1", &"a".repeat(41)] {
            assert!(
                matches!(Names::new(bad), Err(Error::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }
}
