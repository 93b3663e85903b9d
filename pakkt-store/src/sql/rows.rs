//! Rows to domain items and back.

use pakkt_core::account::{Account, AccountName};
use pakkt_core::agent::{Agent, DataplaneMode, EgressMode, HostInfo};
use pakkt_core::firewall::{FirewallRule, FirewallSpec, Limit, SystemRole};
use pakkt_core::ip_list::{EntrySpec, IpEntry};
use pakkt_core::rule::{EngineRule, Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::store::StoreError;
use sqlx::any::AnyRow;

use super::{Result, Tx, dynamic, get};
use crate::codec::{backend, corrupt, count, from_us, from_us_opt, narrow, parse, uncount, us};

pub(super) const ACCOUNT_COLUMNS: &str = "id, name, suspended, created_at";
pub(super) const AGENT_COLUMNS: &str =
    "id, account_id, name, hostname, iface, version, mode, egress_mode, last_seen_at, created_at, revision";
pub(super) const RULE_COLUMNS: &str = "id, agent_id, name, protocol, port_start, port_end, rule_type, max_pps, max_port_pps, \
     min_pkt_size, max_pkt_size, slot, status, status_message, created_at, loaded_at";
pub(super) const ENTRY_COLUMNS: &str =
    "id, agent_id, list_type, cidr, reason, expires_at, status, status_message, created_at";
pub(super) const FIREWALL_COLUMNS: &str = "id, agent_id, name, chain, protocol, port_start, port_end, action, limit_rate, \
     limit_unit, conntrack, system_role, status, status_message, created_at, packets_total, bytes_total";

pub(super) fn account_from(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: parse(&get::<String>(row, "id")?, "account id")?,
        name: parse::<AccountName>(&get::<String>(row, "name")?, "account name")?,
        suspended: get::<i64>(row, "suspended")? != 0,
        created_at: from_us(get(row, "created_at")?)?,
    })
}

pub(super) fn mode_str(mode: DataplaneMode) -> &'static str {
    match mode {
        DataplaneMode::Native => "native",
        DataplaneMode::Generic => "generic",
        DataplaneMode::Memory => "memory",
    }
}

/// The `agents.egress_mode` spelling (`NULL` when the agent reported none).
pub(super) fn egress_str(egress: EgressMode) -> &'static str {
    match egress {
        EgressMode::Tcx => "tcx",
        EgressMode::Clsact => "clsact",
    }
}

pub(super) fn agent_from(row: &AnyRow) -> Result<Agent> {
    let mode: Option<String> = get(row, "mode")?;
    let egress: Option<String> = get(row, "egress_mode")?;
    Ok(Agent {
        id: parse(&get::<String>(row, "id")?, "agent id")?,
        account_id: parse(&get::<String>(row, "account_id")?, "account id")?,
        name: get(row, "name")?,
        host: HostInfo {
            hostname: get(row, "hostname")?,
            iface: get(row, "iface")?,
            version: get(row, "version")?,
            mode: mode.map(|m| parse(&m, "mode")).transpose()?,
            egress: egress.map(|e| parse(&e, "egress_mode")).transpose()?,
        },
        last_seen_at: from_us_opt(get(row, "last_seen_at")?)?,
        created_at: from_us(get(row, "created_at")?)?,
        revision: narrow(get(row, "revision")?, "revision")?,
    })
}

