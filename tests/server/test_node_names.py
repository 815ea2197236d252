"""The operator reads which hospital failed, not only Flower's node number."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app import Error as FlowerError

from fedehr.server.node_names import NodeNames
from fedehr.shared import messages as M

pytestmark = pytest.mark.usefixtures("in_a_run")


def _reply(node: int, *, site: str | None = None, error: str | None = None) -> Message:
    content = RecordDict({M.SITE: ConfigRecord({M.SITE_NAME: site})} if site else {})
    sent = Message(RecordDict(), dst_node_id=node, message_type="train")
    if error:
        reply = Message(FlowerError(code=0, reason=error), reply_to=sent)
    else:
        reply = Message(content, reply_to=sent)
    assert reply.metadata.src_node_id == node  # a reply comes from where it was sent
    return reply


def test_a_failure_names_the_site_that_answered_before_and_says_when_none_did():
    names = NodeNames()
    names.learn(_reply(42, site="hospital_b"))
    names.learn(_reply(7, error="Node Unavailable"))  # an error carries no name
    assert names.failure(_reply(42, error="Node Unavailable")) == \
        "hospital_b (node 42): Node Unavailable"
    assert names.failure(_reply(7, error="Node Unavailable")) == \
        "node 7 (not heard from yet): Node Unavailable"


def test_flowers_own_error_names_the_site_the_instruction_went_to():
    # "Node Unavailable" replies come from the SuperLink (node 1), not from the site
    names = NodeNames()
    names.learn(_reply(42, site="hospital_b"))
    sent = Message(RecordDict(), dst_node_id=1, message_type="train")
    lapsed = Message(FlowerError(code=0, reason="Node Unavailable"), reply_to=sent)
    assert names.failure(lapsed, {lapsed.metadata.reply_to_message_id: 42}) == \
        "hospital_b (node 42): Node Unavailable"
    assert names.failure(lapsed) == "node 1 (not heard from yet): Node Unavailable"
