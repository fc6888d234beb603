//! The dead-letter side of [`SqsQueue`]: where its dead letters are (its `RedrivePolicy`, or
//! given), the operators' port over them, and redrives (a move task, or by hand).

use super::*;

/// Where dead letters of the queue are, and the ARNs a move task needs.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    pub(crate) url: String,
    arn: Option<String>,
    source_arn: Option<String>,
}

/// The `RedrivePolicy` attribute of a queue.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedrivePolicyDoc {
    dead_letter_target_arn: String,
}

impl SqsQueue {
    pub(crate) async fn dead_letters(&self) -> Result<Option<&DeadLetters>> {
        self.dead_letters
            .get_or_try_init(|| self.discover_dead_letters())
            .await
            .map(Option::as_ref)
    }

    pub(crate) async fn discover_dead_letters(&self) -> Result<Option<DeadLetters>> {
        let attrs = self
            .attributes(
                &self.url,
                &[
                    QueueAttributeName::QueueArn,
                    QueueAttributeName::RedrivePolicy,
                ],
            )
            .await?;
        let source_arn = attrs.get(&QueueAttributeName::QueueArn).cloned();
        if let Some(url) = &self.given_dead_letter_url {
            let arn = self
                .attributes(url, &[QueueAttributeName::QueueArn])
                .await?
                .remove(&QueueAttributeName::QueueArn);
            return Ok(Some(DeadLetters {
                url: url.to_string(),
                arn,
                source_arn,
            }));
        }
        let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let policy: RedrivePolicyDoc = serde_json::from_str(policy)
            .map_err(|e| Error::json(format!("the redrive policy of {}", self.url), e))?;
        let (account, name) =
            arn_account_and_name(&policy.dead_letter_target_arn).ok_or_else(|| {
                Error::storage(
                    format!("the redrive policy of {}", self.url),
                    format!("{:?} is not a queue ARN", policy.dead_letter_target_arn),
                )
            })?;
        let out = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| {
                sqs_error(
                    "looking up the dead-letter queue",
                    &policy.dead_letter_target_arn,
                    e,
                )
            })?;
        let url = out.queue_url().map(str::to_owned).ok_or_else(|| {
            Error::storage(
                "looking up the dead-letter queue",
                format!("no URL for {}", policy.dead_letter_target_arn),
            )
        })?;
        Ok(Some(DeadLetters {
            url,
            arn: Some(policy.dead_letter_target_arn),
            source_arn,
        }))
    }

    /// Moves up to `max` dead letters by hand, ten at a time: each is sent to the queue first
    /// and deleted from the dead-letter queue only once sent.
    pub(crate) async fn redrive_by_hand(&self, dead: &DeadLetters, max: usize) -> Result<u64> {
        let mut moved = 0u64;
        while (moved as usize) < max {
            let want = (max - moved as usize).min(MAX_RECEIVE);
            let held = self
                .receive_from(&dead.url, want, PASS_WAIT_SECS, HOLD_SECS, true)
                .await?;
            if held.is_empty() {
                break;
            }
            let (entries, handles): (Vec<Entry>, Vec<String>) = held
                .into_iter()
                .filter_map(|m| {
                    let handle = m.receipt_handle?;
                    let entry = Entry {
                        body: m.body.unwrap_or_default(),
                        delay_seconds: 0,
                        group: m
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                            .cloned(),
                        attributes: m.message_attributes,
                    };
                    Some((entry, handle))
                })
                .unzip();
            let sent = self.send_entries(&self.url, &entries).await;
            let (done, undone): (Vec<_>, Vec<_>) = sent
                .slots
                .iter()
                .zip(handles)
                .partition(|(slot, _)| matches!(slot, Slot::Sent(_)));
            let done: Vec<String> = done.into_iter().map(|(_, h)| h).collect();
            let undone: Vec<String> = undone.into_iter().map(|(_, h)| h).collect();
            self.release(&dead.url, &undone).await;
            if let Err(e) = self.delete_from(&dead.url, &done).await {
                // Sent but still dead: it will be redriven again (a duplicate, never a loss).
                return Err(Error::storage(
                    format!(
                        "redriving {}: {moved} moved, then {} sent back but not deleted from the dead-letter queue",
                        self.url,
                        done.len()
                    ),
                    e.to_string(),
                ));
            }
            moved += done.len() as u64;
            if let Some(problem) = sent.problem() {
                return Err(Error::storage(
                    format!("redriving {}: {moved} moved, then", self.url),
                    problem,
                ));
            }
        }
        Ok(moved)
    }

    /// Redrives every dead letter with an SQS move task and waits (a while) for it to finish.
    pub(crate) async fn redrive_by_task(
        &self,
        source_arn: &str,
        destination_arn: &str,
    ) -> Result<u64> {
        let started = self
            .sqs
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .customize()
            // One attempt: where the service has no move task (moto answers 500), the fallback
            // is at hand and retrying would only delay it.
            .config_override(
                aws_sdk_sqs::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| sqs_error("starting a message move task", source_arn, e))?;
        let handle = started.task_handle().unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::now() + MOVE_TASK_WAIT;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let tasks = self
                .sqs
                .list_message_move_tasks()
                .source_arn(source_arn)
                .max_results(10)
                .send()
                .await
                .map_err(|e| sqs_error("reading the message move task", source_arn, e))?;
            let task = tasks
                .results()
                .iter()
                .find(|t| t.task_handle() == Some(handle.as_str()) || handle.is_empty());
            let Some(task) = task else {
                continue;
            };
            let moved = task.approximate_number_of_messages_moved().max(0) as u64;
            match task.status() {
                Some("RUNNING") if tokio::time::Instant::now() < deadline => continue,
                Some("RUNNING") => {
                    tracing::warn!(queue = %self.url, moved, "the redrive goes on in the background");
                    return Ok(moved);
                }
                Some("FAILED") => {
                    return Err(Error::storage(
                        format!("redriving {} ({moved} moved)", self.url),
                        task.failure_reason()
                            .unwrap_or("the move task failed")
                            .to_owned(),
                    ));
                }
                _ => return Ok(moved),
            }
        }
    }
}

