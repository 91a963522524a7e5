//! This process's CPU time and resident memory, from `/proc/self` (Linux; elsewhere none).

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// Now, or `None` where `/proc` is not there.
pub fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    parse(&stat, &statm, ticks, page)
}

/// `utime + stime` (fields 14 and 15 of `stat`, counted after the parenthesised command name,
/// which may itself hold spaces) and `statm`'s resident pages.
fn parse(stat: &str, statm: &str, ticks_per_sec: i64, page_bytes: i64) -> Option<ProcessSample> {
    if ticks_per_sec <= 0 || page_bytes <= 0 {
        return None;
    }
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessSample {
        cpu_seconds: (utime + stime) as f64 / ticks_per_sec as f64,
        resident_bytes: resident_pages * page_bytes as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (parley (node a)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        let statm = "12345 678 90 1 0 2 0";
        let p = parse(stat, statm, 100, 4096).unwrap();
        assert_eq!(p, ProcessSample { cpu_seconds: 3.0, resident_bytes: 678 * 4096 });
        assert_eq!(parse("garbage", statm, 100, 4096), None);
        assert_eq!(parse(stat, statm, 0, 4096), None);
    }

    #[test]
    fn this_process_has_a_reading() {
        let p = sample().expect("/proc is there on Linux");
        assert!(p.resident_bytes > 0 && p.cpu_seconds >= 0.0);
    }
}
