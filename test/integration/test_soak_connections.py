"""Reliability suite, connections (issue #8): 1,000 idle connections, clients
that never finish the HTTP/2 handshake, clients that never read their
answers. Another client is served throughout, and each is closed after its
documented timeout (docs/reliability.md; here set short through the config).
scripts/soak runs the same scenario with the default timeouts."""
import os
import time

import soak_scenarios
from conftest import EXAMPLES, oci_backend

SHORT = {"handshake_timeout": "1s", "keepalive_time": "1s", "keepalive_timeout": "2s", "idle_timeout": "4s"}


def test_idle_unfinished_and_stalled_connections_are_closed_after_their_timeouts(workdir):
    report = soak_scenarios.scenario_connections(workdir, images=2000, idle=1000, timeouts=SHORT, close_within=40)
    assert report.problems == []
    f = report.figures
    assert f["other client failures"] == 0 and f["other client calls"] > 0
    # Idle clients answer the server's pings, so only the idle timeout closes them, and with GOAWAY.
    assert f["idle: GOAWAY received"] == 1000
    assert f["idle: first closed after s"] >= 3.5


def test_a_client_idle_past_the_timeout_is_served_again(serve):
    s = serve("".join(f'{k} = "{v}"\n' for k, v in SHORT.items()) + oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    assert s.image_status("edge-tools:2.0").HasField("image")
    time.sleep(5.5)  # the server said GOAWAY and closed the connection meanwhile
    assert s.image_status("edge-tools:2.0").HasField("image")  # the channel reconnects by itself
    assert len(s.list_images()) == 2
