"""Which hospital a Flower node id is, so that an operator reads "hospital_b (node 42):
Node Unavailable" instead of a bare node id.

Flower knows nodes by number; a site names itself in every reply it sends
(`messages.SITE_NAME`). The names are learned from those replies (the
vocabulary round is the first), so a node that never answered stays a number.
"""

from __future__ import annotations

from flwr.common.constant import SUPERLINK_NODE_ID

from fedehr.shared import messages as M


class NodeNames:
    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def learn(self, reply) -> None:
        """Remember the site name an answered reply carries (error replies carry none)."""
        if reply.has_error():
            return
        try:
            self._names[int(reply.metadata.src_node_id)] = str(
                reply.content[M.SITE][M.SITE_NAME])
        except KeyError:
            pass

    def name(self, node_id: int) -> str:
        """The site's name, or the bare node number while it has not answered."""
        return self._names.get(int(node_id), f"node {node_id}")

    def of(self, node_id: int) -> str:
        name = self._names.get(int(node_id))
        return f"{name} (node {node_id})" if name else f"node {node_id} (not heard from yet)"

    def failure(self, reply, addressed: dict[str, int] | None = None) -> str:
        """One line for an error reply: who failed, and Flower's or the site's reason.

        Flower's own errors (a node that missed its heartbeats) come from the SuperLink,
        node 1: the site is the one the instruction was `addressed` to (message id -> node).
        """
        node = reply.metadata.src_node_id
        if int(node) == SUPERLINK_NODE_ID and addressed:
            node = addressed.get(reply.metadata.reply_to_message_id, node)
        return f"{self.of(node)}: {reply.error.reason}"
