"""A panel's first steps in Python, through a client generated from PAKKT's spec.

scripts/test-all generates a client with openapi-python-client from the
live spec of a running pakkt-server (/api/v1/openapi.json) into a package
named ``pakkt_api``, puts it on PYTHONPATH and runs:

    python check.py BASE_URL API_KEY

with BASE_URL the server's ``http://host:port/api/v1``. The script lists
agents, adds one and syncs it once as its agent would (so that it is
connected), creates an engine rule, gets the typed 409 for the same rule
again, reports and reads traffic in the 24 h summary. It uses only the
generated functions and models and checks every answer's type and
content: a schema the generator cannot type, or an answer that does not
fit it, fails here. Exits non-zero on the first failure.
"""

import sys

from pakkt_api.api.agent import agent_report_metrics, agent_sync
from pakkt_api.api.agents import create_agent, get_agent, list_agents
from pakkt_api.api.engine_rules import create_engine_rule, list_engine_rules
from pakkt_api.api.metrics import get_metrics_summary
from pakkt_api.client import AuthenticatedClient
from pakkt_api.models import (
    AgentStatus,
    AgentView,
    CreateAgentRequest,
    CreatedAgent,
    CreatedEngineRule,
    CreateEngineRuleRequest,
    CreateEngineRuleRequestProtocol,
    CreateEngineRuleRequestRuleType,
    DesiredState,
    EngineRuleStatus,
    EngineRuleView,
    ErrorBody,
    MetricsReport,
    MetricsStored,
    MetricsSummaryView,
    PortSample,
    SyncReport,
    Window,
)


class CheckFailed(Exception):
    """An answer that is not what the API reference promises."""


def expect(condition: bool, what: str) -> None:
    """Fails the check with `what` unless `condition` holds."""
    if not condition:
        raise CheckFailed(what)


def main(base_url: str, api_key: str) -> None:
    api = AuthenticatedClient(
        base_url=base_url,
        token=api_key,
        prefix="",
        auth_header_name="X-API-Key",
        raise_on_unexpected_status=True,
        timeout=30.0,
    )

    before = list_agents.sync(client=api)
    expect(isinstance(before, list), f"GET /agents: a list, got {before!r}")
    expect(all(isinstance(a, AgentView) for a in before), "GET /agents: AgentView items")
    print(f"listed {len(before)} agent(s)")

    created = create_agent.sync(client=api, body=CreateAgentRequest(name="Python check"))
    expect(isinstance(created, CreatedAgent), f"POST /agents: CreatedAgent, got {created!r}")
    expect(created.status == AgentStatus.PENDING, f"a new agent is pending, got {created.status}")
    expect(created.token.startswith("pakkt_agent_"), "POST /agents: a one-time agent token")
    print(f"created agent {created.id}")

    # One sync with the agent's bearer token, as pakkt-agent would do:
    # a rule needs an agent that has connected.
    agent = AuthenticatedClient(base_url=base_url, token=created.token, timeout=30.0)
    desired = agent_sync.sync(
        client=agent, body=SyncReport(hostname="python-check", iface="eth0", revision=0), wait=0
    )
    expect(isinstance(desired, DesiredState), f"POST /agent/sync: DesiredState, got {desired!r}")
    expect(desired.revision >= 1, f"a desired state has a revision, got {desired.revision}")
    expect(len(desired.firewall_rules) > 0, "a new agent's desired state holds its system firewall rules")

    seen = get_agent.sync(created.id, client=api)
    expect(isinstance(seen, AgentView), f"GET /agents/:id: AgentView, got {seen!r}")
    expect(seen.status == AgentStatus.ONLINE, f"a synced agent is online, got {seen.status}")
    expect(seen.iface == "eth0", f"the agent's interface is the one it reported, got {seen.iface!r}")
    after = list_agents.sync(client=api)
    expect(isinstance(after, list) and created.id in [a.id for a in after], "GET /agents lists the new agent")

    ssh = CreateEngineRuleRequest(
        name="Rate Limit SSH",
        port_range_start=22,
        port_range_end=22,
        protocol=CreateEngineRuleRequestProtocol(6),
        rule_type=CreateEngineRuleRequestRuleType(1),
        max_pps=500,
    )
    first = create_engine_rule.sync_detailed(created.id, client=api, body=ssh)
    expect(first.status_code == 201, f"POST /agents/:id/engine-rules: 201, got {first.status_code}")
    rule = first.parsed
    expect(isinstance(rule, CreatedEngineRule), f"a CreatedEngineRule, got {rule!r}")
    expect(rule.status == EngineRuleStatus.PENDING_LOAD, f"a new rule is pending_load, got {rule.status}")
    print(f"created rule {rule.id}")

    again = create_engine_rule.sync_detailed(created.id, client=api, body=ssh)
    expect(again.status_code == 409, f"the same rule again: 409, got {again.status_code}")
    conflict = again.parsed
    expect(isinstance(conflict, ErrorBody), f"the 409's body is an ErrorBody, got {conflict!r}")
    expect(conflict.error == "conflict", f"the 409's code is conflict, got {conflict.error!r}")
    expect(bool(conflict.message), "the 409 says why")
    print(f"duplicate refused: {conflict.message}")

    rules = list_engine_rules.sync(created.id, client=api)
    expect(isinstance(rules, list) and len(rules) == 1, f"one rule on the agent, got {rules!r}")
    only = rules[0]
    expect(isinstance(only, EngineRuleView), "GET /agents/:id/programs: EngineRuleView items")
    expect(only.id == rule.id and only.protocol == CreateEngineRuleRequestProtocol(6), "the rule as created")

    stored = agent_report_metrics.sync(
        client=agent,
        body=MetricsReport(
            report_id="python-check-1",
            ports=[PortSample(port=22, packets_passed=90, packets_dropped=10, bytes_passed=9000, bytes_dropped=600)],
        ),
    )
    expect(isinstance(stored, MetricsStored) and stored.stored, f"POST /agent/metrics: stored, got {stored!r}")

    summary = get_metrics_summary.sync(created.id, client=api, window=Window("24h"))
    expect(isinstance(summary, MetricsSummaryView), f"GET /metrics/:id/summary: MetricsSummaryView, got {summary!r}")
    expect(summary.total_passed == "90", f"total_passed is the decimal string \"90\", got {summary.total_passed!r}")
    expect(summary.total_dropped == "10", f"total_dropped is \"10\", got {summary.total_dropped!r}")
    expect([p.port for p in summary.top_ports] == [22], f"top_ports is port 22, got {summary.top_ports!r}")
    expect(summary.top_ports[0].bytes_dropped == "600", "per-port bytes as decimal strings")
    print(f"24 h summary: {summary.total_passed} passed, {summary.total_dropped} dropped")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: check.py BASE_URL API_KEY")
    try:
        main(sys.argv[1], sys.argv[2])
    except CheckFailed as failure:
        sys.exit(f"generated-client check failed: {failure}")
    print("generated-client check passed")
