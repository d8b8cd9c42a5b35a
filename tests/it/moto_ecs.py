"""Builds ECS state in a moto server for the reconcile tests.

Usage: python moto_ecs.py ENDPOINT SPEC_JSON
SPEC_JSON: {"region": REGION (default us-west-2),
            "role_arn": ROLE (default none: moto's own account 123456789012),
            "clusters": {"NAME": {"instances": N, "tasks": M, "fargate_tasks": F,
                                  "services": {"SVC": DESIRED},
                                  "update": {"SVC": DESIRED},
                                  "delete": ["SVC"]}}}
Prints {"NAME": {"cluster": ARN, "instances": [ARN...], "tasks": [ARN...],
                 "services": {"SVC": ARN}}}.
Tasks are kept RUNNING (moto would otherwise move them on at each Describe).
"services" creates services (task definition "web"), "update" sets their
desired count, "delete" scales them to 0 and deletes them (moto then
describes them as INACTIVE); "service_tasks": {"SVC": N} runs N tasks of the
service (group service:SVC, started by its deployment), listed in "tasks".
SPEC_JSON {"stop": [{"cluster": C, "task": ARN, "reason": R}]} only stops
those tasks.
With "role_arn", the state is made with the credentials of that role, assumed
through moto's STS: moto keeps it in the role's account.
"""
import json
import sys
import urllib.request

import boto3

endpoint, spec = sys.argv[1], json.loads(sys.argv[2])
kw = dict(endpoint_url=endpoint, region_name=spec.get("region", "us-west-2"),
          aws_access_key_id="test", aws_secret_access_key="test")
if spec.get("role_arn"):
    creds = boto3.client("sts", **kw).assume_role(
        RoleArn=spec["role_arn"], RoleSessionName="moto-ecs")["Credentials"]
    kw.update(aws_access_key_id=creds["AccessKeyId"],
              aws_secret_access_key=creds["SecretAccessKey"],
              aws_session_token=creds["SessionToken"])
ecs = boto3.client("ecs", **kw)
ec2 = boto3.client("ec2", **kw)

if "stop" in spec:
    for s in spec["stop"]:
        ecs.stop_task(cluster=s["cluster"], task=s["task"], reason=s["reason"])
    print(json.dumps({}))
    sys.exit(0)

manual = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}
urllib.request.urlopen(urllib.request.Request(
    endpoint + "/moto-api/state-manager/set-transition",
    data=json.dumps(manual).encode(), method="POST"))

ecs.register_task_definition(family="web", containerDefinitions=[
    {"name": "web", "image": "nginx", "memory": 128, "cpu": 128}])
ami = ec2.describe_images()["Images"][0]["ImageId"]
out = {}
for name, want in spec["clusters"].items():
    arn = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    instances = []
    for _ in range(want.get("instances", 0)):
        inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
        doc = json.dumps({"instanceId": inst["InstanceId"]})
        ci = ecs.register_container_instance(cluster=name, instanceIdentityDocument=doc)
        instances.append(ci["containerInstance"]["containerInstanceArn"])
    tasks = []
    if want.get("tasks", 0):
        run = ecs.run_task(cluster=name, taskDefinition="web", count=want["tasks"])
        tasks = [t["taskArn"] for t in run["tasks"]]
    if want.get("fargate_tasks", 0):
        run = ecs.run_task(cluster=name, taskDefinition="web", count=want["fargate_tasks"],
                           launchType="FARGATE")
        tasks += [t["taskArn"] for t in run["tasks"]]
    services = {}
    for svc, desired in want.get("services", {}).items():
        made = ecs.create_service(cluster=name, serviceName=svc, taskDefinition="web",
                                  desiredCount=desired)
        services[svc] = made["service"]["serviceArn"]
    for svc, count in want.get("service_tasks", {}).items():
        d = ecs.describe_services(cluster=name, services=[svc])["services"][0]["deployments"][0]
        run = ecs.run_task(cluster=name, taskDefinition="web", count=count,
                           group=f"service:{svc}", startedBy=d["id"])
        tasks += [t["taskArn"] for t in run["tasks"]]
    for svc, desired in want.get("update", {}).items():
        ecs.update_service(cluster=name, service=svc, desiredCount=desired)
    for svc in want.get("delete", []):
        ecs.update_service(cluster=name, service=svc, desiredCount=0)
        ecs.delete_service(cluster=name, service=svc)
    out[name] = {"cluster": arn, "instances": instances, "tasks": tasks, "services": services}
print(json.dumps(out))
