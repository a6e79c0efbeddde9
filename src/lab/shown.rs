//! How the lab's measured numbers read, on the page and in the terminal alike.

/// `value` at `places` decimal places, with no minus sign on a zero: GRPO's loss starts at about
/// -1e-8, which `{:.4}` alone prints as "-0.0000".
pub fn fixed(value: f64, places: usize) -> String {
    let s = format!("{value:.places$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_string(),
        _ => s,
    }
}

/// A share (0 to 1) as a whole percentage.
pub fn percent(share: f64) -> String {
    format!("{:.0}%", 100.0 * share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_number_that_rounds_to_zero_reads_as_zero() {
        assert_eq!(format!("{:.4}", -1e-8), "-0.0000", "the case this exists for");
        assert_eq!(fixed(-1e-8, 4), "0.0000");
        assert_eq!(fixed(-0.0, 3), "0.000");
        assert_eq!(fixed(-0.00004, 4), "0.0000");
        assert_eq!(fixed(-4e-7, 0), "0");
        // What does not round to zero keeps its sign, and the rest reads as `format!` has it.
        assert_eq!(fixed(-0.00006, 4), "-0.0001");
        assert_eq!(fixed(-2.5, 1), "-2.5");
        assert_eq!(fixed(0.69314718, 4), "0.6931");
        assert_eq!(fixed(f64::NEG_INFINITY, 4), "-inf");
        assert_eq!(fixed(f64::NAN, 4), "NaN");
        assert_eq!(percent(0.875), "88%");
    }
}
