//! The CloudFormation templates (infra/cloudformation/) deployed on moto's CloudFormation, from
//! the copies `scripts/package` writes, and every resource moto creates checked against what the
//! template declares. Moto creates no bucket policies, queue policies, alarms, function URLs,
//! schedules or autoscaling: [`NOT_ON_MOTO`] lists them and the test checks they are the only
//! resources missing. The Lambda zips are placeholders (moto runs no function); the real zips come
//! from `scripts/package` (docs/DEPLOY.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use sealbox_aws::config::Var;
use sealbox_tests::aws_cli::{AwsCli, placeholder_zips, workspace_root};
use sealbox_tests::moto::Moto;
use sealbox_tests::python;

/// Resource types moto's CloudFormation skips (it warns "not supported" and goes on), and what
/// of each template goes unchecked because of it.
const NOT_ON_MOTO: &[(&str, &str)] = &[
    ("AWS::S3::BucketPolicy", "the TLS-only bucket policies"),
    (
        "AWS::SQS::QueuePolicy",
        "the inbox-events queue policy that lets S3 send (the inbox's notification configuration is dropped with it)",
    ),
    ("AWS::CloudWatch::Alarm", "the alarms"),
    (
        "AWS::Lambda::Url",
        "the token service's function URL, and the seller's outputs TokenServiceUrl and JwksUrl that read it (removed from the copy deployed here)",
    ),
    ("AWS::Scheduler::Schedule", "the rotation schedule"),
    (
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "endpoint autoscaling (off by default)",
    ),
    (
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "endpoint autoscaling (off by default)",
    ),
];

/// Properties moto's CloudFormation accepts but does not apply, so the test cannot read them back.
const PROPERTIES_NOT_ON_MOTO: &[&str] = &[
    "Lambda Architectures (moto reports x86_64): the zips are arm64 builds, see scripts/package",
    "S3 PublicAccessBlockConfiguration, OwnershipControls, LifecycleConfiguration, BucketKeyEnabled, VersioningConfiguration",
    "S3 NotificationConfiguration of the inbox (dropped with the queue policy it depends on)",
    "DynamoDB SSESpecification, PointInTimeRecoverySpecification and TimeToLiveSpecification",
    "Logs KmsKeyId of the log groups",
    "SageMaker EndpointName (moto names the endpoint after the stack) and EnableNetworkIsolation",
];

const MODEL_PACKAGE: &str =
    "arn:aws:sagemaker:us-east-1:123456789012:model-package/iris-classifier/1";
/// What the seller hands its buyers, passed to both stacks (neither template has a default).
const PRODUCT: &str = "acme-churn-model";
const ISSUER: &str = "acme-models";
/// The seller's Marketplace product, mapped to [`PRODUCT`]: the marketplace-events function.
const MARKETPLACE_PRODUCTS: &str = "prod-abcdefghijklm=acme-churn-model";
/// The seller stack's JwksUrl output on AWS (moto serves no function URL).
const JWKS_URL: &str = "https://abcdefghij.lambda-url.us-east-1.on.aws/.well-known/jwks.json";
/// The seller's token service, for the buyer stack's `TokenSource: iam`.
const TOKEN_SERVICE_URL: &str = "https://abcdefghij.lambda-url.us-east-1.on.aws/";

/// A template as JSON, read with cfn-lint's decoder from the test venv: the YAML short forms
/// become `{"Ref": ..}`, `{"Fn::GetAtt": [..]}`, `{"Fn::Sub": ..}`.
fn template(path: &str) -> Value {
    let script = "import json, sys\nfrom cfnlint.decode import decode\nt, errors = decode(sys.argv[1])\nassert not errors, errors\nprint(json.dumps(t))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(workspace_root().join(path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "decoding {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Logical id -> type of each resource in a template.
fn declared(template: &Value) -> BTreeMap<String, String> {
    template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, r)| (id.clone(), r["Type"].as_str().unwrap().to_owned()))
        .collect()
}

/// The resources of one type in a template, by logical id.
fn of_type<'a>(template: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == ty)
        .collect()
}

