//! The table `inet pakkt` and the rules in it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nftables::batch::Batch;
use nftables::expr::Expression;
use nftables::schema::{self, FlushObject, NfCmd, NfListObject, NfObject, Nftables, SetType, SetTypeValue};
use nftables::stmt::{Counter, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use pakkt_core::firewall::Chain;
use pakkt_core::id::FirewallRuleId;
use pakkt_core::sync::{DesiredFirewallRule, FirewallCounter, Op};

use crate::command::NftCommand;
use crate::error::NftError;
use crate::mapping::{self, CONTROL_PLANE_V4, CONTROL_PLANE_V6, PRIORITY, TABLE, Tag};

/// The agent's control-plane server, whose TCP connection the system rule
/// `control_plane` keeps open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// The server's addresses (IPv4 and IPv6); [`NftFirewall::set_control_plane`]
    /// replaces them.
    pub addrs: Vec<IpAddr>,
    /// The server's TCP port.
    pub port: u16,
}

/// What [`NftFirewall::open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftOptions {
    /// The control-plane server.
    pub control_plane: ControlPlane,
    /// How to run `nft`.
    pub command: NftCommand,
}

impl NftOptions {
    /// `nft` from `PATH`, for the given control plane.
    pub fn new(control_plane: ControlPlane) -> Self {
        Self { control_plane, command: NftCommand::new() }
    }
}

/// One firewall change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallOp<'a> {
    /// Append the rule after every rule present (moving it there if it is
    /// present elsewhere).
    Add(&'a DesiredFirewallRule),
    /// Remove the rule; removing an absent rule succeeds.
    Remove(&'a DesiredFirewallRule),
}

impl<'a> FirewallOp<'a> {
    /// The firewall change `op` asks for, if it is one.
    pub fn from_op(op: &'a Op) -> Option<Self> {
        match op {
            Op::AddFirewallRule(rule) => Some(Self::Add(rule)),
            Op::RemoveFirewallRule(rule) => Some(Self::Remove(rule)),
            _ => None,
        }
    }

    fn id(self) -> FirewallRuleId {
        match self {
            Self::Add(rule) | Self::Remove(rule) => rule.id,
        }
    }
}

/// The table `inet pakkt`, managed through `nft`.
#[derive(Debug)]
pub struct NftFirewall {
    command: NftCommand,
    port: u16,
    /// Serialises read-then-write sequences (handles must not go stale).
    lock: Mutex<()>,
}

/// The nftables rules of one API rule, as listed.
#[derive(Debug, Clone)]
struct Group {
    tag: Tag,
    /// `(chain, handle)`; empty for rules this batch adds.
    handles: Vec<(String, u32)>,
    packets: u64,
    bytes: u64,
}

/// What the table holds.
#[derive(Debug, Default)]
struct Listing {
    /// PAKKT's rules in API order.
    groups: Vec<Group>,
    /// Rules without a PAKKT comment.
    foreign: Vec<(String, u32)>,
}

fn table() -> schema::Table<'static> {
    schema::Table { family: NfFamily::INet, name: Cow::Borrowed(TABLE), handle: None }
}

fn set(name: &'static str, set_type: SetType) -> Box<schema::Set<'static>> {
    Box::new(schema::Set {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(name),
        set_type: SetTypeValue::Single(set_type),
        ..schema::Set::default()
    })
}

fn rule_handle(chain: &str, handle: u32) -> schema::Rule<'static> {
    schema::Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Owned(chain.to_owned()),
        handle: Some(handle),
        ..schema::Rule::default()
    }
}

/// Adds the commands that fill the control-plane sets with `addrs`.
fn fill_control_plane(batch: &mut Batch<'static>, addrs: &[IpAddr]) {
    for (name, set_type, v4) in
        [(CONTROL_PLANE_V4, SetType::Ipv4Addr, true), (CONTROL_PLANE_V6, SetType::Ipv6Addr, false)]
    {
        batch.add(NfListObject::Set(set(name, set_type)));
        batch.add_cmd(NfCmd::Flush(FlushObject::Set(set(name, set_type))));
        let elems: Vec<Expression<'static>> =
            addrs.iter().filter(|a| a.is_ipv4() == v4).map(|a| Expression::String(Cow::Owned(a.to_string()))).collect();
        if !elems.is_empty() {
            batch.add(NfListObject::Element(schema::Element {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed(name),
                elem: Cow::Owned(elems),
            }));
        }
    }
}

