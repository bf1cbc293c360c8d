//! The operating-system facts the benchmarks read: the open-file limit, and a
//! process's resident memory and CPU time from `/proc`.

// The four libc calls below (getrlimit, setrlimit, sysconf, kill) have no
// safe wrapper in the dependencies we carry; each is a plain syscall on
// values we own.
#![allow(unsafe_code)]

use std::fs;

/// Raises the soft open-file limit to the hard limit (10,000 connections need
/// 10,000 descriptors on each side); children started afterwards inherit it.
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Sends SIGTERM (or SIGKILL) to a process group we started.
pub fn signal_group(pgid: u32, kill: bool) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    // SAFETY: kill has no memory effects; a negative pid names the group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// Resident memory each of `connections` added: from `before` (no client)
/// to `idle` (all connected and subscribed); 0 when none connected.
pub fn rss_per_connection(before: u64, idle: u64, connections: usize) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    idle.saturating_sub(before) as f64 / connections as f64
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time of `pid` (all its threads, living or gone) in
/// nanoseconds, at the resolution of the clock tick (10 ms on most kernels).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    Some(ticks * 1_000_000_000 / clock_ticks_per_second())
}

/// CPU time of `pid`'s living threads in nanoseconds, to the nanosecond:
/// the sum of the first field of `/proc/<pid>/task/*/schedstat`. Threads that
/// ended are missing from it; [`cpu_ns`] counts them at tick resolution.
pub fn thread_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// A CPU-time reading that takes both sources, so a delta can use the precise
/// one unless threads ended in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReading {
    ticks_ns: u64,
    threads_ns: Option<u64>,
}

impl CpuReading {
    /// Reads `pid` now.
    pub fn of(pid: u32) -> Self {
        Self {
            ticks_ns: cpu_ns(pid).unwrap_or(0),
            threads_ns: thread_cpu_ns(pid),
        }
    }

    /// CPU nanoseconds from `self` to `later`: the per-thread figure, unless
    /// it falls more than two ticks short of the tick-based one (a thread
    /// ended and took its time with it).
    pub fn until(&self, later: &CpuReading) -> u64 {
        let coarse = later.ticks_ns.saturating_sub(self.ticks_ns);
        let tick = 1_000_000_000 / clock_ticks_per_second();
        match (self.threads_ns, later.threads_ns) {
            (Some(a), Some(b)) if b >= a && b - a + 2 * tick >= coarse => b - a,
            _ => coarse,
        }
    }
}

fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (state) is the first after ')'; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The process listening on TCP `port` (IPv4 or IPv6), found through the
/// socket's inode: a server started through `cargo run` or a shell is not the
/// child we spawned, and the figures must be the server's own.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && targets.iter().any(|t| link.as_os_str() == t.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            // State 0A is LISTEN.
            if local_port != port || *fields.get(3)? != "0A" {
                return None;
            }
            fields.get(9)?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_from_status() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 2\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(280));
    }

    #[test]
    fn finds_listening_sockets_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n   1: 0100007F:0FA0 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(listening_inodes(table, 4000), vec![4242]);
        assert!(listening_inodes(table, 4001).is_empty());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_ns(me).is_some());
        let before = CpuReading::of(me);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        // Per-thread times are nanoseconds; without them only ticks remain,
        // and a short loop may take none.
        if thread_cpu_ns(me).is_some() {
            assert!(before.until(&CpuReading::of(me)) > 0);
        }
    }
}