/// What moto accepts without applying it, checked in the templates themselves.
fn properties_moto_drops(buyer: &Value, seller: &Value, checked: &mut Vec<String>) {
    for t in [buyer, seller] {
        for (id, f) in of_type(t, "AWS::Lambda::Function") {
            assert_eq!(
                f["Properties"]["Architectures"],
                serde_json::json!(["arm64"]),
                "{id}"
            );
        }
        for (id, b) in of_type(t, "AWS::S3::Bucket") {
            let pab = &b["Properties"]["PublicAccessBlockConfiguration"];
            for k in [
                "BlockPublicAcls",
                "BlockPublicPolicy",
                "IgnorePublicAcls",
                "RestrictPublicBuckets",
            ] {
                assert_eq!(pab[k], true, "{id}: {k}");
            }
        }
        for (id, g) in of_type(t, "AWS::Logs::LogGroup") {
            assert!(!g["Properties"]["KmsKeyId"].is_null(), "{id}: KmsKeyId");
            assert!(
                !g["Properties"]["RetentionInDays"].is_null(),
                "{id}: RetentionInDays"
            );
        }
    }
    checked.push("templates: every function arm64; every bucket blocks public access; every log group KMS-encrypted with a retention".into());
    let tables: Vec<_> = of_type(seller, "AWS::DynamoDB::Table")
        .into_iter()
        .chain(of_type(buyer, "AWS::DynamoDB::Table"))
        .collect();
    assert_eq!(
        tables.len(),
        3,
        "the seller's two tables and the buyer's claims"
    );
    for (id, table) in tables {
        let p = &table["Properties"];
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}"
        );
        assert_eq!(p["SSESpecification"]["SSEEnabled"], true, "{id}");
        assert!(!p["SSESpecification"]["KMSMasterKeyId"].is_null(), "{id}");
    }
    checked.push(
        "seller.yaml's two tables and buyer.yaml's claims: point-in-time recovery, a customer KMS key"
            .into(),
    );
    let r = &buyer["Resources"];
    let ttl = &r["ClaimsTable"]["Properties"]["TimeToLiveSpecification"];
    assert_eq!(
        (&ttl["AttributeName"], &ttl["Enabled"]),
        (&serde_json::json!("expires_at"), &serde_json::json!(true))
    );
    checked.push("buyer.yaml: claims expire by TTL on expires_at".into());
    assert_eq!(r["Model"]["Properties"]["EnableNetworkIsolation"], true);
    checked.push("buyer.yaml: the model has EnableNetworkIsolation: true".into());
    for bucket in ["InboxBucket", "OutboxBucket"] {
        let rule = &r[bucket]["Properties"]["LifecycleConfiguration"]["Rules"][0];
        assert!(
            rule["ExpirationInDays"]["Ref"].is_string(),
            "{bucket}: expiry from a parameter"
        );
        assert_eq!(
            rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 1,
            "{bucket}"
        );
    }
    checked.push("buyer.yaml: inbox and outbox expire objects after a parameter's days and abort incomplete uploads".into());
    // The inbox's notification and its queue policy, without a cycle: the policy names the
    // bucket by the ARN built from its name, and the bucket waits for the policy.
    let inbox = &r["InboxBucket"];
    let queue = &inbox["Properties"]["NotificationConfiguration"]["QueueConfigurations"][0];
    assert_eq!(
        queue["Queue"],
        serde_json::json!({"Fn::GetAtt": ["InboxEventsQueue", "Arn"]})
    );
    assert_eq!(queue["Filter"]["S3Key"]["Rules"][0]["Value"], ".json");
    assert_eq!(inbox["DependsOn"], "InboxEventsQueuePolicy");
    let statement = &r["InboxEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    let source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
        .as_str()
        .unwrap();
    let name = inbox["Properties"]["BucketName"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert_eq!(source, format!("arn:${{AWS::Partition}}:s3:::{name}"));
    assert!(
        !statement.to_string().contains("\"InboxBucket\""),
        "no reference to the bucket: {statement}"
    );
    checked.push(format!("buyer.yaml: the inbox notifies InboxEventsQueue of *.json, after the queue policy that admits S3 from {source}"));
}

/// The seller template without its two outputs that read the function URL: moto's
/// CloudFormation answers 500 to a stack whose outputs read an attribute of a type it skips.
fn without_function_url_outputs(template: &str) -> String {
    let outputs = template.find("\nOutputs:\n").expect("an Outputs section");
    let (head, tail) = template.split_at(outputs);
    let start = tail
        .find("\n  TokenServiceUrl:\n")
        .expect("the TokenServiceUrl output")
        + 1;
    let end = tail
        .find("\n  JwksBucket:\n")
        .expect("the JwksBucket output after it")
        + 1;
    assert!(
        tail[start..end].contains("\n  JwksUrl:\n"),
        "the JwksUrl output sits between them"
    );
    format!("{head}{}{}", &tail[..start], &tail[end..])
}

/// Runs `scripts/package` on zips built before; returns the packaged templates' folder.
fn package(lambda_dir: &Path, out: &Path) -> String {
    let run = Command::new("bash")
        .arg(workspace_root().join("scripts/package"))
        .env("SKIP_BUILD", "1")
        .env("LAMBDA_DIR", lambda_dir)
        .env("PACKAGE_DIR", out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "scripts/package failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

fn outputs(cli: &AwsCli, stack: &str) -> BTreeMap<String, (String, String)> {
    let v = cli.json(&["cloudformation", "describe-stacks", "--stack-name", stack]);
    let stack = &v["Stacks"][0];
    assert_eq!(stack["StackStatus"], "CREATE_COMPLETE", "{stack:#}");
    stack["Outputs"]
        .as_array()
        .expect("the stack has outputs")
        .iter()
        .map(|o| {
            (
                o["OutputKey"].as_str().unwrap().to_owned(),
                (
                    o["OutputValue"].as_str().unwrap().to_owned(),
                    o["Description"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

/// Creates a stack and waits for it, as docs/DEPLOY.md does.
fn deploy(cli: &AwsCli, stack: &str, template: &Path, params: &[(&str, &str)]) {
    let body = format!("file://{}", template.display());
    let mut args = vec![
        "cloudformation".to_owned(),
        "create-stack".to_owned(),
        "--stack-name".to_owned(),
        stack.to_owned(),
        "--template-body".to_owned(),
        body,
        "--capabilities".to_owned(),
        "CAPABILITY_NAMED_IAM".to_owned(),
        "--parameters".to_owned(),
    ];
    args.extend(
        params
            .iter()
            .map(|(k, v)| format!("ParameterKey={k},ParameterValue={v}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli.json(&args);
    cli.text(&[
        "cloudformation",
        "wait",
        "stack-create-complete",
        "--stack-name",
        stack,
    ]);
}

/// Checks the stack made every declared resource but those moto skips; returns logical id ->
/// physical id.
fn created(
    cli: &AwsCli,
    stack: &str,
    template: &Value,
    checked: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let v = cli.json(&[
        "cloudformation",
        "list-stack-resources",
        "--stack-name",
        stack,
    ]);
    let made: BTreeMap<String, String> = v["StackResourceSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                r["LogicalResourceId"]
                    .as_str()
                    .filter(|s| !s.is_empty())?
                    .to_owned(),
                r["PhysicalResourceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        })
        .collect();
    let skipped: BTreeSet<&str> = NOT_ON_MOTO.iter().map(|(t, _)| *t).collect();
    let mut missing = Vec::new();
    for (id, ty) in declared(template) {
        let conditional = ty.starts_with("AWS::ApplicationAutoScaling::");
        match (
            made.contains_key(&id),
            skipped.contains(ty.as_str()) || conditional,
        ) {
            (true, _) => {}
            (false, true) => missing.push(format!("{id} ({ty})")),
            (false, false) => panic!("{stack}: {id} ({ty}) was not created: {v:#}"),
        }
    }
    checked.push(format!(
        "{stack}: {} resources created; not created by moto: {}",
        made.len(),
        missing.join(", ")
    ));
    made
}

fn attrs(cli: &AwsCli, queue_url: &str) -> Value {
    cli.json(&[
        "sqs",
        "get-queue-attributes",
        "--queue-url",
        queue_url,
        "--attribute-names",
        "All",
    ])["Attributes"]
        .clone()
}

/// A policy document moto returns as Python's repr of the template's dict (single quotes,
/// `None`), as JSON.
fn python_literal(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str(text) {
        return v;
    }
    let script = "import ast, json, sys\nprint(json.dumps(ast.literal_eval(sys.argv[1])))";
    let out = Command::new(python())
        .args(["-c", script, text])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{text}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every statement of a role's inline policies.
fn statements(cli: &AwsCli, role: &str) -> Vec<Value> {
    let names = cli.json(&["iam", "list-role-policies", "--role-name", role]);
    let mut out = Vec::new();
    for name in names["PolicyNames"].as_array().unwrap() {
        let doc = cli.json(&[
            "iam",
            "get-role-policy",
            "--role-name",
            role,
            "--policy-name",
            name.as_str().unwrap(),
        ]);
        let doc = match &doc["PolicyDocument"] {
            Value::String(s) => python_literal(s),
            v => v.clone(),
        };
        // Moto keeps an `AWS::NoValue` list item as null where CloudFormation drops it.
        out.extend(
            doc["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| !s.is_null())
                .cloned(),
        );
    }
    assert!(!out.is_empty(), "{role} has no inline policy");
    out
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_owned()).collect(),
        _ => Vec::new(),
    }
}

/// Least privilege, read off a role: no `*` action or `service:*`, and a `*` resource only for
/// the actions in `star_ok` (which support no narrower resource). Returns one line per statement.
fn least_privilege(cli: &AwsCli, role: &str, star_ok: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in statements(cli, role) {
        assert_eq!(s["Effect"], "Allow", "{role}: {s}");
        let actions = list(&s["Action"]);
        let resources = list(&s["Resource"]);
        for a in &actions {
            assert!(
                a != "*" && !a.ends_with(":*"),
                "{role} allows every action of {a}: {s}"
            );
        }
        if actions.iter().any(|a| a == "logs:PutLogEvents") {
            for r in &resources {
                // A log group's Arn attribute already ends in `:*`: the streams need their own ARN.
                assert!(
                    r.ends_with(":log-stream:*"),
                    "{role}: log events go to streams: {s}"
                );
            }
        }
        if resources.iter().any(|r| r == "*") {
            for a in &actions {
                assert!(
                    star_ok.contains(&a.as_str()),
                    "{role}: {a} on resource * where a narrower resource exists: {s}"
                );
            }
            assert!(
                !s["Condition"].is_null(),
                "{role}: a * resource without a condition: {s}"
            );
        }
        lines.push(format!(
            "{role}: {} on {}",
            actions.join(", "),
            resources.join(", ")
        ));
    }
    lines
}

/// The name of a function's role, from its configuration.
fn role_name(function: &Value) -> &str {
    function["Role"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
}

fn function(
    cli: &AwsCli,
    name: &str,
    code_key_prefix: &str,
    vars: &[Var],
    checked: &mut Vec<String>,
) -> Value {
    let f = cli.json(&[
        "lambda",
        "get-function-configuration",
        "--function-name",
        name,
    ]);
    assert_eq!(f["Runtime"], "provided.al2023", "{f:#}");
    assert_eq!(f["Handler"], "bootstrap");
    let env: BTreeSet<&str> = f["Environment"]["Variables"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = vars.iter().map(|v| v.name()).collect();
    assert_eq!(env, want, "{name}: environment");
    let code = cli.json(&["lambda", "get-function", "--function-name", name]);
    let location = code["Code"]["Location"].as_str().unwrap_or_default();
    assert!(
        location.contains(code_key_prefix),
        "{name}: code from the packaged zip {code_key_prefix}*: {code:#}"
    );
    checked.push(format!(
        "{name}: provided.al2023, handler bootstrap, timeout {} s, {} MB, environment {}",
        f["Timeout"],
        f["MemorySize"],
        env.into_iter().collect::<Vec<_>>().join(" ")
    ));
    f
}

#[test]
fn both_templates_deploy_on_the_emulator_and_create_what_they_declare() {
    let moto = Moto::start();
    let cli = AwsCli::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let lambdas = dir.path().join("lambda");
    let packaged = dir.path().join("package");
    placeholder_zips(&lambdas);
    let mut checked = Vec::new();
    let buyer_template_json = template("infra/cloudformation/buyer.yaml");
    let seller_template_json = template("infra/cloudformation/seller.yaml");
    properties_moto_drops(&buyer_template_json, &seller_template_json, &mut checked);

    // Packaging: content-hashed zips and templates whose zip parameters default to them.
    let listing = package(&lambdas, &packaged);
    let mut hashed = BTreeMap::new();
    for entry in std::fs::read_dir(&packaged).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".zip") {
            let (function, hash) = stem.rsplit_once('-').unwrap();
            assert_eq!(hash.len(), 16, "{name}");
            hashed.insert(function.to_owned(), name.clone());
        }
    }
    assert_eq!(
        hashed.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "ingest",
            "marketplace-events",
            "rotate-keys",
            "token-service",
            "worker"
        ],
        "{listing}"
    );
    for (template, functions) in [
        ("buyer.yaml", &["ingest", "worker"][..]),
        (
            "seller.yaml",
            &["token-service", "rotate-keys", "marketplace-events"][..],
        ),
    ] {
        let text = std::fs::read_to_string(packaged.join(template)).unwrap();
        for f in functions {
            assert!(
                text.contains(&format!("    Default: {}\n", hashed[*f])),
                "{template} points at {}",
                hashed[*f]
            );
        }
    }
    checked.push(format!(
        "scripts/package: {} hashed zips, packaged buyer.yaml and seller.yaml default to them",
        hashed.len()
    ));

    cli.text(&["s3", "mb", "s3://sealbox-code"]);
    cli.text(&[
        "s3",
        "cp",
        packaged.to_str().unwrap(),
        "s3://sealbox-code/sealbox/",
        "--recursive",
        "--exclude",
        "*",
        "--include",
        "*.zip",
    ]);

    // ---- seller
    let seller_template = packaged.join("seller-on-moto.yaml");
    let text = std::fs::read_to_string(packaged.join("seller.yaml")).unwrap();
    std::fs::write(&seller_template, without_function_url_outputs(&text)).unwrap();
    deploy(
        &cli,
        "sealbox-seller",
        &seller_template,
        &[
            ("CodeBucket", "sealbox-code"),
            ("CodePrefix", "sealbox/"),
            ("Product", PRODUCT),
            ("Issuer", ISSUER),
            ("MarketplaceProducts", MARKETPLACE_PRODUCTS),
        ],
    );
    let seller = outputs(&cli, "sealbox-seller");
    created(&cli, "sealbox-seller", &seller_template_json, &mut checked);
    let env = &seller["Environment"].0;
    for var in Var::SELLER {
        assert!(
            env.contains(&format!("{}=", var.name())),
            "seller Environment output lacks {var}: {env}"
        );
        assert!(
            seller
                .values()
                .any(|(_, d)| d.starts_with(&format!("{}:", var.name()))),
            "no seller output for {var}"
        );
    }
    checked.push(format!(
        "seller outputs: {} (Environment sets {})",
        seller.keys().cloned().collect::<Vec<_>>().join(", "),
        Var::SELLER.map(|v| v.name()).join(" ")
    ));
    let keys_table = &seller["KeysTable"].0;
    let subscriptions_table = &seller["SubscriptionsTable"].0;
    for (table, key) in [(keys_table, "id"), (subscriptions_table, "product")] {
        let t = cli.json(&["dynamodb", "describe-table", "--table-name", table])["Table"].clone();
        assert_eq!(t["KeySchema"][0]["AttributeName"], key, "{t:#}");
        assert_eq!(
            t["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST",
            "{t:#}"
        );
        assert_eq!(t["DeletionProtectionEnabled"], true, "{t:#}");
    }
    checked.push(format!("tables {keys_table} (id) and {subscriptions_table} (product, buyer): on demand, deletion protection"));
    let jwks_object = &seller["JwksObject"].0;
    let jwks_bucket = jwks_object
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap();
    let enc = cli.json(&["s3api", "get-bucket-encryption", "--bucket", jwks_bucket]);
    let rule = &enc["ServerSideEncryptionConfiguration"]["Rules"][0];
    assert_eq!(
        rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256",
        "{enc:#}"
    );
    checked.push(format!(
        "{jwks_bucket}: SSE-S3 (public keys and grant ids only)"
    ));
    let seller_vars = [
        Var::KeysTable,
        Var::SubscriptionsTable,
        Var::JwksObject,
        Var::Product,
        Var::Issuer,
    ];
    let token_service = function(
        &cli,
        "sealbox-seller-token-service",
        &format!("sealbox/{}", hashed["token-service"]),
        &seller_vars,
        &mut checked,
    );
    let mut rotate_vars = seller_vars.to_vec();
    rotate_vars.push(Var::RotateEvery);
    let rotate_keys = function(
        &cli,
        "sealbox-seller-rotate-keys",
        &format!("sealbox/{}", hashed["rotate-keys"]),
        &rotate_vars,
        &mut checked,
    );
    let mut marketplace_vars = seller_vars.to_vec();
    marketplace_vars.push(Var::MarketplaceProducts);
    let marketplace = function(
        &cli,
        "sealbox-seller-marketplace-events",
        &format!("sealbox/{}", hashed["marketplace-events"]),
        &marketplace_vars,
        &mut checked,
    );
    assert_eq!(
        marketplace["Environment"]["Variables"]["SEALBOX_MARKETPLACE_PRODUCTS"],
        MARKETPLACE_PRODUCTS,
        "{marketplace:#}"
    );
    let rule = cli.json(&[
        "events",
        "describe-rule",
        "--name",
        "sealbox-seller-marketplace-events",
    ]);
    let pattern: Value = serde_json::from_str(rule["EventPattern"].as_str().unwrap()).unwrap();
    assert_eq!(
        pattern["source"],
        serde_json::json!(["aws.agreement-marketplace"]),
        "{rule:#}"
    );
    assert_eq!(
        pattern["detail-type"].as_array().unwrap().len(),
        6,
        "{rule:#}"
    );
    let targets = cli.json(&[
        "events",
        "list-targets-by-rule",
        "--rule",
        "sealbox-seller-marketplace-events",
    ]);
    assert_eq!(
        targets["Targets"][0]["Arn"], marketplace["FunctionArn"],
        "the rule invokes marketplace-events: {targets:#}"
    );
    checked.push(
        "marketplace-events: on the rule for aws.agreement-marketplace (created, amended, ended; manufacturer and proposer)".into(),
    );

    // ---- buyer, reading the seller's keys over https (no grant in the seller's stack)
    deploy(
        &cli,
        "sealbox",
        &packaged.join("buyer.yaml"),
        &[
            ("CodeBucket", "sealbox-code"),
            ("CodePrefix", "sealbox/"),
            ("ModelPackageArn", MODEL_PACKAGE),
            ("SellerJwksUrl", JWKS_URL),
            ("Product", PRODUCT),
            ("Issuer", ISSUER),
            ("WorkerConcurrency", "3"),
            ("TokenSource", "iam"),
            ("TokenServiceUrl", TOKEN_SERVICE_URL),
        ],
    );
    let buyer = outputs(&cli, "sealbox");
    let made = created(&cli, "sealbox", &buyer_template_json, &mut checked);
    let env = &buyer["Environment"].0;
    for var in Var::ALL {
        assert!(
            env.contains(&format!("{}=", var.name())),
            "buyer Environment output lacks {var}: {env}"
        );
        assert!(
            buyer
                .values()
                .any(|(_, d)| d.starts_with(&format!("{}:", var.name()))),
            "no buyer output for {var}"
        );
    }
    for (var, value) in [
        ("SEALBOX_JWKS", JWKS_URL),
        ("SEALBOX_PRODUCT", PRODUCT),
        ("SEALBOX_ISSUER", ISSUER),
    ] {
        assert!(
            env.split(' ').any(|kv| kv == format!("{var}={value}")),
            "{var}={value} in {env}"
        );
    }
    // Claims: the functions and the CLI use the same table, kept as long as the outcomes.
    for (var, value) in [
        ("SEALBOX_CLAIMS_TABLE", "sealbox-claims"),
        ("SEALBOX_CLAIM_RETENTION", "90d"),
        ("SEALBOX_OUTBOX_CLAIMS", "read"),
    ] {
        assert!(
            env.split(' ').any(|kv| kv == format!("{var}={value}")),
            "{var}={value} in {env}"
        );
    }
    let table = cli.json(&[
        "dynamodb",
        "describe-table",
        "--table-name",
        "sealbox-claims",
    ]);
    let t = &table["Table"];
    assert_eq!(
        t["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST",
        "{table:#}"
    );
    checked.push("claims table: on demand".into());
    checked.push(format!(
        "buyer outputs: every SEALBOX_* of `--backend aws` ({})",
        Var::ALL.map(|v| v.name()).join(" ")
    ));

    // Key, buckets, queues, topic.
    let key_id = &made["DataKey"];
    // (moto answers DescribeKey on a key its CloudFormation made with a 500.)
    let key_arn = format!("arn:aws:kms:us-east-1:123456789012:key/{key_id}");
    let rotation = cli.json(&["kms", "get-key-rotation-status", "--key-id", key_id]);
    assert_eq!(rotation["KeyRotationEnabled"], true);
    checked.push("DataKey: customer-managed, rotation on".into());
    for bucket in [&buyer["InboxBucket"].0, &buyer["OutboxBucket"].0] {
        let enc = cli.json(&["s3api", "get-bucket-encryption", "--bucket", bucket]);
        let rule = &enc["ServerSideEncryptionConfiguration"]["Rules"][0];
        assert_eq!(
            rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "aws:kms",
            "{enc:#}"
        );
        assert_eq!(
            rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"],
            key_arn.as_str()
        );
        checked.push(format!("{bucket}: SSE-KMS with DataKey"));
    }
    let topic = cli.json(&[
        "sns",
        "get-topic-attributes",
        "--topic-arn",
        &buyer["TopicArn"].0,
    ]);
    assert!(
        !topic["Attributes"]["KmsMasterKeyId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{topic:#}"
    );
    checked.push("notifications topic: KMS-encrypted".into());

    // Functions, and queues against their timeouts.
    let ingest_vars = [
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::InboxEventsQueueUrl,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::Jwks,
        Var::Product,
        Var::Issuer,
        Var::ClaimsTable,
        Var::ClaimRetention,
        Var::OutboxClaims,
        Var::TokenSource,
        Var::TokenServiceUrl,
    ];
    let worker_vars = [
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::EndpointName,
        Var::ClaimsTable,
        Var::ClaimRetention,
        Var::OutboxClaims,
    ];
    let ingest = function(
        &cli,
        "sealbox-ingest",
        &format!("sealbox/{}", hashed["ingest"]),
        &ingest_vars,
        &mut checked,
    );
    let ingest_env = &ingest["Environment"]["Variables"];
    assert_eq!(
        (
            &ingest_env["SEALBOX_TOKEN_SOURCE"],
            &ingest_env["SEALBOX_TOKEN_SERVICE_URL"]
        ),
        (
            &serde_json::json!("iam"),
            &serde_json::json!(TOKEN_SERVICE_URL)
        ),
        "{ingest:#}"
    );
    checked.push("ingest: TokenSource iam, with the seller's token service".into());
    let worker = function(
        &cli,
        "sealbox-worker",
        &format!("sealbox/{}", hashed["worker"]),
        &worker_vars,
        &mut checked,
    );
    for (queue, f, receives) in [
        (&buyer["InboxEventsQueueUrl"].0, &ingest, 10),
        (&buyer["JobsQueueUrl"].0, &worker, 5),
    ] {
        let a = attrs(&cli, queue);
        let visibility: u64 = a["VisibilityTimeout"].as_str().unwrap().parse().unwrap();
        let timeout = f["Timeout"].as_u64().unwrap();
        assert!(
            visibility >= 6 * timeout,
            "{queue}: visibility {visibility} s < 6 x {timeout} s"
        );
        let redrive: Value = serde_json::from_str(a["RedrivePolicy"].as_str().unwrap()).unwrap();
        assert_eq!(
            redrive["maxReceiveCount"].to_string().trim_matches('"'),
            receives.to_string(),
            "{redrive}"
        );
        let dlq = redrive["deadLetterTargetArn"].as_str().unwrap();
        assert!(dlq.ends_with("-dlq"), "{dlq}");
        assert!(
            !a["KmsMasterKeyId"].as_str().unwrap_or_default().is_empty(),
            "{queue}: {a:#}"
        );
        checked.push(format!("{queue}: visibility {visibility} s = {} x the function's {timeout} s, dead letters after {receives} receives to {dlq}, KMS-encrypted", visibility / timeout));
    }
    for (function, concurrency) in [("sealbox-ingest", None), ("sealbox-worker", Some(3))] {
        let m = cli.json(&[
            "lambda",
            "list-event-source-mappings",
            "--function-name",
            function,
        ]);
        let m = &m["EventSourceMappings"][0];
        assert_eq!(
            m["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"]),
            "{m:#}"
        );
        if let Some(c) = concurrency {
            assert_eq!(m["ScalingConfig"]["MaximumConcurrency"], c, "{m:#}");
        }
        checked.push(format!(
            "{function}: event source mapping with ReportBatchItemFailures{}",
            concurrency
                .map(|c| format!(", MaximumConcurrency {c}"))
                .unwrap_or_default()
        ));
    }

    // The model: the seller's package, network-isolated.
    let endpoint = &buyer["EndpointName"].0;
    let ep = cli.json(&[
        "sagemaker",
        "describe-endpoint",
        "--endpoint-name",
        endpoint,
    ]);
    let config = cli.json(&[
        "sagemaker",
        "describe-endpoint-config",
        "--endpoint-config-name",
        ep["EndpointConfigName"].as_str().unwrap(),
    ]);
    let variant = &config["ProductionVariants"][0];
    assert_eq!(variant["InstanceType"], "ml.m5.large", "{config:#}");
    assert_eq!(variant["InitialInstanceCount"], 1);
    let model = cli.json(&[
        "sagemaker",
        "describe-model",
        "--model-name",
        variant["ModelName"].as_str().unwrap(),
    ]);
    assert_eq!(
        model["PrimaryContainer"]["ModelPackageName"], MODEL_PACKAGE,
        "{model:#}"
    );
    checked.push(format!(
        "endpoint {endpoint}: 1 x ml.m5.large, model from {MODEL_PACKAGE}"
    ));

    // Least privilege, read off the roles.
    let mut policy = Vec::new();
    policy.extend(least_privilege(&cli, "sealbox-ingest", &[]));
    policy.extend(least_privilege(&cli, "sealbox-worker", &[]));
    policy.extend(least_privilege(
        &cli,
        "sealbox-model",
        &["cloudwatch:PutMetricData"],
    ));
    // The seller's keys come over https: the buyer's roles reach no bucket of the seller's.
    for role in ["sealbox-ingest", "sealbox-worker"] {
        for s in statements(&cli, role) {
            assert!(
                !s.to_string().contains(jwks_bucket),
                "{role} reaches the seller's bucket: {s}"
            );
        }
    }
    policy.extend(least_privilege(&cli, role_name(&token_service), &[]));
    policy.extend(least_privilege(
        &cli,
        role_name(&rotate_keys),
        &["kms:CreateKey"],
    ));

    println!("checked on moto's CloudFormation:");
    for line in &checked {
        println!("  - {line}");
    }
    println!("role policies (no * action; * resource only where the action has no resource type):");
    for line in &policy {
        println!("  - {line}");
    }
    println!("not checkable on moto (it accepts these properties without applying them):");
    for what in PROPERTIES_NOT_ON_MOTO {
        println!("  - {what}");
    }
    println!("not checkable on moto (its CloudFormation skips these types):");
    for (ty, what) in NOT_ON_MOTO {
        println!("  - {ty}: {what}");
    }
}
