//! The few pieces of the protobuf wire format the request needs, written straight
//! into one `Vec<u8>`: varints, fixed64, length-delimited fields, nested messages
//! and OTLP's `KeyValue { key, value: AnyValue { oneof } }`. Every field number the
//! request uses is below 16, so a field's key is one byte ([`key`]).
//!
//! Lengths are exact (canonical varints): a nested message's length is written over
//! a slot of a guessed width once its content is written ([`open`], [`close`]), its
//! content moved in the rare case the guess was wrong; an attribute's lengths are
//! computed before it is written.

use std::fmt;

/// Wire type of varints (`int32`, `int64`, `uint32`, `bool`).
pub const VARINT: u8 = 0;
/// Wire type of `fixed64`.
pub const I64: u8 = 1;
/// Wire type of strings, bytes and messages.
pub const LEN: u8 = 2;

/// The one-byte key of field `field` (below 16) of wire type `wire_type`.
pub const fn key(field: u8, wire_type: u8) -> u8 {
    assert!(field > 0 && field < 16, "one-byte keys only");
    (field << 3) | wire_type
}

/// Bytes of `v` as a varint (as prost's `encoded_len_varint`).
#[inline]
pub const fn varint_len(v: u64) -> usize {
    // 1 + (index of the highest bit set) / 7, and 1 for 0.
    ((((v | 1).leading_zeros() ^ 63) * 9 + 73) / 64) as usize
}

/// Appends `v` as a varint.
#[inline]
pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a length-delimited field (a string or bytes).
#[inline]
pub fn bytes(buf: &mut Vec<u8>, key: u8, value: &[u8]) {
    buf.push(key);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// Appends a `fixed64` field.
#[inline]
pub fn fixed64(buf: &mut Vec<u8>, key: u8, value: u64) {
    buf.push(key);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A nested message being written: where its length goes.
#[must_use = "a nested message is closed to write its length"]
pub struct Open {
    /// Offset of the length's slot.
    slot: usize,
    /// Bytes reserved for the length.
    width: usize,
}

/// Starts the nested message of field `key`, reserving `width` bytes (1 to 10) for
/// its length: the length's varint width if the guess is right.
#[inline]
pub fn open(buf: &mut Vec<u8>, key: u8, width: usize) -> Open {
    buf.push(key);
    let slot = buf.len();
    let width = width.clamp(1, 10);
    buf.extend_from_slice(&[0; 10][..width]);
    Open { slot, width }
}

/// Ends the nested message `open`: its length written over the slot, its content
/// moved first if the length needs another width than the one reserved.
#[inline]
pub fn close(buf: &mut Vec<u8>, open: Open) {
    let start = open.slot + open.width;
    let end = buf.len();
    let len = end - start;
    let width = varint_len(len as u64);
    if width != open.width {
        if width > open.width {
            buf.resize(end + width - open.width, 0);
        }
        buf.copy_within(start..end, open.slot + width);
        buf.truncate(open.slot + width + len);
    }
    let mut v = len as u64;
    for slot in &mut buf[open.slot..open.slot + width] {
        *slot = (v as u8) | 0x80;
        v >>= 7;
    }
    // The last byte of the varint has no continuation bit.
    if let Some(last) = buf.get_mut(open.slot + width - 1) {
        *last &= 0x7f;
    }
}

/// An attribute's value: `AnyValue`'s `string_value`, `int_value` or `bool_value`.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    /// `string_value` (field 1).
    Str(&'a [u8]),
    /// `int_value` (field 3).
    Int(i64),
    /// `bool_value` (field 2).
    Bool(bool),
}

/// Appends one `KeyValue` of the repeated field `field_key`: `key`, and `value` as
/// an `AnyValue` (its oneof always set, so a 0, `false` or `""` is still sent).
///
/// Inlined at every call, so that a constant key's lengths and copy are constants.
#[inline(always)]
pub fn attribute(buf: &mut Vec<u8>, field_key: u8, key: &str, value: Value<'_>) {
    match value {
        Value::Str(s) => {
            let any_len = 1 + varint_len(s.len() as u64) + s.len();
            kv_head(buf, field_key, key, any_len);
            bytes(buf, self::key(1, LEN), s);
        }
        Value::Bool(b) => {
            kv_head(buf, field_key, key, 2);
            buf.extend_from_slice(&[self::key(2, VARINT), u8::from(b)]);
        }
        Value::Int(v) => {
            // int64: a negative value is its two's complement, 10 bytes.
            let v = v as u64;
            kv_head(buf, field_key, key, 1 + varint_len(v));
            buf.push(self::key(3, VARINT));
            varint(buf, v);
        }
    }
}

/// A `KeyValue`'s key, length, key and `AnyValue`'s key and length: all of it but
/// the value's own field.
#[inline(always)]
fn kv_head(buf: &mut Vec<u8>, field_key: u8, key: &str, any_len: usize) {
    let kv_len =
        1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
    buf.push(field_key);
    varint(buf, kv_len as u64);
    bytes(buf, self::key(1, LEN), key.as_bytes());
    buf.push(self::key(2, LEN));
    varint(buf, any_len as u64);
}

/// Appends `v` in decimal.
#[inline]
pub fn decimal(buf: &mut impl Extend<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend(digits[i..].iter().copied());
}

/// Text formatted on the stack: at most `N` bytes; longer text marks it overflowed
/// (its caller then formats on the heap).
pub struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> StackText<N> {
    /// Empty.
    #[inline]
    pub fn new() -> Self {
        StackText {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }

    /// The text, or `None` if it did not fit.
    #[inline]
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.overflowed).then(|| &self.buf[..self.len])
    }
}

impl<const N: usize> Extend<u8> for StackText<N> {
    #[inline]
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for b in iter {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = b;
                    self.len += 1;
                }
                None => self.overflowed = true,
            }
        }
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(slot) => {
                slot.copy_from_slice(s.as_bytes());
                self.len += s.len();
                Ok(())
            }
            None => {
                self.overflowed = true;
                Err(fmt::Error)
            }
        }
    }
}

/// A `Vec<u8>` as a `fmt::Write` target (it never fails).
pub struct VecText<'a>(pub &'a mut Vec<u8>);

impl fmt::Write for VecText<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_their_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            (1 << 21) - 1,
            1 << 21,
            u64::from(u32::MAX),
            i64::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            let mut by_prost = Vec::new();
            prost::encoding::encode_varint(v, &mut by_prost);
            assert_eq!(buf, by_prost, "{v}");
        }
    }

    #[test]
    fn a_nested_message_gets_its_exact_length_whatever_the_guess() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 3_000_000] {
            for guess in 1..=4 {
                let mut buf = vec![0xee];
                let o = open(&mut buf, key(2, LEN), guess);
                buf.extend((0..len).map(|i| i as u8));
                close(&mut buf, o);
                let mut expected = vec![0xee, key(2, LEN)];
                varint(&mut expected, len as u64);
                expected.extend((0..len).map(|i| i as u8));
                assert!(buf == expected, "length {len}, guess {guess}");
            }
        }
    }

    #[test]
    fn decimal_and_stack_text() {
        let mut t = StackText::<24>::new();
        decimal(&mut t, 0);
        t.extend(*b" ");
        decimal(&mut t, u64::MAX);
        assert_eq!(t.bytes(), Some(&b"0 18446744073709551615"[..]));
        let mut small = StackText::<4>::new();
        decimal(&mut small, 12_345);
        assert_eq!(small.bytes(), None);
        let mut small = StackText::<4>::new();
        assert!(fmt::Write::write_str(&mut small, "12345").is_err());
        assert_eq!(small.bytes(), None);
    }
}
