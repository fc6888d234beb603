"""boto3 on behalf of the AWS end-to-end tests: a client that sealbox did not write.

Reads the AWS environment (AWS_ENDPOINT_URL for moto). Commands:
  put BUCKET              JSON lines {"key": K, "body": TEXT} on stdin -> one PutObject each
                          (with "storage_class": C, in that storage class: GLACIER objects
                          are refused to GetObject with 403 InvalidObjectState)
  get BUCKET KEY          prints the object's body
  bodies BUCKET PREFIX    prints {"key": K, "body": TEXT} for every object under PREFIX
  list BUCKET PREFIX      prints every key under PREFIX, one per line
  subscribe TOPIC QUEUE [FILTER_JSON]
                          creates QUEUE, subscribes it to TOPIC with raw delivery (and the
                          filter policy on message attributes), prints the queue URL
  drain QUEUE_URL QUIET_S prints every message as a JSON line {"body", "attributes"} until
                          the queue has been empty for QUIET_S seconds
"""
import json
import sys

import boto3


def put(bucket):
    s3 = boto3.client("s3")
    n = 0
    for line in sys.stdin:
        if line.strip():
            item = json.loads(line)
            extra = {"StorageClass": item["storage_class"]} if item.get("storage_class") else {}
            s3.put_object(Bucket=bucket, Key=item["key"], Body=item["body"].encode(), **extra)
            n += 1
    print(n)


def get(bucket, key):
    sys.stdout.buffer.write(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def list_keys(bucket, prefix):
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            print(o["Key"])


def bodies(bucket, prefix):
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
            print(json.dumps({"key": o["Key"], "body": body}))


def subscribe(topic, queue, filter_policy=None):
    sqs = boto3.client("sqs")
    sns = boto3.client("sns")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"RawMessageDelivery": "true"}
    if filter_policy:
        attributes["FilterPolicy"] = filter_policy
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    print(url)


def drain(url, quiet):
    import time

    sqs = boto3.client("sqs")
    last = time.monotonic()
    while time.monotonic() - last < float(quiet):
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
        for m in got:
            attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
            print(json.dumps({"body": json.loads(m["Body"]), "attributes": attrs}), flush=True)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if got:
            last = time.monotonic()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"put": put, "get": get, "bodies": bodies, "list": list_keys, "subscribe": subscribe, "drain": drain}[cmd](*args)
