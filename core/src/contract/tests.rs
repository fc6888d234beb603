use super::*;

fn base() -> serde_json::Value {
    serde_json::json!({
        "version": 1, "request_id": "r-1", "token": "t",
        "input": {"text": "5.1,3.5,1.4,0.2"},
        "content_type": "text/csv", "accept": "text/csv"
    })
}

fn check(v: serde_json::Value) -> Result<ValidRequest, Violation> {
    RequestObject::parse(&serde_json::to_vec(&v).unwrap_or_default())?.validate("b1", "r-1")
}

#[test]
fn a_minimal_request_is_valid_with_defaults() {
    let r = check(base());
    assert!(
        matches!(&r, Ok(v) if v.ttl_seconds == DEFAULT_TTL_SECONDS && v.split == Split::None),
        "{r:?}"
    );
}

#[test]
fn each_rule_names_its_reason_and_field() {
    let cases: Vec<(serde_json::Value, Reason, &str)> = vec![
        (
            serde_json::json!({"version": 2}),
            Reason::UnsupportedVersion,
            "version",
        ),
        (
            {
                let mut v = base();
                v["request_id"] = "a/b".into();
                v
            },
            Reason::InvalidRequestId,
            "request_id",
        ),
        (
            {
                let mut v = base();
                v["input"] = serde_json::json!({"text": "x", "base64": "eA=="});
                v
            },
            Reason::InputInvalid,
            "input",
        ),
        (
            {
                let mut v = base();
                v["input"] = serde_json::json!({"s3_key": "b2/inputs/x"});
                v
            },
            Reason::InputOutsidePrefix,
            "input.s3_key",
        ),
        (
            {
                let mut v = base();
                v["ttl_seconds"] = 5.into();
                v
            },
            Reason::InvalidTtl,
            "ttl_seconds",
        ),
        (
            {
                let mut v = base();
                v["accept"] = "csv".into();
                v
            },
            Reason::InvalidMediaType,
            "accept",
        ),
        (
            {
                let mut v = base();
                v["content_type"] = "text/csv; charset=\u{1}".into();
                v
            },
            Reason::InvalidMediaType,
            "content_type",
        ),
    ];
    for (v, reason, field) in cases {
        let err = check(v.clone()).err();
        assert_eq!(
            err.as_ref().map(|e| (e.reason, e.field.as_str())),
            Some((reason, field)),
            "{v}"
        );
    }
}

/// A minimal valid request object with `extra` spliced in after `version` and `input`'s
/// members replaced by `input` (raw JSON, so members can be repeated).
fn raw(extra: &str, input: &str) -> String {
    format!(
        r#"{{"version": 1, {extra} "request_id": "r-1", "token": "t", "input": {{{input}}},
        "content_type": "text/csv", "accept": "text/csv"}}"#
    )
}

