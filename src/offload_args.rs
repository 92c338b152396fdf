//! The expert-offloading flags of `kiln run` and `kiln bench` (flattened into both), and their
//! translation into the runtime's [`OffloadConfig`].

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::offload::{CacheSize, OffloadConfig, PolicyKind};
use std::path::PathBuf;

#[derive(Args, Clone, Debug, Default)]
pub struct OffloadArgs {
    /// Offload MoE experts: keep K experts per MoE layer in memory and load the others from the
    /// artifact's weight file when the router picks them.
    #[arg(long, value_name = "K", conflicts_with = "expert_budget")]
    pub expert_cache: Option<usize>,
    /// Offload MoE experts under a memory budget for all cached experts together, split evenly
    /// over the MoE layers: bytes, or with a suffix K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti
    /// (powers of 1024), e.g. 300M, 1.5G, 512Ki.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub expert_budget: Option<u64>,
    /// Which cached expert to evict: lru, lfu, router-ema or none (no reuse: the naive baseline)
    /// [default: lru].
    #[arg(long, value_name = "POLICY", value_parser = parse_policy)]
    pub policy: Option<PolicyKind>,
    /// Prefetch the N experts the next MoE layer's router most likely picks, guessed from the
    /// current layer's hidden state [default: 0].
    #[arg(long, value_name = "N")]
    pub prefetch: Option<usize>,
    /// Write every routing decision and the cache counters to FILE.json (`kiln offload-report`).
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Read experts through the page cache instead of with O_DIRECT.
    #[arg(long)]
    pub buffered_io: bool,
}

fn parse_policy(s: &str) -> Result<PolicyKind, String> {
    s.parse()
}

/// A byte count: `123456`, or a number (fractions allowed) with a decimal (K, M, G, T) or binary
/// (Ki, Mi, Gi, Ti) suffix and an optional `B`: `300M`, `1.5G`, `512Ki`, `2GiB`. Decimal units
/// match the MB and GB Kiln's reports print.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, scale) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = &t[i..];
            let scale = match unit.to_ascii_lowercase().as_str() {
                "k" => 1_000,
                "m" => 1_000_000,
                "g" => 1_000_000_000,
                "t" => 1_000_000_000_000,
                "ki" => 1 << 10,
                "mi" => 1 << 20,
                "gi" => 1 << 30,
                "ti" => 1 << 40,
                _ => return Err(format!("'{s}': unknown unit '{unit}' (expected K, M, G, T, Ki, Mi, Gi or Ti)")),
            };
            (&t[..i], scale)
        }
    };
    let bad = || format!("'{s}' is not a byte count (e.g. 123456, 512K, 300M, 1.5G, 2GiB)");
    let bytes = if let Ok(n) = num.parse::<u64>() {
        n.checked_mul(scale).ok_or_else(|| format!("'{s}' is too large"))?
    } else {
        let x: f64 = num.parse().map_err(|_| bad())?;
        // A fraction of a byte is a typo, not a rounding question.
        if !x.is_finite() || x < 0.0 || scale == 1 {
            return Err(bad());
        }
        let b = (x * scale as f64).round();
        if b >= u64::MAX as f64 {
            return Err(format!("'{s}' is too large"));
        }
        b as u64
    };
    if bytes == 0 {
        return Err(format!("'{s}': the budget must be more than 0 bytes"));
    }
    Ok(bytes)
}

impl OffloadArgs {
    /// The offloading settings, or None when the run keeps every expert resident (neither
    /// --expert-cache nor --expert-budget).
    pub fn config(&self) -> Result<Option<OffloadConfig>> {
        let cache = match (self.expert_cache, self.expert_budget) {
            (Some(0), _) => bail!("--expert-cache must be at least 1"),
            (Some(_), Some(_)) => bail!("--expert-cache and --expert-budget conflict: give one"),
            (Some(k), None) => CacheSize::Experts(k),
            (None, Some(b)) => CacheSize::Budget(b),
            (None, None) => {
                // Flags that only mean something for an offloaded run would be silently ignored.
                let stray = [
                    ("--policy", self.policy.is_some()),
                    ("--prefetch", self.prefetch.is_some()),
                    ("--trace", self.trace.is_some()),
                    ("--buffered-io", self.buffered_io),
                ];
                if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
                    bail!("{flag} needs --expert-cache or --expert-budget");
                }
                return Ok(None);
            }
        };
        let mut c = OffloadConfig::new(cache, self.policy.unwrap_or(PolicyKind::Lru));
        c.prefetch = self.prefetch.unwrap_or(0);
        c.record_events = self.trace.is_some();
        c.direct_io = !self.buffered_io;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        offload: OffloadArgs,
    }

    fn parse(args: &[&str]) -> Result<OffloadArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied())).map(|c| c.offload)
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("123456"), Ok(123_456));
        assert_eq!(parse_bytes("512K"), Ok(512_000));
        assert_eq!(parse_bytes("300M"), Ok(300_000_000));
        assert_eq!(parse_bytes("300MB"), Ok(300_000_000));
        assert_eq!(parse_bytes("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("1.5g"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("0.5Mi"), Ok(1 << 19));
        for bad in ["", "M", "1.5X", "-3M", "abc", "1e400", "NaNG", "0", "0K", "99999999999T", "1.5"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn no_cache_size_means_no_offloading() {
        assert_eq!(parse(&[]).unwrap().config().unwrap(), None);
        for (flags, flag) in [
            (&["--prefetch", "2"][..], "--prefetch"),
            (&["--policy", "lfu"][..], "--policy"),
            (&["--trace", "t.json"][..], "--trace"),
            (&["--buffered-io"][..], "--buffered-io"),
        ] {
            let e = parse(flags).unwrap().config().unwrap_err().to_string();
            assert_eq!(e, format!("{flag} needs --expert-cache or --expert-budget"));
        }
    }

    #[test]
    fn settings() {
        let c = parse(&["--expert-cache", "4"]).unwrap().config().unwrap().unwrap();
        assert_eq!(c, OffloadConfig::new(CacheSize::Experts(4), PolicyKind::Lru));
        let c = parse(&["--expert-budget", "1.5G", "--policy", "router-ema", "--prefetch", "2", "--trace", "t.json"])
            .unwrap()
            .config()
            .unwrap()
            .unwrap();
        assert_eq!(c.cache, CacheSize::Budget(1_500_000_000));
        assert_eq!((c.policy, c.prefetch, c.record_events, c.direct_io), (PolicyKind::RouterEma, 2, true, true));
        let c =
            parse(&["--expert-cache", "2", "--policy", "none", "--buffered-io"]).unwrap().config().unwrap().unwrap();
        assert_eq!((c.policy, c.record_events, c.direct_io), (PolicyKind::None, false, false));
        assert!(parse(&["--expert-cache", "0"]).unwrap().config().is_err());
    }

    #[test]
    fn bad_flags_are_clap_errors() {
        let e = parse(&["--expert-cache", "4", "--expert-budget", "1G"]).err().unwrap().to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&["--expert-cache", "4", "--policy", "fifo"]).err().unwrap().to_string();
        assert!(e.contains("unknown expert-cache policy 'fifo'"), "{e}");
        let e = parse(&["--expert-budget", "3Q"]).err().unwrap().to_string();
        assert!(e.contains("unknown unit 'Q'"), "{e}");
    }
}
