//! `split: line`: an input of records, one a line, run in batches under the payload limit.

use super::*;

impl Worker {
    /// `split: line`: records are lines, batched into invocations of at most the payload limit;
    /// outputs are joined line by line into a spool file, then stored. Memory stays bounded.
    pub(crate) async fn run_split(
        &self,
        job: &JobMessage,
        reader: ByteStream,
        report: &mut JobReport,
    ) -> Result<sealbox_core::ports::ObjectMeta, RunError> {
        let limit = self.endpoint.payload_limit() as usize;
        let spool_err = |e| RunError::Retry(Error::io("writing the spool file", e));
        // Creating a file blocks: not on the async workers.
        let spool = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(|e| RunError::Retry(e.into()))?
            .map_err(|e| RunError::Retry(Error::io("creating a spool file", e)))?;
        let mut out = tokio::fs::File::from_std(spool);
        let mut lines = tokio::io::BufReader::new(reader);
        let mut batch: Vec<u8> = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = read_line_capped(&mut lines, &mut line, limit)
                .await
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        fail(
                            Reason::InputTooLarge,
                            "input",
                            format!("a record is over the endpoint limit of {limit} bytes"),
                        )
                    } else {
                        RunError::Retry(Error::io("reading the input", e))
                    }
                })?;
            if n > 0 && !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            if (n == 0 || batch.len() + line.len() > limit) && !batch.is_empty() {
                let body = Bytes::from(std::mem::take(&mut batch));
                let mut output = self.invoke(job, body, report).await?.to_vec();
                if !output.is_empty() && !output.ends_with(b"\n") {
                    output.push(b'\n');
                }
                out.write_all(&output).await.map_err(spool_err)?;
            }
            if n == 0 {
                break;
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            batch.extend_from_slice(&line);
        }
        out.flush().await.map_err(spool_err)?;
        out.rewind().await.map_err(spool_err)?;
        let body: ByteStream = Box::pin(out);
        let key = result_key(&job.buyer, &job.request_id);
        let opts = result_options(report)?;
        put_result(
            self.store
                .put_stream_opts(&self.config.outbox, &key, body, opts)
                .await,
        )
    }
}

/// Reads one line, failing with `InvalidData` instead of growing past `cap` bytes.
async fn read_line_capped(
    r: &mut tokio::io::BufReader<ByteStream>,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "record too large",
            ));
        }
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}
