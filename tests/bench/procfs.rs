//! What `/proc` says about the processes under measurement: resident memory,
//! open files and CPU time (Linux only, like the whole benchmark).

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on every Linux
/// build this runs on (reading `sysconf(_SC_CLK_TCK)` would need unsafe FFI).
const TICKS_PER_S: f64 = 100.0;

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Open file descriptors of a process.
pub fn open_files(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The soft limit of open files of this process (inherited by its children).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// User + system CPU time of a process so far, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The pid of the `redis-server` listening on `port` (it names its address
/// in its command line).
pub fn redis_pid(port: u16) -> Option<u32> {
    let wanted = format!(":{port}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with("redis-server") && cmdline.contains(&wanted)).then_some(pid)
        })
}

/// CPU use of named processes over an interval.
pub struct CpuMeter {
    started: Instant,
    start: Vec<(String, u32, u64)>,
}

/// What [`CpuMeter::finish`] measured: CPU seconds per name (processes of
/// the same name, e.g. the workers, summed) over `wall_s` seconds.
pub struct CpuUse {
    pub wall_s: f64,
    pub seconds: Vec<(String, f64)>,
}

impl CpuMeter {
    pub fn start(processes: &[(String, u32)]) -> Self {
        let start = processes
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), *pid, cpu_ticks(*pid)?)))
            .collect();
        Self {
            started: Instant::now(),
            start,
        }
    }

    pub fn finish(&self) -> CpuUse {
        let wall_s = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut seconds: Vec<(String, f64)> = Vec::new();
        for (name, pid, before) in &self.start {
            let Some(now) = cpu_ticks(*pid) else { continue };
            let used = now.saturating_sub(*before) as f64 / TICKS_PER_S;
            match seconds.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 += used,
                None => seconds.push((name.clone(), used)),
            }
        }
        CpuUse { wall_s, seconds }
    }
}

impl CpuUse {
    /// `(name, percent of one core)`, rounded.
    pub fn percents(&self) -> Vec<(String, f64)> {
        self.seconds
            .iter()
            .map(|(name, s)| (name.clone(), (s / self.wall_s * 100.0).round()))
            .collect()
    }

    /// CPU seconds of the processes whose name `include` accepts.
    pub fn seconds_of(&self, include: impl Fn(&str) -> bool) -> f64 {
        self.seconds
            .iter()
            .filter(|(name, _)| include(name))
            .map(|(_, s)| s)
            .sum()
    }

    /// Percent of one core used by the processes whose name `include` accepts.
    pub fn percent_of(&self, include: impl Fn(&str) -> bool) -> f64 {
        (self.seconds_of(include) / self.wall_s * 100.0).round()
    }
}

/// The machine, for the report: cores, CPU model, memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{cores} cores ({model}), {mem_gib:.1} GiB RAM, open-files limit {}",
        open_files_limit().unwrap_or(0)
    )
}

/// `gateway 95%, auth 60%` for the table.
pub fn describe_cpu(usage: &[(String, f64)]) -> String {
    usage
        .iter()
        .map(|(name, pct)| format!("{name} {pct}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_rss_files_and_cpu_time() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own status is readable") > 0);
        assert!(open_files(pid).expect("own fds are readable") >= 3);
        assert!(cpu_ticks(pid).is_some());
    }
}
