//! An event's bytes written straight into a JS `Uint8Array` (a postcard flavor): a file in an
//! event (an adapter, the zip for TRL, a merged checkpoint of hundreds of MB) is copied once, out
//! of the wasm heap, instead of first into a second buffer inside it, where wasm32's 4 GiB hold
//! the model already.

use js_sys::Uint8Array;
use postcard::ser_flavors::Flavor;
use postcard::{Error, Result};

use crate::worker::protocol::Event;

/// Slices at least this long go to the array at once; shorter writes gather in a buffer first
/// (each copy into JS is a call across the boundary).
const DIRECT: usize = 4096;

/// `ev` as postcard's bytes ([`Event::to_bytes`]), in a new `Uint8Array` of exactly their size.
pub fn event_bytes(ev: &Event) -> Result<Uint8Array> {
    let size = postcard::experimental::serialized_size(ev)?;
    let len = u32::try_from(size).map_err(|_| Error::SerializeBufferFull)?;
    postcard::serialize_with_flavor(ev, JsBytes { array: Uint8Array::new_with_length(len), at: 0, small: Vec::with_capacity(DIRECT) })
}

struct JsBytes {
    array: Uint8Array,
    /// Bytes written to `array` so far.
    at: u32,
    small: Vec<u8>,
}

impl JsBytes {
    /// Copies what gathered in `small` to the array.
    fn flush(&mut self) -> Result<()> {
        write(&self.array, &mut self.at, &self.small)?;
        self.small.clear();
        Ok(())
    }
}

/// Copies `data` into `array` at `at`, and moves `at` past it; refuses to write past the end.
fn write(array: &Uint8Array, at: &mut u32, data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| Error::SerializeBufferFull)?;
    let end = at.checked_add(len).filter(|&end| end <= array.length()).ok_or(Error::SerializeBufferFull)?;
    array.subarray(*at, end).copy_from(data);
    *at = end;
    Ok(())
}

impl Flavor for JsBytes {
    type Output = Uint8Array;

    fn try_push(&mut self, byte: u8) -> Result<()> {
        if self.small.len() == DIRECT {
            self.flush()?;
        }
        self.small.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> Result<()> {
        if data.len() >= DIRECT {
            self.flush()?;
            return write(&self.array, &mut self.at, data);
        }
        if self.small.len() + data.len() > DIRECT {
            self.flush()?;
        }
        self.small.extend_from_slice(data);
        Ok(())
    }

    fn finalize(mut self) -> Result<Uint8Array> {
        self.flush()?;
        if self.at != self.array.length() {
            return Err(Error::SerializeBufferFull);
        }
        Ok(self.array)
    }
}
