//! A bounds-checked little-endian reader and checked size arithmetic, shared by every binary
//! loader. Sizes from a file are claims: they are counted in `u64` (so nothing wraps on 32-bit
//! wasm) and checked against the bytes actually left before anything is allocated.

use crate::{Error, Result};

/// Reads a byte slice front to back; every read checks the remaining length first.
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Names the file in errors ("GGUF file", "llama2.c tokenizer").
    file: &'static str,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8], file: &'static str) -> Self {
        Self { buf, pos: 0, file }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self, what: &str, n: u64) -> Error {
        Error::format(format!(
            "{} is truncated: reading {what} at byte {} needs {n} bytes but only {} are left; the \
             download is probably incomplete, fetch it again",
            self.file,
            self.pos,
            self.remaining()
        ))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.truncated(what, n));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item_bytes` each: rejected when that many could not fit
    /// in what is left, so a caller may allocate `count` items.
    pub fn count(&mut self, min_item_bytes: u64, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        self.check_count(n, min_item_bytes, what)
    }

    /// Checks a count read elsewhere (see [`Self::count`]).
    pub fn check_count(&self, n: u64, min_item_bytes: u64, what: &str) -> Result<usize> {
        let need = n.checked_mul(min_item_bytes.max(1));
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(Error::format(format!(
                "{} is corrupt or truncated: {what} claims {n} items at byte {}, more than the {} \
                 bytes left can hold",
                self.file,
                self.pos,
                self.remaining()
            ))),
        }
    }

    /// A u64-length-prefixed UTF-8 string.
    pub fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::format(format!("{}: {what} is not valid UTF-8 (byte {})", self.file, self.pos)))
    }
}

/// `a * b * ...` in u64, or an error naming what overflowed.
pub fn product(factors: &[u64], what: &str) -> Result<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::format(format!("{what} is too large (its size overflows); the file is corrupt")))
}

/// A size from a file as `usize`, or an error on a 32-bit target where it does not fit.
pub fn to_usize(n: u64, what: &str) -> Result<usize> {
    usize::try_from(n).map_err(|_| {
        Error::format(format!("{what} ({n}) does not fit in this machine's memory (32-bit WebAssembly?)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_and_counts_checked_before_allocation() {
        let mut bytes = 7u32.to_le_bytes().to_vec();
        bytes.extend(u64::MAX.to_le_bytes());
        let mut r = ByteReader::new(&bytes, "test file");
        assert_eq!(r.u32("a").unwrap(), 7);
        let err = r.count(1, "entries").unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        assert!(r.u64("b").is_err(), "the failed count consumed its 8 bytes");
        assert!(product(&[u64::MAX, 2], "tensor").is_err());
        assert_eq!(product(&[3, 4], "t").unwrap(), 12);
        // A 32-bit target cannot address 5 GB; a 64-bit one can.
        assert_eq!(to_usize(5 << 30, "x").is_ok(), usize::BITS == 64);
    }
}
