//! Validators on separate addresses of one Linux machine: each validator in its own
//! network namespace, joined by a veth pair to a bridge the testnet creates, on a
//! private subnet 10.222.X.0/24 the testnet owns; and the faults an operator can
//! cause there (partitions by blackhole routes inside the namespaces, a flapping
//! link by the link state of a validator's veth).
//!
//! Names (interface names are at most 15 characters):
//! ```text
//! mz<tag>-br      the bridge, address 10.222.X.254 (the host reaches every API through it)
//! mz<tag>-n<i>    validator i's namespace; its eth0 has 10.222.X.(i+1)
//! mz<tag>-h<i>    the host end of validator i's veth pair, a port of the bridge
//! ```
//! Files in the testnet folder:
//! ```text
//! netns.json      the layout while it exists (written before anything is created,
//!                 so a crashed CLI's leftovers are found and removed)
//! partition.json  the current partition (groups of validators), if any
//! flap.json       the validator whose link flaps, and the flapping process
//! ```
//! A partition blackholes, inside each namespace, the addresses of the validators
//! of the other groups: validators cannot reach each other across groups, while the
//! host (on the bridge) still reaches every API.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// First two octets of every testnet subnet.
const SUBNET_PREFIX: [u8; 2] = [10, 222];
/// Last octet of the bridge's (the host's) address.
const HOST_OCTET: u8 = 254;
/// Most validators one subnet holds (addresses .1 to .253).
pub const VALIDATORS_MAX: usize = 253;
/// How long teardown waits for processes to exit and links to disappear.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(15);

/// Where the namespaces of a testnet are: everything else is derived from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsPlan {
    /// Four hex digits unique among the namespaces on this machine.
    pub tag: String,
    /// X of the subnet 10.222.X.0/24.
    pub subnet: u8,
    /// Validators.
    pub validators: usize,
}

impl NetnsPlan {
    /// Validator i's namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("mz{}-n{i}", self.tag)
    }

    /// The host end of validator i's veth pair.
    pub fn host_veth(&self, i: usize) -> String {
        format!("mz{}-h{i}", self.tag)
    }

    /// The bridge.
    pub fn bridge(&self) -> String {
        format!("mz{}-br", self.tag)
    }

    /// Validator i's address.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let [a, b] = SUBNET_PREFIX;
        Ipv4Addr::new(a, b, self.subnet, (i + 1) as u8)
    }

    /// The bridge's address: the host's address on the subnet.
    pub fn host_address(&self) -> Ipv4Addr {
        let [a, b] = SUBNET_PREFIX;
        Ipv4Addr::new(a, b, self.subnet, HOST_OCTET)
    }

    /// The subnet, as `10.222.X.0/24`.
    pub fn cidr(&self) -> String {
        let [a, b] = SUBNET_PREFIX;
        format!("{a}.{b}.{}.0/24", self.subnet)
    }
}

/// The current partition (`partition.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Groups of validators: validators in different groups cannot reach each other.
    pub groups: Vec<Vec<usize>>,
    /// When it began (seconds since the Unix epoch).
    pub since_unix: u64,
}

/// The flapping link (`flap.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapState {
    /// The validator whose link goes down and up.
    pub node: usize,
    /// Half a cycle: the link is down this long, then up this long.
    pub period_ms: u64,
    /// The `mosaic testnet flap` process that does it.
    pub pid: u32,
    /// When it began (seconds since the Unix epoch).
    pub since_unix: u64,
}

fn layout_path(dir: &Path) -> PathBuf {
    dir.join("netns.json")
}

fn partition_path(dir: &Path) -> PathBuf {
    dir.join("partition.json")
}

