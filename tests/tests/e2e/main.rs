//! The end-to-end tests, one module per behaviour, in one test binary: each test binary links
//! every dependency (about 150 MB each), and 34 of them filled CI's disk. Run one module with
//! `cargo test -p sealbox-tests --test e2e aws_identity::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod aws_bad_input;
mod aws_bench;
mod aws_claim_store;
mod aws_cli;
mod aws_fair_share;
mod aws_first_contact;
mod aws_identity;
mod aws_ingest_iam;
mod aws_lambda;
mod aws_marketplace;
mod aws_object_store;
mod aws_queue;
mod aws_refused_objects;
mod aws_seller;
mod aws_seller_lambda;
mod aws_sns_sagemaker;
mod aws_subscriptions;
mod aws_up;
mod bad_input;
mod cli;
mod cli_answers;
mod cloudformation;
mod crash;
mod deploy_guide;
mod fair_share;
mod first_contact;
mod first_run;
mod hostile;
mod idempotency;
mod interop;
mod keys;
mod races;
mod retries;
mod token_service;
mod usage;
