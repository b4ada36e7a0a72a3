"""Prometheus metrics (`prometheus-client`), served at `GET /metrics` by `itdr serve` and by `itdr worker` on
ITDR_METRICS_PORT. Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): counters end
in `_total`, durations are `_seconds`. Labels take bounded values only: never a tenant, user, channel or request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, start_http_server

log = logging.getLogger(__name__)

SLACK_REQUESTS = Counter("itdr_slack_requests_total", "Requests from Slack, by kind and outcome",
                         ["kind", "outcome"])
ACK_SECONDS = Histogram("itdr_slack_ack_seconds", "Time to answer a request from Slack (Slack allows 3 s)", ["kind"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0))
READINESS_CHECKS = Counter("itdr_readiness_checks_total", "Tenant readiness checks run, by verdict", ["verdict"])
READINESS_SECONDS = Histogram("itdr_readiness_check_seconds", "Duration of a tenant readiness check",
                              buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 45, 60))
MICROSOFT_REQUESTS = Counter("itdr_microsoft_requests_total", "HTTP round trips to Microsoft, by API and status",
                             ["api", "status"])
THROTTLE_WAIT_SECONDS = Counter("itdr_microsoft_throttle_wait_seconds_total",
                                "Time spent waiting before retrying Microsoft (Retry-After or backoff)", ["api"])
SWEEP_SECONDS = Histogram("itdr_sweep_duration_seconds", "From a sweep's start to its announcements",
                          buckets=(30, 60, 300, 600, 1200, 1800, 3600, 7200, 14400))
SWEEP_TENANTS = Counter("itdr_sweep_tenants_checked_total", "Tenants checked by sweeps")
CHANGES_ANNOUNCED = Counter("itdr_changes_announced_total", "Tenants whose change a sweep announced")
SLACK_POSTS = Counter("itdr_slack_posts_total", "Messages the worker posted to channels, by result", ["result"])
CONSENT_TRANSITIONS = Counter("itdr_consent_transitions_total", "Consent audit actions, by kind", ["kind"])
QUEUE_DEPTH = Gauge("itdr_queue_depth", "Jobs waiting in the queue (set by each worker every minute)")
ANNOUNCEMENTS_WAITING = Gauge("itdr_announcement_channels_waiting",
                              "Channels with drift or revision announcements Slack has not accepted yet")
ANNOUNCEMENT_AGE_SECONDS = Gauge("itdr_announcement_oldest_wait_seconds",
                                 "How long the oldest announcement not yet accepted by Slack has waited")
TENANTS = Gauge("itdr_tenants", "Watched tenants by their last verdict (from the fleet summary)", ["verdict"])
TENANTS_ROLES_ENDING = Gauge("itdr_tenants_roles_ending",
                             "Watched tenants holding a role whose time-bound assignment ends within two weeks")

#: Statuses told apart; any other is counted by its class (2xx, 4xx, 5xx), so the label set stays small.
_EXACT_STATUSES = frozenset({400, 401, 403, 404, 429, 500, 502, 503, 504})


_INTERACTIVE_KINDS = {"block_actions": "action", "view_submission": "view", "view_closed": "view",
                      "shortcut": "shortcut", "message_action": "shortcut", "block_suggestion": "options"}


def slack_kind(body: dict[str, Any]) -> str:
    """What a request from Slack is (command, action, view, shortcut, options, event, other): a bounded label."""
    if "command" in body:
        return "command"
    kind = str(body.get("type") or "")
    if kind == "event_callback":
        return "event"
    return _INTERACTIVE_KINDS.get(kind, "other")


def status_label(status: int) -> str:
    return str(status) if status in _EXACT_STATUSES else f"{status // 100}xx"


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def serve_metrics(port: int, host: str = "0.0.0.0") -> Callable[[], None]:
    """`itdr worker`'s /metrics on `port` (a thread of prometheus-client); returns what stops it."""
    server, thread = start_http_server(port, addr=host)
    log.info("metrics on :%d/metrics", port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