#[test]
fn a_member_given_twice_at_any_depth_is_malformed_json_naming_it_and_its_path() {
    let cases = [
        (
            raw(r#""token": "other","#, r#""text": "x""#),
            "token",
            "token",
        ),
        (raw("", r#""text": "x", "text": "y""#), "input.text", "text"),
        (
            raw("", r#""text": "x", "s3_key": "b1/inputs/a", "text": "y""#),
            "input.text",
            "text",
        ),
        // The same name once escaped: serde_json reads both as `token`.
        (
            raw(r#""tok\u0065n": "other","#, r#""text": "x""#),
            "token",
            "token",
        ),
        // Otherwise the last one wins and this reads as an unsupported version.
        (
            raw(r#""version": 2,"#, r#""text": "x""#),
            "version",
            "version",
        ),
        (
            raw(
                r#""x": [{"a": 1}, {"b": {"a": 1, "a": 2}}],"#,
                r#""text": "x""#,
            ),
            "x[1].b.a",
            "a",
        ),
    ];
    for (json, field, name) in &cases {
        let err = RequestObject::parse(json.as_bytes()).err();
        assert_eq!(
            err.as_ref().map(|e| (e.reason, e.field.as_str())),
            Some((Reason::MalformedJson, *field)),
            "{json}"
        );
        let rule = err.map(|e| e.rule).unwrap_or_default();
        assert!(
            rule.contains(&format!("duplicate member `{name}`")),
            "{rule}"
        );
    }
}

#[test]
fn the_same_name_in_different_objects_is_not_a_duplicate() {
    let json = r#"{"version": 2, "a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}"#;
    assert_eq!(
        RequestObject::parse(json.as_bytes()).map_err(|e| e.reason),
        Err(Reason::UnsupportedVersion)
    );
    let ok = raw("", r#""text": "x""#);
    assert!(RequestObject::parse(ok.as_bytes()).is_ok(), "{ok}");
}

#[test]
fn a_duplicate_name_is_echoed_escaped_and_cut_short() {
    let long = "k".repeat(100);
    let json = format!(
        r#"{{"version": 1, "a\u001b[31m": 1, "a\u001b[31m": 2, "{long}": 1, "{long}": 2}}"#
    );
    let err = RequestObject::parse(json.as_bytes()).err();
    let (field, rule) = err.map(|e| (e.field, e.rule)).unwrap_or_default();
    assert_eq!(field, r"a\u{1b}[31m");
    assert!(!rule.chars().any(char::is_control), "{rule:?}");
    let json = format!(r#"{{"version": 1, "{long}": 1, "{long}": 2}}"#);
    let field = RequestObject::parse(json.as_bytes())
        .err()
        .map(|e| e.field)
        .unwrap_or_default();
    assert_eq!(field, format!("{}…", "k".repeat(64)));
}

#[test]
fn parsing_reads_every_value_as_serde_json_does() {
    let json = r#"{"version": 1, "request_id": "r-1", "token": "t\u00e9\n",
        "input": {"base64": "eA=="}, "content_type": "text/csv", "accept": "application/json",
        "custom_attributes": "a=1", "ttl_seconds": 3600, "split": "line"}"#;
    let plain: Result<RequestObject, _> = serde_json::from_slice(json.as_bytes());
    assert_eq!(RequestObject::parse(json.as_bytes()).ok(), plain.ok());
    for (version, got) in [
        ("1.0", "1.0"),
        ("-1", "-1"),
        ("[1]", "[1]"),
        ("null", "null"),
    ] {
        let json = format!(r#"{{"version": {version}}}"#);
        let err = RequestObject::parse(json.as_bytes()).err();
        assert_eq!(
            err.map(|e| (e.reason, e.rule)),
            Some((Reason::UnsupportedVersion, format!("must be 1, got {got}"))),
            "{json}"
        );
    }
    for bad in [
        raw("", r#""text": "x""#) + " x",
        "{\"version\": 1".into(),
        String::new(),
    ] {
        assert_eq!(
            RequestObject::parse(bad.as_bytes()).map_err(|e| (e.reason, e.field)),
            Err((Reason::MalformedJson, "request".to_owned())),
            "{bad}"
        );
    }
}

#[test]
fn event_ids_are_stable_and_distinct() {
    assert_eq!(event_id("a", "1"), event_id("a", "1"));
    assert_ne!(event_id("a", "1"), event_id("a", "2"));
    assert_eq!(event_id("a", "1").len(), 36);
}

#[test]
fn ids_follow_the_contract_rule() {
    assert!(is_valid_id("abc-1.2_3"));
    assert!(!is_valid_id(""));
    assert!(!is_valid_id(".."));
    assert!(!is_valid_id(&"x".repeat(65)));
    assert!(!is_valid_id("a b"));
}

#[test]
fn an_events_job_id_is_stable_per_message_and_index() {
    let id = JobMessage::job_id_for_event("m-1", 0);
    assert_eq!(id, JobMessage::job_id_for_event("m-1", 0));
    assert_eq!(id.len(), 32);
    assert_ne!(id, JobMessage::job_id_for_event("m-1", 1));
    assert_ne!(id, JobMessage::job_id_for_event("m-2", 0));
}

#[test]
fn a_carried_input_round_trips_as_text_or_base64() {
    for bytes in [b"5.1,3.5\n".to_vec(), vec![0xff, 0x00, 0x80]] {
        let input = InputRef::carried(bytes.clone());
        let json = serde_json::to_string(&input).unwrap();
        assert!(json.starts_with("{\"kind\":\"carried\""), "{json}");
        let back: InputRef = serde_json::from_str(&json).unwrap();
        assert_eq!(back.carried_bytes(), Some(Ok(bytes)));
        assert!(back.is_inline());
    }
    assert_eq!(InputRef::Inline.carried_bytes(), None);
}

#[test]
fn an_outcome_document_carries_its_reasons_one_line_hint_and_reads_without_one() {
    let v = Violation::new(Reason::TokenExpired, "token", "token has expired");
    let doc = OutcomeDocument::new(OutcomeKind::Rejected, "b1", "r1", "b1/requests/r1.json", &v);
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["hint"], Reason::TokenExpired.hint());
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("hint");
    let back: OutcomeDocument = serde_json::from_value(old).unwrap();
    assert_eq!(back.hint, None, "documents of earlier builds have no hint");
    for r in [
        Reason::MalformedJson,
        Reason::TokenMalformed,
        Reason::ModelError,
    ] {
        assert!(!r.hint().is_empty() && !r.hint().contains('\n'), "{r}");
    }
}

#[test]
fn a_carried_input_with_both_or_neither_member_is_an_error_not_a_guess() {
    for json in [
        r#"{"kind":"carried"}"#,
        r#"{"kind":"carried","text":"a","base64":"YQ=="}"#,
        r#"{"kind":"carried","base64":"%%%"}"#,
    ] {
        let input: InputRef = serde_json::from_str(json).unwrap();
        assert!(matches!(input.carried_bytes(), Some(Err(_))), "{json}");
    }
}
#[test]
fn notifications_and_documents_of_older_builds_read_without_usage() {
    let n: Notification = serde_json::from_value(serde_json::json!({
        "version": 1, "event_id": "e", "event": "InferenceCompleted", "buyer": "b",
        "request_id": "r", "output_location": "s3://outbox/b/results/r.out",
        "content_type": "text/csv", "bytes": 3, "received_at": "2026-11-25T19:00:00Z",
        "completed_at": "2026-11-25T19:00:01Z", "attempts": 1
    }))
    .unwrap();
    assert_eq!(n.usage, None);
    assert!(!serde_json::to_string(&n).unwrap().contains("usage"));
    let d: OutcomeDocument = serde_json::from_value(serde_json::json!({
        "version": 1, "buyer": "b", "request_id": "r", "outcome": "failed",
        "reason": "model_error", "message": "m", "request_key": "b/requests/r.json",
        "attempts": 1, "received_at": "2026-11-25T19:00:00Z",
        "decided_at": "2026-11-25T19:00:01Z"
    }))
    .unwrap();
    assert_eq!(d.usage, None);
}

#[test]
fn usage_is_written_with_every_member_and_read_back() {
    let usage = Usage {
        invocations: 3,
        records: 250,
        metered: true,
        bytes_in: 4000,
        bytes_out: 3000,
        model_ms: 12,
    };
    let v = serde_json::to_value(usage).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"invocations": 3, "records": 250, "metered": true,
                           "bytes_in": 4000, "bytes_out": 3000, "model_ms": 12})
    );
    assert_eq!(serde_json::from_value::<Usage>(v).unwrap(), usage);
}

#[test]
fn usage_rides_in_one_metadata_entry_of_compact_json_well_under_s3s_limit() {
    let usage = Usage {
        invocations: u32::MAX,
        records: u64::MAX,
        metered: false,
        bytes_in: u64::MAX,
        bytes_out: u64::MAX,
        model_ms: u64::MAX,
    };
    let metadata = usage.to_metadata().unwrap();
    assert_eq!(metadata.len(), 1);
    let value = &metadata[USAGE_METADATA];
    assert!(!value.contains(' '), "{value}");
    crate::ports::object_store::check_metadata(&metadata).unwrap();
    assert!(value.len() < 256, "{} bytes", value.len());
    assert_eq!(Usage::from_metadata(&metadata).unwrap(), Some(usage));
}

#[test]
fn a_result_without_usage_metadata_has_none_and_a_bad_value_is_an_error() {
    assert_eq!(Usage::from_metadata(&Metadata::new()).unwrap(), None);
    let bad = Metadata::from([(USAGE_METADATA.to_owned(), "{\"records\":1}".to_owned())]);
    assert!(Usage::from_metadata(&bad).is_err());
}

#[test]
fn usage_totals_add_every_member_and_stay_metered_only_if_all_were() {
    let mut total = Usage::none();
    total.add(&Usage {
        invocations: 2,
        records: 10,
        metered: true,
        bytes_in: 1,
        bytes_out: 2,
        model_ms: 3,
    });
    assert!(total.metered);
    total.add(&Usage {
        invocations: 1,
        records: 1,
        metered: false,
        bytes_in: 1,
        bytes_out: 1,
        model_ms: 1,
    });
    assert_eq!(
        total,
        Usage {
            invocations: 3,
            records: 11,
            metered: false,
            bytes_in: 2,
            bytes_out: 3,
            model_ms: 4,
        }
    );
}
