"""Real AWS clients (boto3, the AWS CLI) against the ECS read API (/ecs),
checked against moto's ECS holding the same entities.

Usage:
  python ecs_clients.py compare MOTO_URL CSS_URL   answers equal moto's, paging,
                                                   limits, errors, read-only
  python ecs_clients.py auth CSS_URL KEY SECRET    signatures (a configured pair)
  python ecs_clients.py places CSS_URL SPEC_JSON     each key and region reads one
                                                   account-region's clusters and tasks
     SPEC_JSON: [{"key": KEY, "region": R, "clusters": [ARN], "tasks": [ARN],
                  "elsewhere": ARN of a cluster of another account or region}]
Prints "ok" and exits 0 when every check holds; else prints what failed.
"""
import datetime
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import botocore.auth
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-west-2"
failed = []


def check(cond, what):
    if not cond:
        failed.append(what)


def client(url, key="test", secret="test", **kw):
    return boto3.client("ecs", endpoint_url=url, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret, **kw)


def error_of(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None, 200


def all_arns(c, method, member, **kw):
    out, token = [], None
    for _ in range(1000):
        page = getattr(c, method)(**kw, **({"nextToken": token} if token else {}))
        out += page[member]
        token = page.get("nextToken")
        if not token:
            return out
    raise RuntimeError("endless paging")


def described(c, method, member, key, cluster, arns, batch):
    out = {}
    for i in range(0, len(arns), batch):
        page = getattr(c, method)(cluster=cluster, **{member: arns[i:i + batch]})
        for item in page[member if member != "containerInstances" else member]:
            out[item[key]] = item
    return out


TASK_FIELDS = ["taskArn", "clusterArn", "lastStatus", "desiredStatus", "taskDefinitionArn",
               "containerInstanceArn", "startedBy", "launchType", "group", "version"]
INSTANCE_FIELDS = ["containerInstanceArn", "ec2InstanceId", "status", "agentConnected",
                   "runningTasksCount", "pendingTasksCount"]
SERVICE_FIELDS = ["serviceArn", "serviceName", "clusterArn", "status", "desiredCount",
                  "runningCount", "pendingCount", "taskDefinition", "launchType",
                  "schedulingStrategy"]


def same(kind, arn, m, c, fields):
    # Full ECS shape: every member ECS (moto) gave is answered here too.
    missing = sorted(set(m) - set(c))
    check(not missing, f"{kind} {arn}: members missing here: {missing}")
    for f in fields:
        check(m.get(f) == c.get(f), f"{kind} {arn}: {f} is {c.get(f)!r} here, {m.get(f)!r} in moto")
    for f, v in m.items():
        if isinstance(v, datetime.datetime):
            check(isinstance(c.get(f), datetime.datetime) and abs((c[f] - v).total_seconds()) < 0.002,
                  f"{kind} {arn}: timestamp {f} is {c.get(f)!r} here, {v!r} in moto")


def compare(moto_url, css_url):
    moto, css = client(moto_url), client(css_url + "/ecs")
    clusters = sorted(moto.list_clusters()["clusterArns"])
    check(sorted(css.list_clusters()["clusterArns"]) == clusters, "ListClusters differs")
    dc = css.describe_clusters(clusters=clusters + ["nope"])
    check([c["clusterArn"] for c in dc["clusters"]] == clusters, "DescribeClusters: clusters")
    check(dc["failures"] == [{"arn": "nope", "reason": "MISSING"}], f"DescribeClusters failures {dc['failures']}")
    for cl in dc["clusters"]:
        n = len(moto.list_container_instances(cluster=cl["clusterArn"])["containerInstanceArns"])
        check(cl["registeredContainerInstancesCount"] == n, f"{cl['clusterName']}: instance count")
        running = len(all_arns(moto, "list_tasks", "taskArns", cluster=cl["clusterArn"]))
        check(cl["runningTasksCount"] == running, f"{cl['clusterName']}: running {cl['runningTasksCount']} != {running}")

    for cluster in clusters:
        name = cluster.rsplit("/", 1)[1]
        # Tasks: every page, then described in batches of 100; by name and by ARN.
        m_tasks = all_arns(moto, "list_tasks", "taskArns", cluster=name)
        c_tasks = all_arns(css, "list_tasks", "taskArns", cluster=cluster)
        check(sorted(m_tasks) == sorted(c_tasks), f"{name}: ListTasks differs")
        check(len(set(c_tasks)) == len(c_tasks), f"{name}: a task listed twice")
        m = described(moto, "describe_tasks", "tasks", "taskArn", name, m_tasks, 100)
        c = described(css, "describe_tasks", "tasks", "taskArn", name, m_tasks, 100)
        check(m.keys() == c.keys(), f"{name}: DescribeTasks found other tasks")
        for arn in m:
            same("task", arn, m[arn], c.get(arn, {}), TASK_FIELDS)
        # Container instances.
        m_ci = all_arns(moto, "list_container_instances", "containerInstanceArns", cluster=name)
        c_ci = all_arns(css, "list_container_instances", "containerInstanceArns", cluster=name)
        check(sorted(m_ci) == sorted(c_ci), f"{name}: ListContainerInstances differs")
        if m_ci:
            m = described(moto, "describe_container_instances", "containerInstances",
                          "containerInstanceArn", name, m_ci, 100)
            c = described(css, "describe_container_instances", "containerInstances",
                          "containerInstanceArn", name, m_ci, 100)
            for arn in m:
                same("instance", arn, m[arn], c.get(arn, {}), INSTANCE_FIELDS)
                check(sorted((r["name"], r.get("integerValue")) for r in m[arn]["registeredResources"])
                      == sorted((r["name"], r.get("integerValue")) for r in c[arn]["registeredResources"]),
                      f"instance {arn}: registeredResources")
        # Services (ListServices pages by 10 by default).
        m_svc = all_arns(moto, "list_services", "serviceArns", cluster=name)
        c_svc = all_arns(css, "list_services", "serviceArns", cluster=name)
        check(sorted(m_svc) == sorted(c_svc), f"{name}: ListServices differs")
        # Its filters, as ECS applies them (moto's services are REPLICA).
        for strategy, want in [("REPLICA", m_svc), ("DAEMON", [])]:
            got = all_arns(css, "list_services", "serviceArns", cluster=name, schedulingStrategy=strategy)
            check(sorted(got) == sorted(want), f"{name}: ListServices schedulingStrategy={strategy}")
        if m_svc:
            m = described(moto, "describe_services", "services", "serviceArn", name, m_svc, 10)
            c = described(css, "describe_services", "services", "serviceArn", name, m_svc, 10)
            for arn in m:
                same("service", arn, m[arn], c.get(arn, {}), SERVICE_FIELDS)
                check([d["id"] for d in m[arn]["deployments"]] == [d["id"] for d in c[arn]["deployments"]],
                      f"service {arn}: deployments")
            by_name = css.describe_services(cluster=name, services=[m_svc[0].rsplit("/", 1)[1]])
            check([s["serviceArn"] for s in by_name["services"]] == [m_svc[0]], "a service by name")

    # Paging: 250 tasks of "big", 100 per page with boto3's paginator.
    pages = list(css.get_paginator("list_tasks").paginate(cluster="big", PaginationConfig={"PageSize": 100}))
    arns = [a for p in pages for a in p["taskArns"]]
    check(len(pages) == 3 and len(arns) == 250 and len(set(arns)) == 250,
          f"paginator: {len(pages)} pages, {len(arns)} tasks, {len(set(arns))} distinct")
    # Limits, unknown ARNs and clusters.
    check(error_of(lambda: css.list_tasks(cluster="big", maxResults=101))
          == ("InvalidParameterException", 400), "maxResults 101")
    check(error_of(lambda: css.describe_tasks(cluster="big", tasks=arns[:101]))
          == ("InvalidParameterException", 400), "101 tasks in DescribeTasks")
    ghost = arns[0].rsplit("/", 1)[0] + "/0000ghost"
    d = css.describe_tasks(cluster="big", tasks=[arns[0], ghost])
    check([t["taskArn"] for t in d["tasks"]] == [arns[0]], "DescribeTasks with a ghost: tasks")
    check(d["failures"] == [{"arn": ghost, "reason": "MISSING"}], f"ghost failures {d['failures']}")
    check(error_of(lambda: css.list_tasks(cluster="nowhere"))
          == ("ClusterNotFoundException", 400), "unknown cluster")
    check(error_of(lambda: css.describe_services(cluster="nowhere", services=["web"]))
          == ("ClusterNotFoundException", 400), "unknown cluster (services)")
    token = css.list_tasks(cluster="big", maxResults=100)["nextToken"]
    check(error_of(lambda: css.list_tasks(cluster="small", nextToken=token))
          == ("InvalidParameterException", 400), "a token used with another request")

    # Read-only: writes are refused and never reach ECS.
    before = sorted(all_arns(moto, "list_tasks", "taskArns", cluster="small"))
    check(error_of(lambda: css.run_task(cluster="small", taskDefinition="web"))
          == ("UnsupportedOperationException", 400), "RunTask")
    check(error_of(lambda: css.stop_task(cluster="small", task=before[0]))
          == ("UnsupportedOperationException", 400), "StopTask")
    after = sorted(all_arns(moto, "list_tasks", "taskArns", cluster="small"))
    check(before == after and all(t["lastStatus"] == "RUNNING" for t in
          moto.describe_tasks(cluster="small", tasks=before)["tasks"]), "moto's state changed")

    # The AWS CLI, pointed here with --endpoint-url (it pages by itself).
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION=REGION, AWS_PAGER="")

    def cli(*args):
        out = subprocess.run([aws, "ecs", *args, "--endpoint-url", css_url + "/ecs", "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            failed.append(f"aws ecs {args[0]}: {out.stderr.strip()}")
            return {}
        return json.loads(out.stdout)

    check(sorted(cli("list-tasks", "--cluster", "big").get("taskArns", [])) == sorted(arns), "aws ecs list-tasks")
    d = cli("describe-tasks", "--cluster", "big", "--tasks", arns[0], ghost)
    check([t["taskArn"] for t in d.get("tasks", [])] == [arns[0]], "aws ecs describe-tasks")
    check(d.get("failures") == [{"arn": ghost, "reason": "MISSING"}], "aws ecs describe-tasks failures")
    check(sorted(cli("list-clusters").get("clusterArns", [])) == clusters, "aws ecs list-clusters")
    svc = cli("describe-services", "--cluster", "small", "--services", "web")
    check([s["serviceName"] for s in svc.get("services", [])] == ["web"], "aws ecs describe-services")
    ci = cli("list-container-instances", "--cluster", "small").get("containerInstanceArns", [])
    check(sorted(ci) == sorted(all_arns(moto, "list_container_instances", "containerInstanceArns",
                                        cluster="small")), "aws ecs list-container-instances")
    cid = cli("describe-container-instances", "--cluster", "small", "--container-instances", *ci)
    check([c["containerInstanceArn"] for c in cid.get("containerInstances", [])] == ci,
          "aws ecs describe-container-instances")
    dcl = cli("describe-clusters", "--clusters", "big", "small")
    check([c["clusterName"] for c in dcl.get("clusters", [])] == ["big", "small"], "aws ecs describe-clusters")
    check(sorted(cli("list-services", "--cluster", "small").get("serviceArns", []))
          == sorted(all_arns(moto, "list_services", "serviceArns", cluster="small")), "aws ecs list-services")
    wrote = subprocess.run([aws, "ecs", "stop-task", "--cluster", "small", "--task", before[0],
                            "--endpoint-url", css_url + "/ecs"], env=env, capture_output=True, text=True)
    check(wrote.returncode != 0 and "UnsupportedOperationException" in wrote.stderr, "aws ecs stop-task")

    # A malformed body: SerializationException.
    req = urllib.request.Request(css_url + "/ecs", data=b"{not json", method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListTasks"})
    try:
        urllib.request.urlopen(req)
        failed.append("a malformed body was accepted")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
        check(e.code == 400 and body["__type"] == "SerializationException", f"malformed body: {body}")


def auth(css_url, key, secret):
    url = css_url + "/ecs"
    check(len(client(url, key, secret).list_clusters()["clusterArns"]) > 0, "a listed pair")
    check(error_of(lambda: client(url, "AKIDUNKNOWN", secret).list_clusters())
          == ("UnrecognizedClientException", 403), "an unknown key")
    check(error_of(lambda: client(url, key, secret + "x").list_clusters())
          == ("InvalidSignatureException", 403), "a wrong secret")
    unsigned = boto3.client("ecs", endpoint_url=url, region_name=REGION,
                            config=Config(signature_version=UNSIGNED))
    check(error_of(lambda: unsigned.list_clusters()) == ("UnrecognizedClientException", 403), "unsigned")
    # A clock 20 minutes behind: the signature has expired.
    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: real(*a, **k) - datetime.timedelta(minutes=20)
    try:
        check(error_of(lambda: client(url, key, secret).list_clusters())
              == ("InvalidSignatureException", 403), "a stale signature")
    finally:
        botocore.auth.get_current_datetime = real
    # AWS_ENDPOINT_URL_ECS: any SDK, no code change.
    os.environ["AWS_ENDPOINT_URL_ECS"] = url
    env_client = boto3.client("ecs", region_name=REGION, aws_access_key_id=key, aws_secret_access_key=secret)
    check(env_client.list_clusters()["clusterArns"] == client(url, key, secret).list_clusters()["clusterArns"],
          "AWS_ENDPOINT_URL_ECS")


def places(css_url, spec):
    url = css_url + "/ecs"
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    for want in spec:
        key, region, where = want["key"], want["region"], f"{want['key']} in {want['region']}"
        c = boto3.client("ecs", endpoint_url=url, region_name=region,
                         aws_access_key_id=key, aws_secret_access_key="any")
        check(sorted(c.list_clusters()["clusterArns"]) == sorted(want["clusters"]),
              f"boto3 list_clusters, {where}: {c.list_clusters()['clusterArns']}")
        tasks = all_arns(c, "list_tasks", "taskArns", cluster="web")
        check(sorted(tasks) == sorted(want["tasks"]), f"boto3 list_tasks, {where}: {tasks}")
        described = c.describe_tasks(cluster="web", tasks=want["tasks"])["tasks"]
        check(sorted(t["taskArn"] for t in described) == sorted(want["tasks"]),
              f"boto3 describe_tasks, {where}")
        check(error_of(lambda: c.list_tasks(cluster=want["elsewhere"]))
              == ("ClusterNotFoundException", 400), f"another place's cluster ARN, {where}")
        d = c.describe_clusters(clusters=[want["elsewhere"]])
        check(d["clusters"] == [] and d["failures"] == [{"arn": want["elsewhere"], "reason": "MISSING"}],
              f"describe_clusters of another place's ARN, {where}: {d}")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY="any", AWS_PAGER="")
        out = subprocess.run([aws, "ecs", "list-tasks", "--cluster", "web", "--region", region,
                              "--endpoint-url", url, "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=60)
        cli = json.loads(out.stdout).get("taskArns", []) if out.returncode == 0 else out.stderr
        check(isinstance(cli, list) and sorted(cli) == sorted(want["tasks"]),
              f"aws ecs list-tasks --region {region}, {where}: {cli}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "compare":
        compare(sys.argv[2], sys.argv[3])
    elif mode == "places":
        places(sys.argv[2], json.loads(sys.argv[3]))
    else:
        auth(sys.argv[2], sys.argv[3], sys.argv[4])
    if failed:
        print("\n".join(failed))
        sys.exit(1)
    print("ok")