fn flap_path(dir: &Path) -> PathBuf {
    dir.join("flap.json")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is malformed: delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Runs `ip ARGS`; its stdout, or an error with its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS` where failing is fine (the thing is already gone).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Refuses, saying why, unless this machine can run validators in namespaces:
/// Linux, root, and a working `ip netns`.
pub fn check_supported() -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("--netns needs Linux network namespaces; on this system use a testnet on 127.0.0.1");
    }
    match effective_uid() {
        Some(0) => {}
        Some(uid) => bail!(
            "--netns creates network namespaces, veth pairs and a bridge, which needs root (running as uid {uid}): run it with sudo, or use a testnet on 127.0.0.1"
        ),
        None => bail!("--netns needs root, and /proc/self/status does not say who runs this"),
    }
    ip(&["netns", "list"])
        .context("--netns needs the `ip` command of iproute2 with network namespaces")?;
    Ok(())
}

/// The namespaces that exist on this machine.
fn namespaces() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// IPv4 networks in `text` (`a.b.c.d/len`, or `a.b.c.d` as a /32), as (address, length).
fn networks_in(text: &str) -> Vec<(u32, u32)> {
    text.split_whitespace()
        .filter_map(|token| {
            let (address, length) = match token.split_once('/') {
                Some((a, l)) => (a, l.parse::<u32>().ok()?),
                None => (token, 32),
            };
            let address: Ipv4Addr = address.parse().ok()?;
            (length <= 32).then_some((u32::from(address), length))
        })
        .collect()
}

fn overlaps((a, a_len): (u32, u32), (b, b_len): (u32, u32)) -> bool {
    let length = a_len.min(b_len);
    if length == 0 {
        return true;
    }
    let shift = 32 - length;
    (a >> shift) == (b >> shift)
}

fn subnet_network(x: u8) -> (u32, u32) {
    let [a, b] = SUBNET_PREFIX;
    (u32::from(Ipv4Addr::new(a, b, x, 0)), 24)
}

/// The networks of this machine's addresses and routes (the default route aside).
fn used_networks() -> Result<Vec<(u32, u32)>> {
    let addresses = ip(&["-4", "-o", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    // `brd` and `src` name addresses inside networks already listed.
    Ok(networks_in(&addresses)
        .into_iter()
        .chain(networks_in(&routes))
        .filter(|(_, length)| *length > 0)
        .collect())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes)
}

/// Picks a tag no namespace or link uses and a subnet 10.222.X.0/24 that no
/// address or route of this machine overlaps.
pub fn plan(validators: usize) -> Result<NetnsPlan> {
    check_supported()?;
    if validators > VALIDATORS_MAX {
        bail!("--netns holds at most {VALIDATORS_MAX} validators in one /24 subnet");
    }
    let used = used_networks()?;
    let free: Vec<u8> = (1..=254u8)
        .filter(|x| !used.iter().any(|n| overlaps(*n, subnet_network(*x))))
        .collect();
    if free.is_empty() {
        bail!("every subnet 10.222.X.0/24 overlaps an address or route of this machine");
    }
    let links = ip(&["-o", "link", "show"])?;
    let spaces = namespaces()?;
    for _ in 0..100 {
        let [a, b, c] = random_bytes::<3>()?;
        let tag = format!("{:02x}{:02x}", a, b);
        let prefix = format!("mz{tag}-");
        if links.contains(&prefix) || spaces.iter().any(|s| s.starts_with(&prefix)) {
            continue;
        }
        return Ok(NetnsPlan {
            tag,
            subnet: free[c as usize % free.len()],
            validators,
        });
    }
    bail!("found no unused namespace tag in 100 tries: remove stale mz*- namespaces")
}

/// Whether the namespaces, links and bridge of `plan` all exist.
pub fn is_up(plan: &NetnsPlan) -> Result<bool> {
    let spaces = namespaces()?;
    Ok(link_exists(&plan.bridge())
        && (0..plan.validators)
            .all(|i| spaces.contains(&plan.namespace(i)) && link_exists(&plan.host_veth(i))))
}

/// Creates the bridge, namespaces and veth pairs of `plan` (after removing any
/// leftovers of an earlier run). On failure, removes what it made.
pub fn setup(dir: &Path, plan: &NetnsPlan) -> Result<()> {
    check_supported()?;
    teardown(dir, plan)?;
    let ours = subnet_network(plan.subnet);
    if let Some((address, length)) = used_networks()?.into_iter().find(|n| overlaps(*n, ours)) {
        bail!(
            "the testnet's subnet {} now overlaps {}/{length} on this machine: make a new testnet (`mosaic testnet init --netns --fresh`), which picks a free subnet",
            plan.cidr(),
            Ipv4Addr::from(address)
        );
    }
    write_json(&layout_path(dir), plan)?;
    let made = create(plan);
    if let Err(e) = made {
        let _ = teardown(dir, plan);
        return Err(e.context(format!(
            "cannot create the testnet's namespaces on {}",
            plan.cidr()
        )));
    }
    Ok(())
}

fn create(plan: &NetnsPlan) -> Result<()> {
    let bridge = plan.bridge();
    let host = format!("{}/24", plan.host_address());
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["addr", "add", &host, "dev", &bridge])?;
    ip(&["link", "set", &bridge, "up"])?;
    for i in 0..plan.validators {
        let namespace = plan.namespace(i);
        let veth = plan.host_veth(i);
        let address = format!("{}/24", plan.address(i));
        ip(&["netns", "add", &namespace])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ])?;
        ip(&["link", "set", &veth, "master", &bridge])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn namespace_pids(namespace: &str) -> Vec<u32> {
    ip(&["netns", "pids", namespace])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops every process in the namespaces of `plan` (SIGTERM, then SIGKILL), deletes
/// the veth pairs, namespaces and bridge, and waits until they are really gone (a
/// veth outlives `ip netns del` briefly). Removes the layout, partition and flap
/// files. Does nothing for what does not exist.
pub fn teardown(dir: &Path, plan: &NetnsPlan) -> Result<()> {
    stop_flapper(dir);
    let spaces = namespaces()?;
    let present: Vec<String> = (0..plan.validators)
        .map(|i| plan.namespace(i))
        .filter(|n| spaces.contains(n))
        .collect();
    let mut pids: Vec<u32> = present.iter().flat_map(|n| namespace_pids(n)).collect();
    for pid in &pids {
        signal(*pid, "TERM");
    }
    let start = Instant::now();
    while !pids.is_empty() && start.elapsed() < TEARDOWN_LIMIT {
        std::thread::sleep(Duration::from_millis(100));
        pids = present.iter().flat_map(|n| namespace_pids(n)).collect();
        if start.elapsed() > Duration::from_secs(10) {
            for pid in &pids {
                signal(*pid, "KILL");
            }
        }
    }
    for pid in &pids {
        signal(*pid, "KILL");
    }
    for i in 0..plan.validators {
        // Deleting one end of a veth pair deletes both.
        if link_exists(&plan.host_veth(i)) {
            ip_quiet(&["link", "del", &plan.host_veth(i)]);
        }
    }
    for namespace in &present {
        ip_quiet(&["netns", "del", namespace]);
    }
    if link_exists(&plan.bridge()) {
        ip_quiet(&["link", "del", &plan.bridge()]);
    }
    let start = Instant::now();
    loop {
        let spaces = namespaces()?;
        let mut left: Vec<String> = (0..plan.validators)
            .flat_map(|i| [plan.namespace(i), plan.host_veth(i)])
            .chain([plan.bridge()])
            .filter(|name| spaces.contains(name) || link_exists(name))
            .collect();
        if left.is_empty() {
            break;
        }
        if start.elapsed() > TEARDOWN_LIMIT {
            left.sort();
            bail!(
                "after {TEARDOWN_LIMIT:?} these are still there: {} (remove them with `ip netns del NAME` / `ip link del NAME`)",
                left.join(", ")
            );
        }
        for name in &left {
            if spaces.contains(name) {
                ip_quiet(&["netns", "del", name]);
            } else {
                ip_quiet(&["link", "del", name]);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    remove_file(&partition_path(dir))?;
    remove_file(&flap_path(dir))?;
    remove_file(&layout_path(dir))?;
    Ok(())
}

/// The command that starts a program inside validator i's namespace: `ip netns exec
/// <namespace>` (which execs the program, so the child's pid is the node's).
pub fn exec_prefix(plan: &NetnsPlan, i: usize) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec"]).arg(plan.namespace(i));
    command
}

