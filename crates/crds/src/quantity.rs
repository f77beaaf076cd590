//! Exact parsing of Kubernetes quantities (`500m`, `16Gi`, `1e3`, `8`) into integers.
//!
//! No floating point and no wrapping arithmetic: every step is checked, and a value that does
//! not fit in a `u64` is an error. Fractions below the unit are rounded up, as Kubernetes does
//! for `Value()` and `MilliValue()`.

use std::fmt;

/// Why a quantity string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantityError {
    Empty,
    /// Not `<sign><digits>[.<digits>]<suffix>` (the offending text).
    Malformed(String),
    /// Quotas are never negative.
    Negative(String),
    /// Larger than a `u64` in the requested unit.
    TooLarge(String),
    /// A count that must be whole (GPUs) has a fraction.
    NotWhole(String),
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty quantity"),
            Self::Malformed(q) => write!(
                f,
                "{q:?} is not a Kubernetes quantity (expected e.g. 8, 500m, 16Gi, 1e3)"
            ),
            Self::Negative(q) => write!(f, "{q:?} is negative"),
            Self::TooLarge(q) => write!(f, "{q:?} is too large"),
            Self::NotWhole(q) => write!(f, "{q:?} is not a whole number"),
        }
    }
}

impl std::error::Error for QuantityError {}

/// `q` × 10^`scale`, rounded up: `scale` 0 for bytes and counts, 3 for millicores.
pub fn parse_scaled(q: &str, scale: u32) -> Result<u64, QuantityError> {
    let p = Parsed::new(q)?;
    p.value(q, scale, true)
}

/// A whole count (GPUs): `8`, `8.0`, `1e1`; `1.5` or `500m` is [`QuantityError::NotWhole`].
pub fn parse_count(q: &str) -> Result<u64, QuantityError> {
    let p = Parsed::new(q)?;
    p.value(q, 0, false)
}

/// CPU in millicores (`2` is 2000, `500m` is 500, `0.1m` rounds up to 1).
pub fn parse_millis(q: &str) -> Result<u64, QuantityError> {
    parse_scaled(q, 3)
}

/// Memory in bytes (`16Gi`, `4G`, `1e9`).
pub fn parse_bytes(q: &str) -> Result<u64, QuantityError> {
    parse_scaled(q, 0)
}