#[async_trait]
impl QueueAdmin for SqsQueue {
    async fn stats(&self) -> Result<QueueStats> {
        let (visible, in_flight, delayed) = self.counts(&self.url).await?;
        Ok(QueueStats {
            visible,
            in_flight,
            delayed,
            oldest_age: None,
        })
    }

    async fn list_dead(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let Some(dead) = self.dead_letters().await? else {
            return Ok(Vec::new());
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        let (visible, _, _) = self.counts(&dead.url).await?;
        let mut found: HashMap<String, DeadLetter> = HashMap::new();
        let mut held = Vec::new();
        let pass: Result<()> = async {
            // Until `max`, all the visible ones, an empty poll, or a poll with nothing new.
            while found.len() < max && (visible == 0 || (found.len() as u64) < visible) {
                let got = self
                    .receive_from(
                        &dead.url,
                        max - found.len(),
                        PASS_WAIT_SECS,
                        HOLD_SECS,
                        false,
                    )
                    .await?;
                let mut new = 0;
                for m in got {
                    if let Some(handle) = &m.receipt_handle {
                        held.push(handle.clone());
                    }
                    if let Some(r) = received(m)
                        && !found.contains_key(&r.message_id)
                    {
                        new += 1;
                        found.insert(
                            r.message_id.clone(),
                            DeadLetter {
                                message_id: r.message_id,
                                body: r.body,
                                // Less this peek's own receive.
                                receive_count: r.receive_count.saturating_sub(1),
                                sent_at: r.sent_at,
                            },
                        );
                    }
                }
                if new == 0 {
                    break;
                }
            }
            Ok(())
        }
        .await;
        self.release(&dead.url, &held).await;
        pass?;
        let mut dead: Vec<DeadLetter> = found.into_values().collect();
        dead.sort_by(|a, b| (a.sent_at, &a.message_id).cmp(&(b.sent_at, &b.message_id)));
        dead.truncate(max);
        Ok(dead)
    }

    async fn redrive(&self, max: usize) -> Result<u64> {
        let Some(dead) = self.dead_letters().await? else {
            return Ok(0);
        };
        if max == 0 {
            return Ok(0);
        }
        // A move task takes every dead letter: only when all of them are asked for.
        if let (Some(arn), Some(source_arn)) = (&dead.arn, &dead.source_arn) {
            let (visible, in_flight, delayed) = self.counts(&dead.url).await?;
            let all = visible + in_flight + delayed;
            if all > 0 && max as u64 >= all {
                match self.redrive_by_task(arn, source_arn).await {
                    Ok(moved) => return Ok(moved),
                    Err(e) => tracing::info!(
                        queue = %self.url,
                        error = %e,
                        "no message move task; redriving by hand"
                    ),
                }
            }
        }
        self.redrive_by_hand(dead, max).await
    }

    async fn dead_count(&self) -> Result<u64> {
        let Some(dead) = self.dead_letters().await? else {
            return Ok(0);
        };
        let (visible, in_flight, delayed) = self.counts(&dead.url).await?;
        Ok(visible + in_flight + delayed)
    }
}

/// The account and queue name of `arn:aws:sqs:REGION:ACCOUNT:NAME`.
fn arn_account_and_name(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, _partition, service, _region) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (account, name) = (parts.next()?, parts.next()?);
    (prefix == "arn" && service == "sqs" && !account.is_empty() && !name.is_empty())
        .then_some((account, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_arns_split_into_account_and_name() {
        assert_eq!(
            arn_account_and_name("arn:aws:sqs:us-east-1:123456789012:jobs-dlq"),
            Some(("123456789012", "jobs-dlq"))
        );
        assert_eq!(arn_account_and_name("arn:aws:sns:us-east-1:1:t"), None);
        assert_eq!(arn_account_and_name("jobs-dlq"), None);
    }
}
