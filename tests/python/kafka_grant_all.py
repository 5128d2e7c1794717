"""Grant each named user ALL on every topic, group and transactional id, and IDEMPOTENT_WRITE on
the cluster: the tests' stand-in for per-service least-privilege ACLs (which come from the topology).

    kafka_grant_all.py BOOTSTRAP ADMIN_SETTINGS_JSON USER...
"""
import json
import sys
import time

from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)


def main() -> int:
    bootstrap, settings, users = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    admin = AdminClient(dict(settings, **{"bootstrap.servers": bootstrap}))
    bindings = []
    for u in users:
        for rtype, name in [(ResourceType.TOPIC, "*"), (ResourceType.GROUP, "*"), (ResourceType.TRANSACTIONAL_ID, "*")]:
            bindings.append(AclBinding(rtype, name, ResourcePatternType.LITERAL, f"User:{u}", "*",
                                       AclOperation.ALL, AclPermissionType.ALLOW))
        bindings.append(AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, f"User:{u}", "*",
                                   AclOperation.IDEMPOTENT_WRITE, AclPermissionType.ALLOW))
    for f in admin.create_acls(bindings, request_timeout=30).values():
        f.result()
    # each broker applies new ACLs from the metadata log on its own, within about half a second:
    # ask every broker (a client bootstrapped on it alone asks it first) until each lists them
    # all, or a service may meet a broker that still refuses it
    want = len(bindings)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    deadline = time.monotonic() + 30
    for broker in bootstrap.split(","):
        one = AdminClient(dict(settings, **{"bootstrap.servers": broker}))
        while len(one.describe_acls(everything, request_timeout=10).result()) < want:
            if time.monotonic() > deadline:
                print(f"acls not visible on {broker} after 30 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print(json.dumps({"granted": want, "users": users}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
