//! The host firewall: PAKKT's firewall rules in the nftables table
//! `inet pakkt`, which the agent owns and nothing else touches.
//!
//! The table holds three base chains, `input`, `forward` and `output`
//! (type filter, hooks of the same names, priority `filter - 10`, policy
//! accept), and two named sets with the control plane's addresses. Every
//! change is one `nft -j -f -` transaction built from the `nftables` crate's
//! typed JSON schema, so it applies whole or not at all: when nftables
//! refuses it, what was in force stays in force and the error carries
//! nftables' own message.
//!
//! Rules are added by appending and removed by handle, never by rebuilding
//! the table, so the counters of the rules a change leaves alone keep
//! counting. Each nftables rule carries a comment naming its API rule
//! ([`mapping`]); [`NftFirewall::open`] reads them back from
//! `nft -j list table inet pakkt`, so a restarted agent reports what is in
//! force without a gap, counters included.
//!
//! `nft` runs as a child process; each call takes a few milliseconds and
//! blocks the calling thread for that long.

pub mod mapping;

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nftables::batch::Batch;
use nftables::expr::Expression;
use nftables::schema::{self, FlushObject, NfCmd, NfListObject, NfObject, Nftables, SetType, SetTypeValue};
use nftables::stmt::{Counter, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use pakkt_core::dataplane::DataplaneError;
use pakkt_core::firewall::Chain;
use pakkt_core::id::FirewallRuleId;
use pakkt_core::sync::{DesiredFirewallRule, FirewallCounter, Op};

use mapping::{CONTROL_PLANE_V4, CONTROL_PLANE_V6, PRIORITY, TABLE, Tag};

/// Why the firewall could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed.
    #[error("{program} not found: install the nftables package (apt-get install nftables)")]
    Missing {
        /// The program looked for.
        program: String,
    },
    /// `nft` could not be started or talked to.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// nftables refused the change (or the listing); nothing changed.
    #[error("nftables refused the change: {message}")]
    Refused {
        /// nftables' message.
        message: String,
    },
    /// `nft -j list` printed something that is not the JSON schema.
    #[error("reading the nftables listing: {0}")]
    Listing(#[source] serde_json::Error),
}

impl From<NftError> for DataplaneError {
    fn from(e: NftError) -> Self {
        match e {
            NftError::Refused { message } => Self::Rejected(message),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// How to run `nft`: the program and any arguments before nft's own
/// (`ip netns exec NS nft` runs it inside a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftCommand {
    program: OsString,
    args: Vec<OsString>,
}

impl Default for NftCommand {
    fn default() -> Self {
        Self { program: "nft".into(), args: Vec::new() }
    }
}

impl NftCommand {
    /// `nft` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// `program args… <nft arguments>`, for a wrapper such as
    /// `ip netns exec NS nft`.
    pub fn wrapped<I, S>(program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }

    fn name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Runs `nft <args>` with `input` on stdin and returns stdout.
    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
        let spawn = |source: io::Error| NftError::Spawn { program: self.name(), source };
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    NftError::Missing { program: self.name() }
                } else {
                    spawn(source)
                }
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(spawn)?;
        }
        let output = child.wait_with_output().map_err(spawn)?;
        if !output.status.success() {
            return Err(NftError::Refused { message: tidy(&String::from_utf8_lossy(&output.stderr)) });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Applies `batch` as one transaction.
    fn apply(&self, batch: Batch<'_>) -> Result<(), NftError> {
        let json = serde_json::to_string(&batch.to_nftables()).map_err(NftError::Listing)?;
        self.run(&["-j", "-f", "-"], Some(&json)).map(drop)
    }
}

/// nftables' error text without the position prefix JSON input gets, on
/// one line, at most 500 characters.
fn tidy(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("internal:0:0-0: ").unwrap_or(l))
        .collect();
    let text = if lines.is_empty() { "nft failed without a message".to_owned() } else { lines.join("; ") };
    text.chars().take(500).collect()
}

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
    use super::*;

    #[test]
    fn messages_lose_the_position_prefix() {
        let stderr = "internal:0:0-0: Error: Could not process rule: File exists\n\n\
                      internal:0:0-0: Error: Could not process rule: Invalid argument\n";
        assert_eq!(
            tidy(stderr),
            "Error: Could not process rule: File exists; Error: Could not process rule: Invalid argument"
        );
        assert_eq!(tidy(""), "nft failed without a message");
    }

    #[test]
    fn a_missing_nft_names_the_package() {
        let command = NftCommand::wrapped("/nonexistent/pakkt-nft", Vec::<String>::new());
        let err = command.run(&["--version"], None).expect_err("missing");
        assert!(matches!(err, NftError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("apt-get install nftables"), "{err}");
    }

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
