//! `sealbox aws teardown`: deletes what `sealbox aws bootstrap --name NAME` made: both buckets
//! with every object version in them, the four queues and the topic. Idempotent: what is
//! already gone is skipped, so a teardown stopped half way can simply be run again.

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use sealbox_core::{Error, Result};

use crate::bootstrap::Names;
use crate::sdk::{Clients, storage_error};

/// Deletes the resources of development stack `name`, telling `deleted` of each as it goes
/// (e.g. `bucket dev-inbox (12 objects)`); answers how many. Stops at the first failure: what
/// it names has not been deleted, nor anything after it.
pub async fn teardown(
    clients: &Clients,
    name: &str,
    mut deleted: impl FnMut(String),
) -> Result<usize> {
    let names = Names::new(name)?;
    let mut count = 0;
    let mut deleted = |what: String| {
        count += 1;
        deleted(what);
    };
    for bucket in [&names.inbox, &names.outbox] {
        if let Some(objects) = empty_bucket(clients, bucket).await? {
            match clients.s3.delete_bucket().bucket(bucket).send().await {
                Ok(_) => deleted(format!("bucket {bucket} ({objects} objects)")),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.code() == Some("NoSuchBucket")) => {}
                Err(e) => return Err(storage_error(format!("deleting the bucket {bucket}"), e)),
            }
        }
    }
    for queue in [
        names.inbox_events.clone(),
        format!("{}-dlq", names.inbox_events),
        names.jobs.clone(),
        format!("{}-dlq", names.jobs),
    ] {
        let url = match clients.sqs.get_queue_url().queue_name(&queue).send().await {
            Ok(got) => got.queue_url.unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                continue;
            }
            Err(e) => return Err(storage_error(format!("finding the queue {queue}"), e)),
        };
        clients
            .sqs
            .delete_queue()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| storage_error(format!("deleting the queue {queue}"), e))?;
        deleted(format!("queue {queue}"));
    }
    if let Some(arn) = topic_arn(clients, &names.topic).await? {
        clients
            .sns
            .delete_topic()
            .topic_arn(&arn)
            .send()
            .await
            .map_err(|e| storage_error(format!("deleting the topic {arn}"), e))?;
        deleted(format!("topic {arn}"));
    }
    #[cfg(feature = "dynamodb-claims")]
    match clients
        .dynamodb
        .delete_table()
        .table_name(&names.claims)
        .send()
        .await
    {
        Ok(_) => deleted(format!("table {}", names.claims)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => {
            return Err(storage_error(
                format!("deleting the table {}", names.claims),
                e,
            ));
        }
    }
    Ok(count)
}

/// Deletes every object version and delete marker in `bucket`, a page of up to 1,000 at a time;
/// answers how many, or `None` if there is no such bucket.
async fn empty_bucket(clients: &Clients, bucket: &str) -> Result<Option<u64>> {
    let mut count = 0u64;
    loop {
        // Always the first page: what was on it is gone, and a marker naming a deleted key
        // is not followed alike everywhere (moto answered an empty page past 1,000).
        let page = match clients
            .s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(page) => page,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.code() == Some("NoSuchBucket")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(storage_error(format!("listing the objects of {bucket}"), e)),
        };
        let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
        let markers = page
            .delete_markers()
            .iter()
            .map(|m| (m.key(), m.version_id()));
        let ids = versions
            .chain(markers)
            .filter_map(|(key, version)| {
                ObjectIdentifier::builder()
                    .key(key?)
                    .set_version_id(version.map(str::to_owned))
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        if !ids.is_empty() {
            let n = ids.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| storage_error("building a delete", e))?;
            let done = clients
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| storage_error(format!("deleting the objects of {bucket}"), e))?;
            if let Some(failed) = done.errors().first() {
                return Err(Error::storage(
                    format!("deleting the objects of {bucket}"),
                    format!(
                        "{} of them were not deleted, e.g. {}: {}",
                        done.errors().len(),
                        failed.key().unwrap_or("?"),
                        failed.message().unwrap_or("no reason given")
                    ),
                ));
            }
            count += n;
        }
        if page.is_truncated() != Some(true) {
            return Ok(Some(count));
        }
    }
}

/// The ARN of the topic named `topic`, if it exists.
async fn topic_arn(clients: &Clients, topic: &str) -> Result<Option<String>> {
    let suffix = format!(":{topic}");
    let mut next = None::<String>;
    loop {
        let page = clients
            .sns
            .list_topics()
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| storage_error("listing the topics", e))?;
        if let Some(arn) = page
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|arn| arn.ends_with(&suffix))
        {
            return Ok(Some(arn.to_owned()));
        }
        match page.next_token() {
            Some(t) => next = Some(t.to_owned()),
            None => return Ok(None),
        }
    }
}
