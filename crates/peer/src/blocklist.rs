//! IP blocklists (Transmission's `blocklist-url`): ranges of addresses that no peer may come
//! from or be dialed at. Read from the formats Transmission reads, one rule a line, gzipped or
//! not: P2P text (`description:first-last`), eMule DAT (`first - last , level , description`)
//! and CIDR (`address/bits`), IPv4 and IPv6. No I/O.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most a gzipped list may inflate to (the biggest lists Transmission users fetch are some
/// 10 to 20 MB of text).
const MAX_TEXT: u64 = 64 << 20;
/// The most rules a list may hold (those lists hold up to about a million; 4 million IPv6
/// ranges take 128 MB).
const MAX_RULES: usize = 4_000_000;

/// The longest text of a range (two IPv6 addresses of 45 characters, a `-`, spaces).
const MAX_RANGE: usize = 128;

/// Ranges of addresses, sorted and merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Blocklist {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// The rules read (Transmission's `blocklist-size`).
    rules: usize,
}

impl Blocklist {
    /// Reads a list. Blank lines and `#` comments are skipped, and so are lines that are no
    /// rule (as Transmission does: lists in the wild carry headers and stray lines); a list
    /// with no rule at all is an error that says what its first line that is none holds. Takes
    /// a while for a big list: call it off the async threads.
    pub fn parse(data: &[u8]) -> Result<Blocklist, String> {
        let inflated;
        let text = if data.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(data)
                .take(MAX_TEXT + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("the gzipped list does not inflate: {e}"))?;
            if out.len() as u64 > MAX_TEXT {
                return Err(format!("the gzipped list inflates past {} MiB", MAX_TEXT >> 20));
            }
            inflated = out;
            &inflated[..]
        } else {
            data
        };
        let mut list = Blocklist::default();
        let mut first_bad: Option<(usize, String)> = None;
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match rule(line) {
                Some((IpAddr::V4(a), IpAddr::V4(b))) => list.v4.push((a.into(), b.into())),
                Some((IpAddr::V6(a), IpAddr::V6(b))) => list.v6.push((a.into(), b.into())),
                _ => {
                    first_bad.get_or_insert_with(|| (n + 1, line.chars().take(80).collect()));
                    continue;
                }
            }
            list.rules += 1;
            if list.rules > MAX_RULES {
                return Err(format!("more than {MAX_RULES} rules"));
            }
        }
        if list.rules == 0 {
            return Err(match first_bad {
                Some((n, line)) => format!("no rule in the list: line {n} is none ({line:?})"),
                None => "the list is empty".to_owned(),
            });
        }
        merge(&mut list.v4);
        merge(&mut list.v6);
        Ok(list)
    }

    /// The rules read.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Whether `ip` is in a range (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// Sorts and merges overlapping ranges, in place.
fn merge<T: Ord + Copy>(ranges: &mut Vec<(T, T)>) {
    ranges.sort_unstable();
    let mut kept = 0;
    for i in 0..ranges.len() {
        let (a, b) = ranges[i];
        if kept > 0 && a <= ranges[kept - 1].1 {
            ranges[kept - 1].1 = ranges[kept - 1].1.max(b);
        } else {
            ranges[kept] = (a, b);
            kept += 1;
        }
    }
    ranges.truncate(kept);
    ranges.shrink_to_fit();
}

/// A line's range, first and last address of one family, first ≤ last: the first of the
/// formats that reads it (a description may hold a `,`, a `/` or a `:`).
fn rule(line: &str) -> Option<(IpAddr, IpAddr)> {
    let dat = || range(line.split_once(',')?.0);
    // The range follows the description's `:`. A description may hold `:` too, and so does an
    // IPv6 address: the range is the longest tail after a `:` that reads as one (Transmission
    // splits at the first `:`; a description that ends in hex digits and `:` can be read into
    // an IPv6 address either way). Only short tails are tried: a line of a million `:` costs no
    // more than a short one.
    let p2p = || line.match_indices(':').map(|(i, _)| &line[i + 1..]).filter(|t| t.len() <= MAX_RANGE).find_map(range);
    let cidr = || {
        let (a, bits) = line.split_once('/')?;
        block(a.trim(), bits.trim())
    };
    dat().or_else(p2p).or_else(cidr).or_else(|| range(line))
}

