//! A function's name as the keep list holds it: its symbol without what changes from build to
//! build. The names wasm-bindgen leaves are demangled: legacy symbols end in `::h<16 hex digits>`,
//! a hash of the crate's metadata and the generic arguments; v0 symbols (std's, and the WebGPU
//! worker's, built with `-C symbol-mangling-version=v0`) spell the generic arguments out and carry
//! crate disambiguators, `core[<hex digits>]::`; LLVM adds `.llvm.<digits>` to a copy it made local, and the name
//! section `[<n>]` to the n-th copy of a name. All of these are dropped (and a still-mangled
//! name's `17h<hash>E`), so a list stays valid across compiler and dependency updates, and every
//! instantiation of a generic function is kept or split together.

/// `name` without its hashes, disambiguators and copy numbers.
pub fn stable(name: &str) -> String {
    let mut name = name.split(".llvm.").next().unwrap_or(name);
    if let Some(open) = name.strip_suffix(']').and_then(|n| n.rfind('[')) {
        if name[open + 1..name.len() - 1].bytes().all(|c| c.is_ascii_digit()) {
            name = &name[..open];
        }
    }
    for (prefix, suffix) in [("::h", ""), ("17h", "E")] {
        let len = prefix.len() + 16 + suffix.len();
        if let Some(at) = name.len().checked_sub(len) {
            let tail = &name.as_bytes()[at..];
            if tail.starts_with(prefix.as_bytes()) && tail.ends_with(suffix.as_bytes()) && hex(&tail[prefix.len()..][..16]) {
                name = &name[..at];
                break;
            }
        }
    }
    // `crate[<hex digits>]::` anywhere: v0 crate disambiguators (std's names, and every name of a
    // build with `-C symbol-mangling-version=v0`).
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let b = rest.as_bytes();
        let close = rest[open..].find("]::").map(|c| open + c);
        let skip = open > 0
            && (b[open - 1].is_ascii_alphanumeric() || b[open - 1] == b'_')
            && close.is_some_and(|c| (2..=17).contains(&(c - open)) && b[open + 1..c].iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        out.push_str(&rest[..open]);
        match (skip, close) {
            (true, Some(c)) => rest = &rest[c + 1..],
            _ => {
                out.push('[');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How the keep list holds a name: 16 hex digits of FNV-1a (64 bits) of its stable form, so the list
/// is a tenth of the names' size (v0 names spell out every type argument).
pub fn key(name: &str) -> String {
    hash(&stable(name))
}

/// FNV-1a (64 bits) of a stable name, as 16 hex digits.
pub fn hash(stable: &str) -> String {
    let h = stable.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// 16 lowercase hex digits.
fn hex(b: &[u8]) -> bool {
    b.len() == 16 && b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

#[cfg(test)]
mod tests {
    use super::{key, stable};

    #[test]
    fn keys_are_fnv1a_of_the_stable_name() {
        // FNV-1a's published test vectors: "" and "a".
        assert_eq!(key(""), "cbf29ce484222325");
        assert_eq!(key("a"), "af63dc4c8601ec8c");
        assert_eq!(key("f::h0123456789abcdef[2]"), key("f"));
    }

    #[test]
    fn drops_hashes_disambiguators_and_copy_numbers() {
        let a = "burn_flex::ops::binary::binary_op::hdfa5e6b1c2d3a4f5";
        let b = "burn_flex::ops::binary::binary_op::h0123456789abcdef[3]";
        assert_eq!(stable(a), "burn_flex::ops::binary::binary_op");
        assert_eq!(stable(a), stable(b));
        assert_eq!(
            stable("<std[1a2b3c4d5e6f7a8b]::hash::random::DefaultHasher as core[c5930c85a12de822]::hash::Hasher>::write[2]"),
            "<std::hash::random::DefaultHasher as core::hash::Hasher>::write"
        );
        assert_eq!(stable("_ZN9burn_flex3ops6binary9binary_op17hdfa5e6b1c2d3a4f5E.llvm.5156284234821628759"), "_ZN9burn_flex3ops6binary9binary_op");
        // Not hashes: unchanged.
        assert_eq!(stable("__wbindgen_malloc"), "__wbindgen_malloc");
        assert_eq!(stable("f::hzzzzzzzzzzzzzzzz"), "f::hzzzzzzzzzzzzzzzz");
        assert_eq!(stable("Vec<[u8; 4]>::push"), "Vec<[u8; 4]>::push");
        assert_eq!(stable("x[12a]"), "x[12a]");
        assert_eq!(stable("<[f32] as a[1f]::B>::c"), "<[f32] as a::B>::c");
        assert_eq!(
            stable("burn_flex[e0a1b2c3d4e5f60]::ops::sum::<f32>[3]"),
            "burn_flex::ops::sum::<f32>"
        );
    }
}
