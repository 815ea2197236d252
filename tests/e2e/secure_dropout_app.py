"""The secure ClientApp of the e2e test, with one site dropping out of one round.

$FEDEHR_SECAGG_DROP = "SITE:ROUND": that site refuses that round's training,
inside SecAgg+'s third exchange, after it took part in the key exchange (as a
site whose budget ran out, or that crashed, would). Everything else is
`fedehr.client.secure_app` unchanged: its mods, its handlers, DP-SGD, ledger.
"""

from __future__ import annotations

import os

from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedehr.client import flower_app as plain
from fedehr.client import secure_app as real
from fedehr.client.site_handlers import SiteRefusal
from fedehr.shared import messages as M


class DroppingClient(real.SiteClient):
    def fit(self, parameters, config):
        site, _, rnd = os.environ.get("FEDEHR_SECAGG_DROP", ":").partition(":")
        me = plain._site(self.context).name
        if me == site and str(config[M.ROUND_ID]).endswith(f"/round-{rnd}"):
            raise SiteRefusal("drops out of this round (test)", where=me)
        return super().fit(parameters, config)


app = ClientApp(client_fn=lambda context: DroppingClient(context).to_client(),
                mods=[real.fedehr_messages_mod, secaggplus_mod])
