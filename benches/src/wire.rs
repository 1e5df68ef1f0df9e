//! `MsgWriter`: appends message text into a caller-owned, reused byte slice
//! (a send-batch slot) without allocating. Integers are formatted by hand.
//! Overflow is sticky and reported once, by `finish`.

/// The message did not fit in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTooLarge {
    /// Bytes the buffer holds.
    pub capacity: usize,
}

impl std::fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message larger than its {}-byte buffer", self.capacity)
    }
}

impl std::error::Error for MessageTooLarge {}

/// Appends bytes to a fixed slice.
pub struct MsgWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'a> MsgWriter<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> MsgWriter<'a> {
        MsgWriter {
            buf,
            len: 0,
            overflowed: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Append bytes.
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        let end = self.len + data.len();
        if end > self.buf.len() {
            self.overflowed = true;
        } else {
            self.buf[self.len..end].copy_from_slice(data);
            self.len = end;
        }
        self
    }

    /// Append text.
    pub fn str(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    /// Decimal digits of `value`.
    pub fn dec(&mut self, value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut pos = digits.len();
        let mut rest = value;
        loop {
            pos -= 1;
            digits[pos] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.bytes(&digits[pos..])
    }

    /// Lower-case hexadecimal digits of `value`, no prefix.
    pub fn hex(&mut self, value: u64) -> &mut Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let mut pos = digits.len();
        let mut rest = value;
        loop {
            pos -= 1;
            digits[pos] = DIGITS[(rest & 0xf) as usize];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        self.bytes(&digits[pos..])
    }

    /// Length written, or the overflow.
    pub fn finish(self) -> Result<usize, MessageTooLarge> {
        if self.overflowed {
            Err(MessageTooLarge {
                capacity: self.buf.len(),
            })
        } else {
            Ok(self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_numbers_and_text() {
        let mut buf = [0u8; 64];
        let mut w = MsgWriter::new(&mut buf);
        w.str("a=").dec(0).str(" b=").dec(18_446_744_073_709_551_615);
        w.str(" h=").hex(0xdead_beef).str(" z=").hex(0);
        let len = w.finish().unwrap();
        assert_eq!(&buf[..len], b"a=0 b=18446744073709551615 h=deadbeef z=0".as_slice());
    }

    #[test]
    fn overflow_is_reported() {
        let mut buf = [0u8; 4];
        let mut w = MsgWriter::new(&mut buf);
        w.str("hello");
        assert_eq!(w.finish(), Err(MessageTooLarge { capacity: 4 }));
    }
}
