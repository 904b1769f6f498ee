//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as integers.
//!
//! The scheduler compares requests with allocatable amounts; doing that in exact
//! integer units (milli-CPU, bytes, counts) keeps `100m + 900m == 1` true, which
//! floating point would not guarantee. Values are rounded up, as
//! `resource.Quantity.MilliValue()`/`Value()` do.

/// Parses `quantity` and returns it in units of `1/scale` (`scale` 1000 gives
/// milli-units), rounded up; `None` if it is not a valid quantity.
pub fn parse_scaled(quantity: &str, scale: i128) -> Option<i64> {
    let quantity = quantity.trim();
    let number_end = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(number_end);
    let (mantissa, decimals) = parse_decimal(number)?;
    let (numerator, denominator) = suffix_factor(suffix)?;
    let numerator = mantissa.checked_mul(numerator)?.checked_mul(scale)?;
    let denominator = denominator.checked_mul(10i128.checked_pow(decimals)?)?;
    let value = div_ceil(numerator, denominator);
    Some(value.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
}

/// The value of a CPU quantity in milli-cores.
pub fn milli_value(quantity: &str) -> Option<i64> {
    parse_scaled(quantity, 1000)
}

/// The value of a quantity in whole units (bytes, counts).
pub fn value(quantity: &str) -> Option<i64> {
    parse_scaled(quantity, 1)
}

/// `"-12.50"` -> `(-1250, 2)`.
fn parse_decimal(number: &str) -> Option<(i128, u32)> {
    let (negative, unsigned) = match number.as_bytes().first()? {
        b'-' => (true, &number[1..]),
        b'+' => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let decimals = u32::try_from(fraction.len()).ok()?;
    Some((if negative { -mantissa } else { mantissa }, decimals))
}

/// The factor a suffix stands for, as a fraction.
fn suffix_factor(suffix: &str) -> Option<(i128, i128)> {
    let binary = |power: u32| Some((1i128 << (10 * power), 1));
    let decimal = |exponent: i32| {
        if exponent >= 0 {
            Some((10i128.checked_pow(exponent.unsigned_abs())?, 1))
        } else {
            Some((1, 10i128.checked_pow(exponent.unsigned_abs())?))
        }
    };
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            let exponent: i32 = digits.parse().ok()?;
            if exponent.abs() > 30 {
                return None;
            }
            decimal(exponent)
        }
    }
}

fn div_ceil(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator / denominator;
    if numerator % denominator != 0 && (numerator > 0) == (denominator > 0) {
        quotient + 1
    } else {
        quotient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("250m"), Some(250));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("100u"), Some(1), "rounded up like MilliValue()");
        assert_eq!(milli_value("2e3"), Some(2_000_000));
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("1.5Gi"), Some(1_610_612_736));
        assert_eq!(value("128974848"), Some(128_974_848));
        assert_eq!(value("129M"), Some(129_000_000));
        assert_eq!(value("123Mi"), Some(128_974_848));
        assert_eq!(value("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(value("500m"), Some(1), "fractions of a byte round up");
    }

    #[test]
    fn invalid_quantities_are_rejected() {
        for invalid in ["", "abc", "1Qi", "1.2.3", "--1", "1e", "."] {
            assert_eq!(value(invalid), None, "{invalid:?}");
        }
    }
}
