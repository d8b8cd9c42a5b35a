"""The AWS templates (deploy/aws/) against moto's server, with the AWS CLI.

Usage:
  python deploy_aws.py policy TEMPLATE            the managed policy's actions (JSON list)
  python deploy_aws.py deploy MOTO_URL TEMPLATE   deploys it as the README says; prints
                                                  the stack's outputs (JSON object)
  python deploy_aws.py put-events MOTO_URL CLUSTER_ARN
      puts on the default bus one event of each detail type the service consumes
      (after one of another type, which the rule must not deliver)
Region us-west-2, moto's account; the AWS CLI is the one beside this Python.
"""
import json
import os
import subprocess
import sys
import tempfile

from cfnlint.decode import decode

STACK = "cluster-state-service"


def aws(url, *args):
    env = dict(os.environ, AWS_ENDPOINT_URL=url, AWS_DEFAULT_REGION="us-west-2",
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    cli = os.path.join(os.path.dirname(sys.executable), "aws")
    out = subprocess.run([cli, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"aws {' '.join(args)}: {out.stderr}")
    return out.stdout


def policy(template):
    doc, errors = decode(template)
    if errors:
        sys.exit(f"{template}: {errors}")
    actions = []
    for res in doc["Resources"].values():
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                acts = st["Action"]
                actions += [acts] if isinstance(acts, str) else acts
    print(json.dumps(sorted(set(actions))))


def deploy(url, template):
    aws(url, "cloudformation", "create-stack", "--stack-name", STACK,
        "--template-body", f"file://{template}", "--capabilities", "CAPABILITY_IAM")
    aws(url, "cloudformation", "wait", "stack-create-complete", "--stack-name", STACK)
    outputs = json.loads(aws(url, "cloudformation", "describe-stacks", "--stack-name", STACK,
                             "--query", "Stacks[0].Outputs", "--output", "json"))
    print(json.dumps({o["OutputKey"]: o["OutputValue"] for o in outputs}))


def put_events(url, cluster_arn):
    region_account = cluster_arn.split(":")[3:5]
    cluster = cluster_arn.rsplit("/", 1)[1]
    arn = lambda kind, rest: ":".join(["arn:aws:ecs", *region_account, f"{kind}/{cluster}/{rest}"])
    task, instance, service = arn("task", "0123456789abcdef0123456789abcdef"), \
        arn("container-instance", "fedcba9876543210fedcba9876543210"), arn("service", "api")
    at = "2026-12-01T10:00:00.000Z"
    details = [
        ("ECS Task State Change", [task], {
            "clusterArn": cluster_arn, "taskArn": task, "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING", "version": 1, "launchType": "EC2",
            "taskDefinitionArn": ":".join(["arn:aws:ecs", *region_account, "task-definition/web:1"]),
            "containerInstanceArn": instance, "group": "service:api", "createdAt": at,
            "updatedAt": at, "containers": []}),
        ("ECS Container Instance State Change", [instance], {
            "clusterArn": cluster_arn, "containerInstanceArn": instance,
            "ec2InstanceId": "i-0123456789abcdef0", "status": "ACTIVE", "agentConnected": True,
            "version": 1, "runningTasksCount": 1, "pendingTasksCount": 0, "registeredAt": at,
            "updatedAt": at, "attributes": [], "registeredResources": [],
            "remainingResources": []}),
        ("ECS Service Action", [service], {
            "eventType": "INFO", "eventName": "SERVICE_STEADY_STATE", "clusterArn": cluster_arn,
            "createdAt": at}),
        ("ECS Deployment State Change", [service], {
            "eventType": "INFO", "eventName": "SERVICE_DEPLOYMENT_COMPLETED",
            "deploymentId": "ecs-svc/1234567890123456789", "updatedAt": at,
            "reason": "ECS deployment ecs-svc/1234567890123456789 completed."}),
    ]
    other = ("AWS API Call via CloudTrail", [],
             {"eventSource": "ecs.amazonaws.com", "eventName": "ListTasks"})
    for detail_type, resources, detail in [other, *details]:
        entry = {"Source": "aws.ecs", "DetailType": detail_type, "Resources": resources,
                 "Detail": json.dumps(detail), "EventBusName": "default"}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([entry], f)
        answer = json.loads(aws(url, "events", "put-events", "--entries", f"file://{f.name}"))
        os.unlink(f.name)
        if answer.get("FailedEntryCount"):
            sys.exit(f"put-events: {answer}")
    print(json.dumps({"task": task, "instance": instance, "service": service}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "policy":
        policy(sys.argv[2])
    elif cmd == "deploy":
        deploy(sys.argv[2], sys.argv[3])
    elif cmd == "put-events":
        put_events(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