/// Parses `0,1/2,3` into groups, checking that each of `validators` is in exactly
/// one group and that there are at least two.
pub fn parse_groups(text: &str, validators: usize) -> Result<Vec<Vec<usize>>> {
    let mut groups = Vec::new();
    let mut seen = vec![false; validators];
    for part in text.split('/') {
        let mut group = Vec::new();
        for item in part.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let i: usize = item
                .parse()
                .with_context(|| format!("--groups {text:?}: {item:?} is not a validator index"))?;
            if i >= validators {
                bail!("--groups {text:?}: this testnet has validators 0..{validators}, not {i}");
            }
            if seen[i] {
                bail!("--groups {text:?}: validator {i} is named twice");
            }
            seen[i] = true;
            group.push(i);
        }
        if group.is_empty() {
            bail!("--groups {text:?}: a group is empty (groups are split by '/')");
        }
        groups.push(group);
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        bail!(
            "--groups {text:?}: validator {missing} is in no group: name every validator once, e.g. 0,1/2,3"
        );
    }
    if groups.len() < 2 {
        bail!("--groups {text:?}: one group is no partition: split them with '/', e.g. 0,1/2,3");
    }
    Ok(groups)
}

/// The groups of `--isolate i`: i alone, and everyone else.
pub fn isolate(node: usize, validators: usize) -> Result<Vec<Vec<usize>>> {
    if node >= validators {
        bail!("--isolate {node}: this testnet has validators 0..{validators}");
    }
    Ok(vec![
        vec![node],
        (0..validators).filter(|i| *i != node).collect(),
    ])
}