impl NftFirewall {
    /// Creates the table, its chains and sets where missing (adopting an
    /// existing table with its rules and counters), sets the control
    /// plane's addresses, and removes rules in the table that PAKKT did not
    /// write.
    pub fn open(options: NftOptions) -> Result<Self, NftError> {
        let this = Self { command: options.command, port: options.control_plane.port, lock: Mutex::new(()) };
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(table()));
        for (chain, hook) in
            [(Chain::Input, NfHook::Input), (Chain::Forward, NfHook::Forward), (Chain::Output, NfHook::Output)]
        {
            batch.add(NfListObject::Chain(schema::Chain {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed(chain.as_str()),
                _type: Some(NfChainType::Filter),
                hook: Some(hook),
                prio: Some(PRIORITY),
                policy: Some(NfChainPolicy::Accept),
                ..schema::Chain::default()
            }));
        }
        fill_control_plane(&mut batch, &options.control_plane.addrs);
        this.command.apply(batch)?;
        let listing = this.list()?;
        if !listing.foreign.is_empty() {
            let mut batch = Batch::new();
            for (chain, handle) in &listing.foreign {
                batch.delete(NfListObject::Rule(rule_handle(chain, *handle)));
            }
            this.command.apply(batch)?;
        }
        Ok(this)
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the table.
    fn list(&self) -> Result<Listing, NftError> {
        let text = self.command.run(&["-j", "list", "table", "inet", TABLE], None)?;
        let parsed: Nftables<'static> = serde_json::from_str(&text).map_err(NftError::Listing)?;
        let mut listing = Listing::default();
        for object in parsed.objects.iter() {
            let NfObject::ListObject(NfListObject::Rule(rule)) = object else { continue };
            let Some(handle) = rule.handle else { continue };
            let chain = rule.chain.to_string();
            let Some(tag) = rule.comment.as_deref().and_then(mapping::parse_comment) else {
                listing.foreign.push((chain, handle));
                continue;
            };
            let (packets, bytes) = rule
                .expr
                .iter()
                .find_map(|s| match s {
                    Statement::Counter(Counter::Anonymous(Some(c))) => {
                        Some((c.packets.map_or(0, |p| p as u64), c.bytes.map_or(0, |b| b as u64)))
                    }
                    _ => None,
                })
                .unwrap_or((0, 0));
            match listing.groups.iter_mut().find(|g| g.tag.rule.id == tag.rule.id && g.tag.seq == tag.seq) {
                Some(group) => {
                    group.handles.push((chain, handle));
                    group.packets = group.packets.saturating_add(packets);
                    group.bytes = group.bytes.saturating_add(bytes);
                }
                None => listing.groups.push(Group { tag, handles: vec![(chain, handle)], packets, bytes }),
            }
        }
        listing.groups.sort_by_key(|g| g.tag.seq);
        Ok(listing)
    }

    /// The rules in force, in order (each once).
    pub fn applied(&self) -> Result<Vec<DesiredFirewallRule>, NftError> {
        let _guard = self.guard();
        let mut out: Vec<DesiredFirewallRule> = Vec::new();
        for group in self.list()?.groups {
            if !out.iter().any(|r| r.id == group.tag.rule.id) {
                out.push(group.tag.rule);
            }
        }
        Ok(out)
    }

    /// Packets and bytes matched by each rule in force (summed over its
    /// nftables rules), since it was added.
    pub fn counters(&self) -> Result<Vec<FirewallCounter>, NftError> {
        let _guard = self.guard();
        let mut out: Vec<FirewallCounter> = Vec::new();
        for group in self.list()?.groups {
            match out.iter_mut().find(|c| c.id == group.tag.rule.id) {
                Some(c) => {
                    c.packets = c.packets.saturating_add(group.packets);
                    c.bytes = c.bytes.saturating_add(group.bytes);
                }
                None => out.push(FirewallCounter { id: group.tag.rule.id, packets: group.packets, bytes: group.bytes }),
            }
        }
        Ok(out)
    }

    /// Replaces the control plane's addresses in one transaction (the
    /// connection never loses its rule).
    pub fn set_control_plane(&self, addrs: &[IpAddr]) -> Result<(), NftError> {
        let _guard = self.guard();
        let mut batch = Batch::new();
        fill_control_plane(&mut batch, addrs);
        self.command.apply(batch)
    }