/// digits × 10^exp10 × 2^exp2.
struct Parsed {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

/// 10^38 is the largest power of ten in a u128.
const MAX_POW10: i32 = 38;

impl Parsed {
    fn new(q: &str) -> Result<Self, QuantityError> {
        let malformed = || QuantityError::Malformed(q.to_string());
        if q.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, rest) = match q.as_bytes()[0] {
            b'-' => (true, &q[1..]),
            b'+' => (false, &q[1..]),
            _ => (false, q),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(malformed());
        }
        let mut digits: u128 = 0;
        for c in int.bytes().chain(frac.bytes()) {
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(u128::from(c - b'0')))
                .ok_or_else(|| QuantityError::TooLarge(q.to_string()))?;
        }
        if negative && digits != 0 {
            return Err(QuantityError::Negative(q.to_string()));
        }
        let frac_len = i32::try_from(frac.len()).map_err(|_| malformed())?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s => {
                let e = s.strip_prefix(['e', 'E']).ok_or_else(malformed)?;
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(malformed());
                }
                (e.parse::<i32>().map_err(|_| malformed())?, 0)
            }
        };
        let exp10 = exp10.checked_sub(frac_len).ok_or_else(malformed)?;
        Ok(Self {
            digits,
            exp10,
            exp2,
        })
    }

    fn value(&self, q: &str, scale: u32, round_up: bool) -> Result<u64, QuantityError> {
        let too_large = || QuantityError::TooLarge(q.to_string());
        if self.digits == 0 {
            return Ok(0);
        }
        let scale = i32::try_from(scale).map_err(|_| too_large())?;
        let exp10 = self.exp10.checked_add(scale).ok_or_else(too_large)?;
        let num = self
            .digits
            .checked_mul(1u128.checked_shl(self.exp2).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
        let v = if exp10 >= 0 {
            if exp10 > MAX_POW10 {
                return Err(too_large());
            }
            num.checked_mul(10u128.pow(exp10.unsigned_abs()))
                .ok_or_else(too_large)?
        } else {
            let down = exp10.unsigned_abs();
            let (whole, rem) = if down > MAX_POW10.unsigned_abs() {
                (0, true) // far below one unit (num < 2^128 < 10^39)
            } else {
                let den = 10u128.pow(down);
                (num / den, num % den != 0)
            };
            match (rem, round_up) {
                (false, _) => whole,
                (true, true) => whole.checked_add(1).ok_or_else(too_large)?,
                (true, false) => return Err(QuantityError::NotWhole(q.to_string())),
            }
        };
        u64::try_from(v).map_err(|_| too_large())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millis() {
        assert_eq!(parse_millis("2"), Ok(2000));
        assert_eq!(parse_millis("500m"), Ok(500));
        assert_eq!(parse_millis("1.5"), Ok(1500));
        assert_eq!(parse_millis("0.1m"), Ok(1), "rounds up like Kubernetes");
        assert_eq!(parse_millis(".5"), Ok(500));
        assert_eq!(parse_millis("2."), Ok(2000));
        assert_eq!(parse_millis("+3"), Ok(3000));
        assert_eq!(parse_millis("1e3"), Ok(1_000_000));
        assert_eq!(parse_millis("1E-3"), Ok(1));
        assert_eq!(parse_millis("1k"), Ok(1_000_000));
        assert_eq!(parse_millis("0"), Ok(0));
        assert_eq!(parse_millis("-0"), Ok(0));
        assert_eq!(parse_millis("100000u"), Ok(100));
        assert_eq!(parse_millis("1n"), Ok(1));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse_bytes("16Gi"), Ok(16 << 30));
        assert_eq!(parse_bytes("4G"), Ok(4_000_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Ok(1536));
        assert_eq!(parse_bytes("128974848"), Ok(128_974_848));
        assert_eq!(parse_bytes("129e6"), Ok(129_000_000));
        assert_eq!(parse_bytes("123Mi"), Ok(123 << 20));
        assert_eq!(parse_bytes("8Ei"), Ok(8 << 60));
        assert_eq!(parse_bytes("1m"), Ok(1), "a milli-byte rounds up to a byte");
        assert_eq!(parse_bytes("1e-50"), Ok(1));
        assert_eq!(parse_bytes("1e-2147483648"), Ok(1));
    }

    #[test]
    fn gpu_counts_are_whole() {
        assert_eq!(parse_count("8"), Ok(8));
        assert_eq!(parse_count("8.0"), Ok(8));
        assert_eq!(parse_count("1e1"), Ok(10));
        assert_eq!(parse_count("2000m"), Ok(2));
        assert_eq!(
            parse_count("1.5"),
            Err(QuantityError::NotWhole("1.5".into()))
        );
        assert_eq!(
            parse_count("500m"),
            Err(QuantityError::NotWhole("500m".into()))
        );
    }

    #[test]
    fn garbage_is_refused_with_a_clear_error() {
        for bad in [
            "abc", "1x", "1.2.3", ".", "+", "-", "1e", "1e+", "1ee3", "1Gi5", " 1", "1 ", "0x10",
            "1,5", "∞", "1e3.5", "1KI", "Gi",
        ] {
            let err = parse_bytes(bad).unwrap_err();
            assert_eq!(err, QuantityError::Malformed(bad.into()), "{bad}");
            assert!(
                err.to_string().contains("not a Kubernetes quantity"),
                "{err}"
            );
        }
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
        assert_eq!(
            parse_millis("-1"),
            Err(QuantityError::Negative("-1".into()))
        );
        assert_eq!(
            parse_bytes("-500m"),
            Err(QuantityError::Negative("-500m".into()))
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        for big in [
            "16Ei",
            "18446744073709551616",
            "1e20",
            "1e39",
            "1e2147483647",
            "99999999999999999999999999999999999999999999",
            "1Ei",
        ] {
            let r = parse_millis(big);
            assert_eq!(r, Err(QuantityError::TooLarge(big.into())), "{big}");
        }
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_bytes("1.5e-2147483648"),
            Err(QuantityError::Malformed("1.5e-2147483648".into()))
        );
    }
}
