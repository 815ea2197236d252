"""The site worker: one long-lived process that answers the SuperNode's tasks.

With `flower-supernode --isolation process` the SuperNode starts no app
process; whoever claims a task on its local Runtime API runs it. This worker
plays the role of Flower's `flwr-clientapp`, with two differences that matter
to a hospital:

- Approval first. For every task it checks that the site approved the bundle
  (fedehr.client.approval: FAB hash listed, or signed by the consortium's
  bundle key) and maps the bundle's clientapp component to a ClientApp the
  hospital installed. The bundle is never installed or imported. A refusal is
  a Flower error reply (code ERROR_REFUSED) naming the bundle hash, written to
  the site log, activity.jsonl and the audit chain; the server goes on with
  the other sites.
- Warm. torch, Opacus, fedehr and the site's token cache stay loaded between
  messages (fedehr.client.warm_state); only the privacy ledger and stored
  replies live on disk, so a crash loses nothing that counts.

Protocol (Flower 1.42 internals; pinned `flwr==1.42.*`, exercised by
tests/client/test_worker.py and the e2e tests): AcquireTask (one-time token),
then Flower's own `push_message` and `push_task_output` from
flwr.supernode.runtime.run_clientapp, with task heartbeats meanwhile; the
input is pulled as Flower's `pull_task_input` does, with a shorter backoff
(see `pull_task_input` here for why).
Flower's `make_simple_http_retry_invoker` and `make_task_heartbeat_fn_http`
are not used: on failure they send SIGINT to their own process, which would
kill this long-lived worker; ours give up on the one task instead.

`--superexec-auth-secret-file`: the SuperNode and this worker share a secret
(state_dir/worker.secret, 0600, new at each daemon start), so no other local
process can claim the site's tasks (AcquireTask without it gets HTTP 401).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedehr.client import activity
from fedehr.client.approval import (
    BundleRefused,
    check_bundle,
    clientapp_component,
    installed_clientapp,
)
from fedehr.client.config import SiteConfig, load_site_config

log = logging.getLogger("fedehr.site")

TASK_TYPE = "flwr-clientapp"
POLL_SECONDS = 0.5  # idle claims cost the SuperNode CPU; Flower's SuperExec polls every 1 s
# How long a claimed task may wait for its message's arrays. The SuperNode offers a
# task before it has fetched them from the SuperLink; if the SuperLink dies during
# that fetch (a server restart), they never come and, with Flower's own limits
# (500 tries, up to 2 h), the one worker would be stuck on that dead task while the
# resumed run's tasks queue behind it. Flower's per-message processes only strand
# one process each. A model large enough to need longer over the site's link needs
# a larger value.
PULL_TIMEOUT_SECONDS = 60.0
COMPONENT = "flwr-clientapp"  # what the worker says it is to the Runtime API's version check


def _retry_invoker():
    """Retries transport errors for up to a minute, then gives up (raises), never signals."""
    from flwr.supercore.retry import RetryInvoker, exponential

    return RetryInvoker(lambda: exponential(max_delay=5), httpx.TransportError, max_tries=None,
                        max_time=60, jitter=None)


def _client(address: str, interceptors: list):
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name=COMPONENT), *interceptors],
        retry_invoker=_retry_invoker())


@dataclass
class TaskOutcome:
    """What happened to one task (for logs, tests and the benchmark)."""

    task_id: int
    message_type: str
    status: str  # "completed", "refused" or "failed"
    seconds: float
    reason: str = ""


class SiteWorker:
    def __init__(self, site: SiteConfig, runtime_address: str, secret: bytes | None = None):
        from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor

        self.site, self.address = site, runtime_address
        auth = [] if secret is None else [SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods={"/flwr.proto.Runtime/AcquireTask"})]
        self.claims = _client(runtime_address, auth)
        self.stopping = threading.Event()

    def acquire(self):
        """Claim the oldest pending ClientApp task: (token, task) or None."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611

        res = self.claims.AcquireTask(AcquireTaskRequest(supported_task_types=[TASK_TYPE]))
        if res.HasField("task") and res.token:
            return res.token, res.task
        return None

    def serve_forever(self) -> None:
        log.info("site %s: worker serving %s", self.site.name, self.address)
        while not self.stopping.is_set():
            try:
                claimed = self.acquire()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 401:
                    raise SystemExit("the SuperNode refused this worker's secret") from None
                log.warning("site %s: AcquireTask failed: %s", self.site.name, exc)
                claimed = None
            except httpx.TransportError:
                claimed = None  # the SuperNode is restarting; keep polling
            if claimed is None:
                self.stopping.wait(POLL_SECONDS)
                continue
            self.run_task(*claimed)

    def run_task(self, token: str, task) -> TaskOutcome:
        """Pull one task's message, answer it (or refuse), push the reply and the status."""
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supercore.inflatable.inflatable_utils import ObjectPullError
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        from fedehr.client.flower_app import ERROR_REFUSED

        started = time.monotonic()
        client = _client(self.address, [RuntimeTokenHttpInterceptor(token)])
        lost = threading.Event()
        heartbeat = HeartbeatSender(_heartbeat_fn(client, lost))
        heartbeat.start()
        message = context = reply = None
        outcome = TaskOutcome(task.task_id, "?", "failed", 0.0)
        sub_status, details = SubStatus.FAILED, "site worker failed"
        try:
            message, context, run, fab = pull_task_input(client)
            pulled = time.monotonic() - started
            outcome.message_type = message.metadata.message_type
            log.info("site %s: task %s (%s) started (input pulled in %.2f s)", self.site.name,
                     task.task_id, outcome.message_type, pulled)
            try:
                app = self._approved_app(fab.content, fab.hash_str, dict(run.override_config))
            except BundleRefused as exc:
                outcome.status, outcome.reason = "refused", exc.one_line()
                self._record_refusal(message.metadata.message_type, fab.content, outcome.reason)
                reply = Message(Error(code=ERROR_REFUSED, reason=outcome.reason),
                                reply_to=message)
            else:
                reply = app(message=message, context=context)
                outcome.status = "completed"
            sub_status, details = SubStatus.COMPLETED, ""
        except ObjectPullError as exc:  # see PULL_TIMEOUT_SECONDS
            outcome.reason = f"its message never fully arrived ({exc})"
            log.warning("site %s: task %s given up: %s (a SuperLink restart during the "
                        "transfer?)", self.site.name, task.task_id, outcome.reason)
            details = outcome.reason
        except Exception as exc:  # noqa: BLE001 - one bad task must not end the worker
            outcome.reason = f"{type(exc).__name__}: {exc}"
            log.exception("site %s: task %s failed", self.site.name, task.task_id)
            details = outcome.reason
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      reason=outcome.reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None and not lost.is_set():
                    push_message(client, reply, context)
                push_task_output(client, context, sub_status, details)
            except Exception:  # noqa: BLE001
                log.exception("site %s: could not push the reply of task %s", self.site.name,
                              task.task_id)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
        outcome.seconds = time.monotonic() - started
        log.info("site %s: task %s (%s) %s in %.2f s", self.site.name, task.task_id,
                 outcome.message_type, outcome.status, outcome.seconds)
        return outcome

    def _approved_app(self, fab: bytes, declared_hash: str, run_config: dict):
        check_bundle(self.site, fab, declared_hash, run_config)
        return installed_clientapp(self.site, clientapp_component(fab), fab)

    def _record_refusal(self, message_type: str, fab: bytes, reason: str) -> None:
        from fedehr.client.approval import fab_hash

        log.error("site %s: refused %s: %s", self.site.name, message_type, reason)
        activity.record(self.site.state_dir, "refusal", message_type=message_type,
                        bundle_hash=fab_hash(fab), reason=reason)


