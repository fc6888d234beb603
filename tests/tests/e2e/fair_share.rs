//! Fair share between buyers on the embedded stack: a buyer's few requests, written right after
//! another buyer's burst, are not queued behind the whole burst. Judged by the order of the
//! notifications, not by time (`sealbox bench --fair-share` measures the times).

use std::time::Duration;

use bytes::Bytes;
use sealbox::cases::{SAMPLE_ROWS, text_request};
use sealbox::stack::ModelSource;
use sealbox_core::layout::INBOX;
use sealbox_core::ports::{ObjectStore, PutMode};
use sealbox_tests::Embedded;

const BURST: usize = 400;
const FEW: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyers_few_requests_are_not_queued_behind_another_buyers_burst() {
    let mut e = Embedded::start(|o| {
        // Slow enough that the burst outlasts its writing: 400 jobs, 4 at a time, 50 ms each.
        o.model = ModelSource::InProcess {
            latency: Duration::from_millis(50),
            port: 0,
        };
        o.concurrency = 4;
    })
    .await;
    let (bursting, few) = (e.ctx.buyer.clone(), e.ctx.other_buyer.clone());
    // The order in which the outcomes were announced.
    let mut order = Vec::with_capacity(BURST + FEW);
    let mut burst_done_when_few_came = 0;
    for (buyer, prefix, n) in [(&bursting, "burst", BURST), (&few, "few", FEW)] {
        if buyer == &few {
            while let Ok(n) = e.notes.try_recv() {
                order.push(n.buyer);
            }
            burst_done_when_few_came = order.len();
        }
        let token = e.ctx.token(buyer).unwrap();
        for i in 0..n {
            let id = format!("{prefix}-{i:04}");
            let r = text_request(&id, Some(&token), SAMPLE_ROWS[i % 3]);
            e.stack
                .store
                .put(
                    INBOX,
                    &format!("{buyer}/requests/{id}.json"),
                    Bytes::from(serde_json::to_vec(&r).unwrap()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
    }
    while order.len() < BURST + FEW {
        let n = e.next_note(Duration::from_secs(120)).await;
        assert_eq!(
            n.event,
            sealbox_core::contract::EventKind::InferenceCompleted,
            "{n:?}"
        );
        order.push(n.buyer);
    }
    sealbox_tests::assert_not_behind_the_burst(
        &order,
        &bursting,
        &few,
        BURST,
        burst_done_when_few_came,
    );
    e.stack.stop().await;
}
