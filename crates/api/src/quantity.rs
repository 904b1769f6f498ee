//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as exact integers.
//!
//! One parser for every component: the API server validates requests against limits,
//! the scheduler adds requests up against allocatable, and the agent turns limits into
//! cgroup values, emptyDir sizes and downward API values. Integer nanos keep
//! `100m + 900m == 1` true, which floating point would not guarantee.

/// Billionths of a unit: exact for every suffix from `n` to `Ei`.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct InvalidQuantity(pub String);

/// A parsed quantity, in billionths of its unit (so `100m` CPU is `100_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// Parses the Kubernetes quantity syntax: a signed decimal number followed by a
    /// binary suffix (`Ki`..`Ei`), a decimal suffix (`n`, `u`, `m`, `k`, `M`..`E`) or
    /// an exponent (`e3`, `E-2`). Digits beyond nano precision are rounded up, as
    /// the API server does.
    pub fn parse(text: &str) -> Result<Self, InvalidQuantity> {
        let error = || InvalidQuantity(text.to_owned());
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(error());
        }
        let scale = Scale::parse(suffix).ok_or_else(error)?;
        let digits = format!("{whole}{fraction}");
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| error())?
        };
        let decimals = i32::try_from(fraction.len()).map_err(|_| error())?;
        let nanos = scale.apply(mantissa, decimals).ok_or_else(error)?;
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// The value rounded up to a whole number of units (bytes, cores).
    pub fn ceil_units(self) -> i128 {
        ceil_div(self.nanos, NANOS_PER_UNIT)
    }

    /// `self / divisor`, rounded up, as the kubelet reports resource values; a zero
    /// divisor counts as 1.
    pub fn ceil_div(self, divisor: Quantity) -> i128 {
        if divisor.nanos == 0 {
            return self.ceil_units();
        }
        ceil_div(self.nanos, divisor.nanos)
    }

    /// Zero.
    pub fn zero() -> Self {
        Self { nanos: 0 }
    }

    /// Milli-units rounded up, as `resource.Quantity.MilliValue()` (CPU in millicores).
    pub fn milli_value(self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_UNIT / 1000))
    }

    /// Whole units rounded up, as `resource.Quantity.Value()` (bytes, counts).
    pub fn value(self) -> i64 {
        saturate(self.ceil_units())
    }

    /// The value as a float, for callers that only compare or scale it.
    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

fn ceil_div(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator / denominator;
    if numerator % denominator != 0 && (numerator > 0) == (denominator > 0) {
        quotient + 1
    } else {
        quotient
    }
}

/// What a suffix multiplies by.
enum Scale {
    Binary(u32),
    Decimal(i32),
}

impl Scale {
    fn parse(suffix: &str) -> Option<Self> {
        Some(match suffix {
            "Ki" => Self::Binary(10),
            "Mi" => Self::Binary(20),
            "Gi" => Self::Binary(30),
            "Ti" => Self::Binary(40),
            "Pi" => Self::Binary(50),
            "Ei" => Self::Binary(60),
            "n" => Self::Decimal(-9),
            "u" => Self::Decimal(-6),
            "m" => Self::Decimal(-3),
            "" => Self::Decimal(0),
            "k" => Self::Decimal(3),
            "M" => Self::Decimal(6),
            "G" => Self::Decimal(9),
            "T" => Self::Decimal(12),
            "P" => Self::Decimal(15),
            "E" => Self::Decimal(18),
            exponent => {
                let digits = exponent
                    .strip_prefix('e')
                    .or_else(|| exponent.strip_prefix('E'))?;
                let digits = digits.strip_prefix('+').unwrap_or(digits);
                if digits.is_empty() {
                    return None;
                }
                Self::Decimal(digits.parse().ok().filter(|e: &i32| e.abs() <= 30)?)
            }
        })
    }

    /// `mantissa * 10^-decimals * scale`, in nanos, rounded up.
    fn apply(&self, mantissa: i128, decimals: i32) -> Option<i128> {
        let (numerator, power_of_ten) = match self {
            Self::Binary(shift) => (mantissa.checked_mul(1i128 << shift)?, 9 - decimals),
            Self::Decimal(exponent) => (mantissa, 9 + exponent - decimals),
        };
        if power_of_ten >= 0 {
            numerator.checked_mul(10i128.checked_pow(power_of_ten.unsigned_abs())?)
        } else {
            let divisor = 10i128.checked_pow(power_of_ten.unsigned_abs())?;
            Some(ceil_div(numerator, divisor))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(text: &str) -> i128 {
        Quantity::parse(text).unwrap().ceil_units()
    }

    #[test]
    fn suffixes_scale_exactly() {
        assert_eq!(units("64Mi"), 64 << 20);
        assert_eq!(units("1.5Gi"), 3 << 29);
        assert_eq!(units("2k"), 2000);
        assert_eq!(units("1e3"), 1000);
        assert_eq!(units("12E-1"), 2);
        assert_eq!(units("100"), 100);
        assert_eq!(units(".5"), 1);
        assert_eq!(units("8Ei") / (1 << 60), 8);
    }

    #[test]
    fn cpu_values_round_up_against_the_divisor() {
        let cpu = Quantity::parse("250m").unwrap();
        assert_eq!(cpu.ceil_div(Quantity::parse("1").unwrap()), 1);
        assert_eq!(cpu.ceil_div(Quantity::parse("1m").unwrap()), 250);
        assert_eq!(cpu.ceil_div(Quantity::zero()), 1);
        let memory = Quantity::parse("128Mi").unwrap();
        assert_eq!(memory.ceil_div(Quantity::parse("1Mi").unwrap()), 128);
    }

    fn milli(text: &str) -> i64 {
        Quantity::parse(text).unwrap().milli_value()
    }

    fn value(text: &str) -> i64 {
        Quantity::parse(text).unwrap().value()
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("250m"), 250);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("100u"), 1, "rounded up like MilliValue()");
        assert_eq!(milli("2e3"), 2_000_000);
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(value("1Ki"), 1024);
        assert_eq!(value("1.5Gi"), 1_610_612_736);
        assert_eq!(value("128974848"), 128_974_848);
        assert_eq!(value("129M"), 129_000_000);
        assert_eq!(value("123Mi"), 128_974_848);
        assert_eq!(value("1E"), 1_000_000_000_000_000_000);
        assert_eq!(value("500m"), 1, "fractions of a byte round up");
    }

    #[test]
    fn floats_for_comparisons() {
        assert_eq!(Quantity::parse("128Mi").unwrap().as_f64(), 134_217_728.0);
        assert_eq!(Quantity::parse("500m").unwrap().as_f64(), 0.5);
        assert_eq!(Quantity::parse("2G").unwrap().as_f64(), 2e9);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for text in [
            "", "Mi", "1.2.3", "1Xi", "1e", "--1", "1 Mi", "1e999", "abc", "1Qi", ".",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text:?} accepted");
        }
    }
}
