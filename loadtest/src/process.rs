//! What Linux says of a server process (`/proc/PID/…`): its CPU time and resident memory.

use anyhow::Context;

/// CPU time (user and system) the process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat: is the process running?"))?;
    // After the command name (in parentheses, which may hold spaces): utime and stime are
    // fields 14 and 15, in the kernel's USER_HZ ticks (100 per second on Linux).
    let after_name = &stat[stat.rfind(')').context("no ) in /proc/PID/stat")? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The process's resident memory (`VmRSS`), in KiB.
pub fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status: is the process running?"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in the process status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_resident_memory_and_cpu_time() {
        let pid = std::process::id();
        assert!(resident_kib(pid).expect("VmRSS") > 0);
        assert!(cpu_seconds(pid).expect("stat") >= 0.0);
        assert!(resident_kib(u32::MAX).is_err());
    }
}