/// `first-last`, of one family, first ≤ last.
fn range(s: &str) -> Option<(IpAddr, IpAddr)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (addr(a.trim())?, addr(b.trim())?);
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) if x <= y => Some((a, b)),
        (IpAddr::V6(x), IpAddr::V6(y)) if x <= y => Some((a, b)),
        _ => None,
    }
}

/// An address; IPv4 with zero-padded parts too (`001.002.003.004`, as DAT lists write them).
fn addr(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let mut parts = s.split('.');
    let mut o = [0u8; 4];
    for x in &mut o {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *x = p.parse().ok()?;
    }
    parts.next().is_none().then(|| IpAddr::V4(Ipv4Addr::from(o)))
}

/// `address/bits`.
fn block(a: &str, bits: &str) -> Option<(IpAddr, IpAddr)> {
    let bits: u32 = bits.parse().ok()?;
    match addr(a)? {
        IpAddr::V4(x) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            let first = u32::from(x) & mask;
            Some((Ipv4Addr::from(first).into(), Ipv4Addr::from(first | !mask).into()))
        }
        IpAddr::V6(x) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            let first = u128::from(x) & mask;
            Some((Ipv6Addr::from(first).into(), Ipv6Addr::from(first | !mask).into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_three_formats_gzipped_or_not() {
        let text = "# a header\n\
                    Some org, Inc/Ltd:1.2.3.0-1.2.3.255\n\
                    010.000.000.000 - 010.000.255.255 , 000 , DAT line\n\
                    192.168.0.0/16\n\
                    2001:db8::/32\n\
                    this line is none\n\
                    \n\
                    overlap:1.2.3.128-1.2.4.10\n\
                    IPv6 org: x:y:2001:db9:5::-2001:db9:5::ffff\n\
                    no description:2001:dba:7::1-2001:dba:7::1\n";
        let plain = Blocklist::parse(text.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = Blocklist::parse(&gz.finish().unwrap()).unwrap();
        assert_eq!(plain, zipped);
        assert_eq!(plain.rules(), 7);
        for (a, blocked) in [
            ("1.2.2.255", false),
            ("1.2.3.0", true),
            ("1.2.4.10", true),
            ("1.2.4.11", false),
            ("10.0.200.1", true),
            ("10.1.0.0", false),
            ("192.168.77.1", true),
            ("::ffff:192.168.1.1", true),
            ("2001:db8:1::1", true),
            ("2001:db9::1", false),
            ("2001:db9:5::fff", true),
            ("2001:db9:5::1:0", false),
            ("2001:dba:7::1", true),
            ("2001:dba:7::2", false),
            ("127.0.0.1", false),
        ] {
            assert_eq!(plain.contains(ip(a)), blocked, "{a}");
        }
    }

    #[test]
    fn a_list_with_no_rule_says_which_line_is_none() {
        let e = Blocklist::parse(b"# header\n<html>not a list</html>\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("<html>"), "{e}");
        assert_eq!(Blocklist::parse(b"\n# only\n").unwrap_err(), "the list is empty");
        // Reversed, mixed or bad ranges are none.
        for bad in ["x:1.2.3.4-1.2.3.0", "1.2.3.4 - ::1 , 0 , x", "1.2.3/8", "1.2.3.4/33", "a:1.2.3.256-1.2.3.257"] {
            assert!(Blocklist::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!("{}1.2.3.4-1.2.3.5x", ":".repeat(1 << 20));
        assert!(Blocklist::parse(long.as_bytes()).is_err());
        let bomb = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&[b'#'; 1 << 20]).unwrap();
            gz.finish().unwrap()
        };
        assert_eq!(Blocklist::parse(&bomb).unwrap_err(), "the list is empty");
        assert!(Blocklist::parse(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err().contains("does not inflate"));
    }
}
