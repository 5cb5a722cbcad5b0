//! The 80 SHA-1 rounds (FIPS 180-4, 6.1.2) written once for any vector type.
//!
//! `sha1_rounds!(w, a, b, c, d, e, [k0, k1, k2, k3])` expands to the rounds over the message
//! schedule ring `w: [V; 16]` (words already big-endian decoded, one lane per vector element) and
//! the working variables `a..e`, in place. It calls, at the expansion site, the functions `add`,
//! `rol5`, `rol30`, `ch`, `parity`, `maj` and `schedule(w[t-3], w[t-8], w[t-14], w[t-16])`,
//! which each kernel module defines for its vector type.

/// One round `t`: the working variables are passed rotated instead of being moved.
macro_rules! sha1_round {
    ($f:ident, $k:expr, $t:expr, $w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {
        if $t >= 16 {
            $w[$t % 16] = schedule($w[($t + 13) % 16], $w[($t + 8) % 16], $w[($t + 2) % 16], $w[$t % 16]);
        }
        // `a` is the only input computed by the previous round: adding its rotation last keeps
        // the dependency chain from round to round at two operations.
        $e = add(add(add($e, add($w[$t % 16], $k)), $f($b, $c, $d)), rol5($a));
        $b = rol30($b);
    };
}

/// Five rounds from `t`, after which the names are back in place.
macro_rules! sha1_round5 {
    ($f:ident, $k:expr, $t:expr, $w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {
        sha1_round!($f, $k, $t, $w, $a, $b, $c, $d, $e);
        sha1_round!($f, $k, $t + 1, $w, $e, $a, $b, $c, $d);
        sha1_round!($f, $k, $t + 2, $w, $d, $e, $a, $b, $c);
        sha1_round!($f, $k, $t + 3, $w, $c, $d, $e, $a, $b);
        sha1_round!($f, $k, $t + 4, $w, $b, $c, $d, $e, $a);
    };
}

/// Twenty rounds with the same function and constant.
macro_rules! sha1_round20 {
    ($f:ident, $k:expr, $t:expr, $w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {
        sha1_round5!($f, $k, $t, $w, $a, $b, $c, $d, $e);
        sha1_round5!($f, $k, $t + 5, $w, $a, $b, $c, $d, $e);
        sha1_round5!($f, $k, $t + 10, $w, $a, $b, $c, $d, $e);
        sha1_round5!($f, $k, $t + 15, $w, $a, $b, $c, $d, $e);
    };
}

macro_rules! sha1_rounds {
    ($w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, [$k0:expr, $k1:expr, $k2:expr, $k3:expr]) => {
        sha1_round20!(ch, $k0, 0, $w, $a, $b, $c, $d, $e);
        sha1_round20!(parity, $k1, 20, $w, $a, $b, $c, $d, $e);
        sha1_round20!(maj, $k2, 40, $w, $a, $b, $c, $d, $e);
        sha1_round20!(parity, $k3, 60, $w, $a, $b, $c, $d, $e);
    };
}

/// The round constants K (FIPS 180-4, 4.2.1).
pub(crate) const K: [u32; 4] = [0x5A82_7999, 0x6ED9_EBA1, 0x8F1B_BCDC, 0xCA62_C1D6];
