"""Wait until every broker lists at least N ACL bindings: each broker applies new ACLs from the
metadata log on its own, so a service may otherwise meet a broker that still refuses it.

    kafka_wait_acls.py BOOTSTRAP ADMIN_SETTINGS_JSON N
"""
import json
import sys
import time

from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType


def main() -> int:
    bootstrap, settings, want = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    deadline = time.monotonic() + 30
    for broker in bootstrap.split(","):
        # a client bootstrapped on one broker alone asks that broker first
        one = AdminClient(dict(settings, **{"bootstrap.servers": broker}))
        while len(one.describe_acls(everything, request_timeout=10).result()) < want:
            if time.monotonic() > deadline:
                print(f"acls not visible on {broker} after 30 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print(json.dumps({"visible": want}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