def pull_task_input(client):
    """Flower's `run_clientapp.pull_task_input`, with a short retry backoff for the message.

    The SuperNode offers a task as soon as a message's metadata arrives and
    fetches its arrays from the SuperLink afterwards; a worker that claims at
    once finds them not there yet. Flower's defaults then back off 1, 2, 4, 8 s
    (harmless for a process that took seconds to start, ~15 s per message for a
    warm worker). Same calls, same order as Flower 1.42's function, except the
    backoff (0.05 s doubling to 0.5 s).
    """
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
        PullAppMessagesRequest,
        PullTaskInputRequest,
    )
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context, run, fab = (context_from_proto(res.context), run_from_proto(res.run),
                         fab_from_proto(res.fab))
    messages = client.PullMessages(PullAppMessagesRequest())
    if not messages.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = messages.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node,
                                                  context.run_id),
        return_type=Message, initial_backoff=0.05, backoff_cap=0.5,
        max_time=PULL_TIMEOUT_SECONDS)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it
    return message, context, run, fab


def _heartbeat_fn(client, lost: threading.Event):
    """A task heartbeat that marks the task lost instead of signalling the process."""
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=E0611

    def beat() -> bool:
        try:
            ok = client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success
        except httpx.HTTPError:
            return False  # retried with backoff by HeartbeatSender
        if not ok:
            lost.set()  # the SuperNode gave the task up; our reply would be refused
        return True

    return beat


def preload() -> None:
    """Import what every message needs once, before the first task (the point of a worker)."""
    import opacus  # noqa: F401
    import torch  # noqa: F401

    import fedehr.client.flower_app  # noqa: F401
    import fedehr.client.site_handlers  # noqa: F401
    from fedehr.client import warm_state

    warm_state.keep_in_memory()


def main(config: Path, runtime_address: str, secret_file: Path | None) -> None:
    from fedehr.client.flower_app import _log_to_file
    from fedehr.shared.processes import exit_on_sigterm

    exit_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    site = load_site_config(config)
    _log_to_file(site)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    preload()
    secret = secret_file.read_bytes() if secret_file is not None else None
    SiteWorker(site, runtime_address, secret).serve_forever()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="fedehr site worker (started by "
                                                 "`fedehr site start`)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--runtime-address", required=True)
    parser.add_argument("--secret-file", type=Path)
    args = parser.parse_args()
    main(args.config, args.runtime_address, args.secret_file)