pub(super) fn rule_from(row: &AnyRow) -> Result<EngineRule> {
    let protocol =
        Protocol::try_from(narrow::<u8>(get(row, "protocol")?, "protocol")?).map_err(|e| corrupt(e.to_string()))?;
    let rule_type =
        RuleType::try_from(narrow::<u8>(get(row, "rule_type")?, "rule_type")?).map_err(|e| corrupt(e.to_string()))?;
    let limits = RateLimits {
        max_pps: narrow(get(row, "max_pps")?, "max_pps")?,
        max_port_pps: narrow(get(row, "max_port_pps")?, "max_port_pps")?,
        min_pkt_size: narrow(get(row, "min_pkt_size")?, "min_pkt_size")?,
        max_pkt_size: narrow(get(row, "max_pkt_size")?, "max_pkt_size")?,
    };
    let spec = RuleSpec::new(
        protocol,
        narrow(get(row, "port_start")?, "port_start")?,
        narrow(get(row, "port_end")?, "port_end")?,
        rule_type,
        limits,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let slot: Option<i64> = get(row, "slot")?;
    Ok(EngineRule {
        id: parse(&get::<String>(row, "id")?, "rule id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        name: get(row, "name")?,
        spec,
        slot: slot.map(|s| narrow::<u8>(s, "slot").map(Slot::new)).transpose()?,
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
        loaded_at: from_us_opt(get(row, "loaded_at")?)?,
    })
}

pub(super) fn entry_from(row: &AnyRow) -> Result<IpEntry> {
    Ok(IpEntry {
        id: parse(&get::<String>(row, "id")?, "entry id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        spec: EntrySpec {
            list_type: parse(&get::<String>(row, "list_type")?, "list_type")?,
            cidr: parse(&get::<String>(row, "cidr")?, "cidr")?,
            reason: get(row, "reason")?,
            expires_at: from_us_opt(get(row, "expires_at")?)?,
        },
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
    })
}

pub(super) fn role_str(role: SystemRole) -> &'static str {
    match role {
        SystemRole::Loopback => "loopback",
        SystemRole::EstablishedRelated => "established_related",
        SystemRole::ControlPlane => "control_plane",
    }
}

pub(super) fn firewall_from(row: &AnyRow) -> Result<FirewallRule> {
    let port_start: Option<i64> = get(row, "port_start")?;
    let port_end: Option<i64> = get(row, "port_end")?;
    let ports = match (port_start, port_end) {
        (Some(s), Some(e)) => Some((narrow(s, "port_start")?, narrow(e, "port_end")?)),
        _ => None,
    };
    let limit_rate: Option<i64> = get(row, "limit_rate")?;
    let limit_unit: Option<String> = get(row, "limit_unit")?;
    let limit = match (limit_rate, limit_unit) {
        (Some(rate), Some(unit)) => {
            Some(Limit { rate: narrow(rate, "limit_rate")?, unit: parse(&unit, "limit_unit")? })
        }
        _ => None,
    };
    let conntrack: Option<String> = get(row, "conntrack")?;
    let role: Option<String> = get(row, "system_role")?;
    Ok(FirewallRule {
        id: parse(&get::<String>(row, "id")?, "firewall rule id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        name: get(row, "name")?,
        spec: FirewallSpec {
            chain: parse(&get::<String>(row, "chain")?, "chain")?,
            protocol: parse(&get::<String>(row, "protocol")?, "protocol")?,
            ports,
            action: parse(&get::<String>(row, "action")?, "action")?,
            limit,
            conntrack: conntrack.map(|c| parse(&c, "conntrack")).transpose()?,
        },
        system: role.map(|r| parse(&r, "system_role")).transpose()?,
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
        packets_total: uncount(get(row, "packets_total")?),
        bytes_total: uncount(get(row, "bytes_total")?),
    })
}

pub(super) async fn insert_firewall(tx: &mut Tx, rule: &FirewallRule) -> Result<()> {
    let spec = &rule.spec;
    let inserted = sqlx::query(dynamic(format!(
        "INSERT INTO firewall_rules ({FIREWALL_COLUMNS}, position) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )))
    .bind(rule.id.to_string())
    .bind(rule.agent_id.to_string())
    .bind(&rule.name)
    .bind(spec.chain.as_str())
    .bind(spec.protocol.as_str())
    .bind(spec.ports.map(|p| i64::from(p.0)))
    .bind(spec.ports.map(|p| i64::from(p.1)))
    .bind(spec.action.as_str())
    .bind(spec.limit.map(|l| i64::from(l.rate)))
    .bind(spec.limit.map(|l| l.unit.as_str()))
    .bind(spec.conntrack.as_ref().map(ToString::to_string))
    .bind(rule.system.map(role_str))
    .bind(rule.status.as_str())
    .bind(rule.status_message.clone())
    .bind(us(rule.created_at))
    .bind(count(rule.packets_total))
    .bind(count(rule.bytes_total))
    .bind(i64::from(rule.list_position()))
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Err(StoreError::NotFound),
        Err(e) => Err(backend(e)),
    }
}