    /// Applies `ops` in order as one transaction and returns one result per
    /// op. If nftables refuses the transaction, nothing of it is in force
    /// and each op is retried in a transaction of its own, so only the ops
    /// nftables refuses fail (with its message) and the rest apply.
    pub fn apply(&self, ops: &[FirewallOp<'_>]) -> Vec<Result<(), NftError>> {
        let _guard = self.guard();
        match self.transaction(ops) {
            Ok(()) => ops.iter().map(|_| Ok(())).collect(),
            Err(e) if ops.len() == 1 => vec![Err(e)],
            Err(_) => ops.iter().map(|op| self.transaction(std::slice::from_ref(op))).collect(),
        }
    }

    /// Lists the table and applies `ops` on it in one `nft` transaction.
    fn transaction(&self, ops: &[FirewallOp<'_>]) -> Result<(), NftError> {
        let Listing { mut groups, .. } = self.list()?;
        let mut next_seq = groups.last().map_or(Some(1), |g| g.tag.seq.checked_add(1));
        // Commands in order; an addition is tagged with its rule's ID so a
        // later removal in the same batch can take it back.
        let mut deletes: Vec<(String, u32)> = Vec::new();
        let mut adds: Vec<(FirewallRuleId, schema::Rule<'static>)> = Vec::new();
        for op in ops {
            let id = op.id();
            if let FirewallOp::Add(rule) = op {
                let mut present = groups.iter().filter(|g| g.tag.rule.id == id);
                let first = present.next();
                let unique = present.next().is_none();
                if unique
                    && first.is_some_and(|g| &g.tag.rule == *rule)
                    && groups.last().is_some_and(|g| g.tag.rule.id == id)
                {
                    continue;
                }
            }
            let (mut packets, mut bytes) = (0u64, 0u64);
            for group in groups.iter().filter(|g| g.tag.rule.id == id) {
                packets = packets.saturating_add(group.packets);
                bytes = bytes.saturating_add(group.bytes);
                deletes.extend(group.handles.iter().cloned());
            }
            groups.retain(|g| g.tag.rule.id != id);
            adds.retain(|(have, _)| *have != id);
            if let FirewallOp::Add(rule) = op {
                let seq = next_seq.ok_or_else(|| NftError::Refused {
                    message: "the firewall's rule sequence is exhausted; delete the table inet pakkt to reset it"
                        .into(),
                })?;
                next_seq = seq.checked_add(1);
                for nft_rule in mapping::rules(rule, seq, self.port, packets, bytes) {
                    adds.push((id, nft_rule));
                }
                groups.push(Group { tag: Tag { seq, rule: (*rule).clone() }, handles: Vec::new(), packets, bytes });
            }
        }
        if deletes.is_empty() && adds.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (chain, handle) in deletes {
            batch.delete(NfListObject::Rule(rule_handle(&chain, handle)));
        }
        for (_, rule) in adds {
            batch.add(NfListObject::Rule(rule));
        }
        self.command.apply(batch)
    }
}

/// Deletes the table `inet pakkt` and everything in it. Returns whether
/// there was one.
pub fn remove_table(command: &NftCommand) -> Result<bool, NftError> {
    let tables = command.run(&["-j", "list", "tables", "inet"], None)?;
    let parsed: Nftables<'static> = serde_json::from_str(&tables).map_err(NftError::Listing)?;
    let present = parsed.objects.iter().any(
        |o| matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.name == TABLE && t.family == NfFamily::INet),
    );
    if present {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(table()));
        command.apply(batch)?;
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use nftables::schema::Nftables;
    use pakkt_core::id::FirewallRuleId;

    #[test]
    fn listings_parse_with_counters_and_foreign_rules() {
        let id = FirewallRuleId::generate();
        let text = format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}}},
            {{"table": {{"family": "inet", "name": "pakkt", "handle": 2}}}},
            {{"chain": {{"family": "inet", "table": "pakkt", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}}},
            {{"rule": {{"family": "inet", "table": "pakkt", "chain": "input", "handle": 7, "comment": "pakkt {id} #3 input udp 5000-5000 limit/5/second *", "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "udp", "field": "dport"}}}}, "right": 5000}}}}, {{"meter": {{"key": {{"elem": {{"val": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "timeout": 120}}}}, "stmt": {{"limit": {{"rate": 5, "burst": 5, "per": "second", "inv": true}}}}, "size": 65535, "name": "l4_{id}_3"}}}}, {{"counter": {{"packets": 7, "bytes": 100}}}}, {{"drop": null}}]}}}},
            {{"rule": {{"family": "inet", "table": "pakkt", "chain": "input", "handle": 9, "comment": "pakkt {id} #3 input udp 5000-5000 limit/5/second *", "expr": [{{"counter": {{"packets": 3, "bytes": 50}}}}, {{"accept": null}}]}}}},
            {{"rule": {{"family": "inet", "table": "pakkt", "chain": "input", "handle": 5, "expr": [{{"counter": {{"packets": 0, "bytes": 0}}}}, {{"reject": {{"type": "icmpx", "expr": "admin-prohibited"}}}}]}}}}]}}"#
        );
        let parsed: Nftables<'static> = serde_json::from_str(&text).expect("the crate reads nft's listing");
        assert_eq!(parsed.objects.len(), 6);
    }
}
