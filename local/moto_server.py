"""moto for the local stack, served by waitress instead of moto_server's werkzeug development server.

werkzeug's server closes the connection after every response and writes headers and body in separate
small writes on a socket with Nagle's algorithm on; against a client that delays its ACKs that costs a
new TCP connection per AWS call and, often, a 40 ms stall. waitress keeps connections alive and sets
TCP_NODELAY, so the stack measures the gateway, not its stand-in for AWS.

DynamoDB calls are served one at a time: moto's tables are plain dicts, so concurrent writes can break a
read that iterates them ("dictionary changed size during iteration") or interleave a conditional update's
check and write. DynamoDB makes every single-item write (conditional or not) and every transaction atomic;
serializing them here is what lets the budgets' concurrency tests test the gateway, not the emulator.

moto's instance tracking is turned off: every model object ever created (each S3 object version with
its bytes, each SQS message, each DynamoDB item copy) is otherwise kept in a class-wide list for its
dashboard, forever. Over the test suite that grew to over 13 GB, and every garbage collection walked it.

Usage: moto_server.py HOST PORT
"""

import json
import signal
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from waitress import serve


class _Untracked(list):
    """A class's `instances_tracked` that keeps nothing."""

    def append(self, _instance) -> None:
        pass


def stop_instance_tracking() -> None:
    import moto.core.base_backend as base_backend
    from moto.core.model_instances import model_data

    create_class = base_backend.InstanceTrackerMeta.__new__

    def untracked_class(meta, name, bases, namespace):
        cls = create_class(meta, name, bases, namespace)
        if name != "BaseModel":
            cls.instances_tracked = _Untracked()
        return cls

    base_backend.InstanceTrackerMeta.__new__ = untracked_class
    # Classes created before this point (the ones moto's own imports made).
    for models in model_data.values():
        for model in models.values():
            model.instances_tracked = _Untracked()


def usage_plan_patches_as_api_gateway() -> None:
    """UpdateUsagePlan's patch values are strings; API Gateway stores a quota's limit and offset as the
    integers they name (and answers them so), moto as the strings, which no SDK reads back."""
    from moto.apigateway.models import UsagePlan

    apply = UsagePlan.apply_patch_operations

    def apply_as_numbers(self, patch_operations):
        apply(self, patch_operations)
        for field in ("limit", "offset"):
            if isinstance(self.quota.get(field), str):
                self.quota[field] = int(self.quota[field])

    UsagePlan.apply_patch_operations = apply_as_numbers


def sent_mail() -> list[dict]:
    """Every message SES (v1 and v2 share a backend) has accepted, in every account and region."""
    from moto.ses.models import ses_backends

    messages = []
    for regions in ses_backends.values():
        for backend in regions.values():
            for message in backend.sent_messages:
                messages.append({key: getattr(message, key, None)
                                 for key in ("id", "source", "subject", "body", "destinations")})
    return messages


def local_routes(app):
    """`/_local/ses/messages`: the mail the stack has sent, read straight from moto's SES backend.
    moto's own `/moto-api/data.json` dumps every model of every service (each audit object, queue
    message and Cognito user), which grows with every request until reading it takes minutes."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == "/_local/ses/messages":
            body = json.dumps(sent_mail(), default=str).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return wrapped


def serialize_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            # The whole answer is produced under the lock (moto builds it in full anyway).
            return list(app(environ, start_response))

    return wrapped


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    stop_instance_tracking()
    usage_plan_patches_as_api_gateway()
    # SIGTERM from the stack ends the process at once (waitress would otherwise wait for long polls).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = local_routes(serialize_dynamodb(DomainDispatcherApplication(create_backend_app)))
    # Long polls (every SQS event source and reply queue poller holds one) each hold a thread while
    # they wait; enough threads that they never starve the short calls.
    serve(app, host=host, port=port, threads=64, connection_limit=512, channel_timeout=120,
          ident="moto", _quiet=True)


if __name__ == "__main__":
    main()