/// Shows groups as `0,1 / 2,3`.
pub fn groups_text(groups: &[Vec<usize>]) -> String {
    groups
        .iter()
        .map(|g| g.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn require_up(plan: &NetnsPlan) -> Result<()> {
    if !is_up(plan)? {
        bail!(
            "the testnet's namespaces on {} do not exist: start it first (`mosaic testnet up`)",
            plan.cidr()
        );
    }
    Ok(())
}

fn clear_blackholes(plan: &NetnsPlan) -> Result<()> {
    for i in 0..plan.validators {
        ip(&[
            "-n",
            &plan.namespace(i),
            "route",
            "flush",
            "type",
            "blackhole",
        ])?;
    }
    Ok(())
}

/// Cuts the validators into `groups`: inside each namespace, the addresses of the
/// validators of every other group are blackholed. Replaces any earlier partition.
pub fn partition(dir: &Path, plan: &NetnsPlan, groups: &[Vec<usize>]) -> Result<PartitionState> {
    require_up(plan)?;
    clear_blackholes(plan)?;
    let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
    // Written first: if a route cannot be added, `heal` still knows to clear them.
    let state = PartitionState {
        groups: groups.to_vec(),
        since_unix: unix_now(),
    };
    write_json(&partition_path(dir), &state)?;
    for a in 0..plan.validators {
        let namespace = plan.namespace(a);
        for b in 0..plan.validators {
            if group_of(a) != group_of(b) {
                let target = format!("{}/32", plan.address(b));
                ip(&["-n", &namespace, "route", "add", "blackhole", &target])?;
            }
        }
    }
    Ok(state)
}

/// Ends the partition and any flapping: every route cleared, every link up.
pub fn heal(dir: &Path, plan: &NetnsPlan) -> Result<()> {
    require_up(plan)?;
    stop_flapper(dir);
    clear_blackholes(plan)?;
    for i in 0..plan.validators {
        ip(&["link", "set", &plan.host_veth(i), "up"])?;
    }
    remove_file(&partition_path(dir))?;
    remove_file(&flap_path(dir))?;
    Ok(())
}

/// The current partition, if any.
pub fn partition_state(dir: &Path) -> Result<Option<PartitionState>> {
    read_json(&partition_path(dir))
}

/// The flapping link, if any.
pub fn flap_state(dir: &Path) -> Result<Option<FlapState>> {
    read_json(&flap_path(dir))
}

fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Whether `pid` is a `mosaic testnet flap` (not an unrelated process that reuses
/// the pid of one that ended, e.g. across a reboot).
fn is_flapper(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w == [&b"testnet"[..], &b"flap"[..]])
    })
}

/// Whether the flapping process named in flap.json still runs.
pub fn flapper_alive(state: &FlapState) -> bool {
    process_alive(state.pid) && is_flapper(state.pid)
}

