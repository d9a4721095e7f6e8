//! The stand-in's settings, read once from the environment at `cuInit`.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `CUDA_STANDIN_MEMORY` | device memory, e.g. `512MiB`, `2GiB`, `80GB` (default: an H100's 80 GiB, or half the host's memory if that is less: device memory here is host memory) |
//! | `CUDA_STANDIN_FAIL` | fault injection: `launch:N` (the Nth kernel faults), `alloc:N` (the Nth device allocation is out of memory), `copy:N` (the Nth copy faults) |
//! | `CUDA_STANDIN_STATS` | `1`: print launches, allocations and copies when the process exits |
//! | `CUDA_STANDIN_QUIET` | `1`: no banner at `cuInit` |
//! | `CUDA_LAUNCH_BLOCKING` | `1`: a faulting launch returns its error itself, as the real driver does |
//! | `CUDA_STANDIN_EAGER_COPIES` | `1`: device-to-host copies land when queued. Default: they land only at a synchronisation that covers them (stream, event or context synchronisation, a synchronous copy), their destination reading NaN / all bits set until then, so host code that reads a result before synchronising is caught (`inflight.rs`) |

/// What a fault injection hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// The Nth kernel execution (eager or in a graph replay) faults with an illegal address.
    Launch,
    /// The Nth device allocation returns `CUDA_ERROR_OUT_OF_MEMORY`.
    Alloc,
    /// The Nth copy faults with an illegal address.
    Copy,
}

/// `CUDA_STANDIN_FAIL`: where and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub point: FailPoint,
    /// 1-based count of events of that kind since the process started.
    pub nth: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub memory_bytes: u64,
    pub fail: Option<Fail>,
    pub stats: bool,
    pub quiet: bool,
    pub launch_blocking: bool,
    /// Device-to-host copies land at a synchronisation, not when queued (the default).
    pub deferred_copies: bool,
}

/// An H100 80GB's memory.
pub const DEFAULT_MEMORY: u64 = 80 << 30;

impl Config {
    /// Reads the environment; an unparsable value is an error naming the variable.
    pub fn from_env() -> Result<Config, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let flag = |k: &str| var(k).is_some_and(|v| v != "0");
        let memory_bytes = match var("CUDA_STANDIN_MEMORY") {
            Some(v) => parse_bytes(&v).map_err(|e| format!("CUDA_STANDIN_MEMORY={v}: {e}"))?,
            None => host_memory().map_or(DEFAULT_MEMORY, |m| DEFAULT_MEMORY.min(m / 2)),
        };
        let fail = match var("CUDA_STANDIN_FAIL") {
            Some(v) => Some(parse_fail(&v).map_err(|e| format!("CUDA_STANDIN_FAIL={v}: {e}"))?),
            None => None,
        };
        Ok(Config {
            memory_bytes,
            fail,
            stats: flag("CUDA_STANDIN_STATS"),
            quiet: flag("CUDA_STANDIN_QUIET"),
            launch_blocking: flag("CUDA_LAUNCH_BLOCKING"),
            deferred_copies: !flag("CUDA_STANDIN_EAGER_COPIES"),
        })
    }
}

/// The host's physical memory (`MemTotal` of /proc/meminfo), if readable.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// `123`, `64K`, `512MiB`, `2GiB`, `80GB` (K/M/G/T, binary either way).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| "expected a number of bytes, e.g. 512MiB".to_string())?;
    let shift = match s[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("unknown unit `{other}` (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| "must be between 1 byte and 16 EiB".to_string())
}

/// `bytes` for people.
pub fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

fn parse_fail(s: &str) -> Result<Fail, String> {
    let (what, n) = s
        .split_once(':')
        .ok_or("expected launch:N, alloc:N or copy:N")?;
    let point = match what {
        "launch" => FailPoint::Launch,
        "alloc" => FailPoint::Alloc,
        "copy" => FailPoint::Copy,
        other => {
            return Err(format!(
                "unknown fail point `{other}` (launch, alloc or copy)"
            ))
        }
    };
    let nth = n
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or("N must be a positive count")?;
    Ok(Fail { point, nth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert_eq!(parse_bytes("64K").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2gib").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("80GB").unwrap(), 80 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn fail_points_parse() {
        assert_eq!(
            parse_fail("launch:7").unwrap(),
            Fail {
                point: FailPoint::Launch,
                nth: 7
            }
        );
        assert_eq!(parse_fail("alloc:1").unwrap().point, FailPoint::Alloc);
        assert_eq!(parse_fail("copy:3").unwrap().point, FailPoint::Copy);
        assert!(parse_fail("launch:0").is_err());
        assert!(parse_fail("memset:2").is_err());
        assert!(parse_fail("launch").is_err());
    }
}