/// Asks a running `mosaic testnet flap` of this testnet to stop (it leaves its link
/// up) and waits for it, at most 5 s.
fn stop_flapper(dir: &Path) {
    let Ok(Some(state)) = flap_state(dir) else {
        return;
    };
    if state.pid == std::process::id() || !process_alive(state.pid) || !is_flapper(state.pid) {
        return;
    }
    signal(state.pid, "TERM");
    let start = Instant::now();
    while process_alive(state.pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes validator `node`'s link go down for `period`, then up for `period`, and so
/// on, until `duration` has passed (if given), `wait` says stop (it sleeps up to the
/// given time and returns false on Ctrl-C / SIGTERM), or `heal` ends it. Leaves the
/// link up. Returns the number of times the link went down.
pub fn flap(
    dir: &Path,
    plan: &NetnsPlan,
    node: usize,
    period: Duration,
    duration: Option<Duration>,
    wait: &mut dyn FnMut(Duration) -> bool,
) -> Result<u64> {
    require_up(plan)?;
    if node >= plan.validators {
        bail!(
            "--node {node}: this testnet has validators 0..{}",
            plan.validators
        );
    }
    if period < Duration::from_millis(100) {
        bail!("--period {period:?} is too short: at least 100ms");
    }
    if let Some(other) = flap_state(dir)?
        && flapper_alive(&other)
    {
        bail!(
            "validator {}'s link already flaps (process {}): stop it with `mosaic testnet heal`",
            other.node,
            other.pid
        );
    }
    let me = std::process::id();
    write_json(
        &flap_path(dir),
        &FlapState {
            node,
            period_ms: period.as_millis() as u64,
            pid: me,
            since_unix: unix_now(),
        },
    )?;
    let veth = plan.host_veth(node);
    let start = Instant::now();
    let mut downs = 0u64;
    let still_ours = || flap_state(dir).ok().flatten().is_some_and(|s| s.pid == me);
    let result = (|| -> Result<()> {
        loop {
            if duration.is_some_and(|d| start.elapsed() >= d) || !still_ours() {
                return Ok(());
            }
            ip(&["link", "set", &veth, "down"])?;
            downs += 1;
            let go_on = wait(period);
            ip(&["link", "set", &veth, "up"])?;
            if !go_on || !still_ours() {
                return Ok(());
            }
            if duration.is_some_and(|d| start.elapsed() >= d) {
                return Ok(());
            }
            if !wait(period) {
                return Ok(());
            }
        }
    })();
    // Whatever happened, the link is left up.
    let up = ip(&["link", "set", &veth, "up"]);
    if still_ours() {
        remove_file(&flap_path(dir))?;
    }
    result?;
    up?;
    Ok(downs)
}

/// Parses `2s`, `500ms`, `1m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 2s, 500ms or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (use ms, s or m)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?}: too long"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    #[test]
    fn names_fit_interface_limits_and_addresses_follow_the_index() {
        let plan = NetnsPlan {
            tag: "ab12".into(),
            subnet: 7,
            validators: 253,
        };
        assert_eq!(plan.namespace(3), "mzab12-n3");
        assert_eq!(plan.host_veth(252), "mzab12-h252");
        assert!(plan.host_veth(252).len() <= 15 && plan.bridge().len() <= 15);
        assert_eq!(plan.address(0), Ipv4Addr::new(10, 222, 7, 1));
        assert_eq!(plan.address(252), Ipv4Addr::new(10, 222, 7, 253));
        assert_eq!(plan.host_address(), Ipv4Addr::new(10, 222, 7, 254));
        assert_eq!(plan.cidr(), "10.222.7.0/24");
    }

    #[test]
    fn subnets_that_overlap_a_machine_network_are_seen() {
        let used = networks_in(
            "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n10.0.0.0/8 via 192.0.2.1 dev eth0\n10.222.9.0/24 dev x",
        );
        assert!(used.iter().any(|n| overlaps(*n, subnet_network(5))), "10/8");
        let narrow = networks_in("10.222.9.0/24 dev x 192.0.2.2/24");
        assert!(narrow.iter().any(|n| overlaps(*n, subnet_network(9))));
        assert!(!narrow.iter().any(|n| overlaps(*n, subnet_network(10))));
    }

    #[test]
    fn groups_name_every_validator_once() {
        assert_eq!(
            parse_groups("0,1/2,3", 4).unwrap(),
            vec![vec![0, 1], vec![2, 3]]
        );
        assert!(parse_groups("0,1/2", 4).is_err(), "3 missing");
        assert!(parse_groups("0,1/1,2,3", 4).is_err(), "1 twice");
        assert!(parse_groups("0,1,2,3", 4).is_err(), "one group");
        assert!(parse_groups("0,1/2,9", 4).is_err(), "no 9");
        assert!(parse_groups("0,1//2,3", 4).is_err(), "empty group");
        assert_eq!(isolate(2, 4).unwrap(), vec![vec![2], vec![0, 1, 3]]);
        assert_eq!(groups_text(&[vec![0, 1], vec![2, 3]]), "0,1 / 2,3");
    }

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
