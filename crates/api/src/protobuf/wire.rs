//! The protobuf wire format, read field by field with every length checked
//! against the bytes actually there: request bodies come from the network.

use super::DecodeError;

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WireValue<'a> {
    /// Wire type 0: ints, bools.
    Varint(u64),
    /// Wire type 1: doubles.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, messages, packed repeated scalars.
    Bytes(&'a [u8]),
    /// Wire type 5: floats.
    Fixed32(u32),
}

/// Iterates over the `(field number, value)` pairs of one message. After an
/// error it yields nothing more.
pub(super) struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub(super) fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    fn next_field(&mut self) -> Result<(u32, WireValue<'a>), DecodeError> {
        let key = read_varint(&mut self.rest)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n != 0)
            .ok_or(DecodeError::InvalidFieldNumber(key >> 3))?;
        let value = match key & 0b111 {
            0 => WireValue::Varint(read_varint(&mut self.rest)?),
            1 => WireValue::Fixed64(u64::from_le_bytes(take_array(&mut self.rest)?)),
            2 => {
                let len = usize::try_from(read_varint(&mut self.rest)?)
                    .map_err(|_| DecodeError::Truncated)?;
                WireValue::Bytes(take(&mut self.rest, len)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(take_array(&mut self.rest)?)),
            // 3 and 4 are proto2 groups, which Kubernetes never uses; 6 and 7 do not exist.
            other => return Err(DecodeError::UnsupportedWireType(other as u8)),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for FieldReader<'a> {
    type Item = Result<(u32, WireValue<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.next_field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// Reads a base-128 varint of at most 10 bytes (64 bits).
pub(super) fn read_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for index in 0..10 {
        let (&byte, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
        *input = rest;
        if index == 9 && byte > 1 {
            return Err(DecodeError::VarintOverflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintOverflow)
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (taken, rest) = input.split_at(len);
    *input = rest;
    Ok(taken)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let bytes = take(input, N)?;
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, DecodeError> {
        FieldReader::new(bytes).collect()
    }

    #[test]
    fn reads_each_wire_type() {
        let bytes = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 2, b'h', b'i', // 3: "hi"
            0x25, 2, 0, 0, 0, // 4: fixed32 2
        ];
        assert_eq!(
            fields(&bytes).expect("valid message"),
            vec![
                (1, WireValue::Varint(150)),
                (2, WireValue::Fixed64(1)),
                (3, WireValue::Bytes(b"hi")),
                (4, WireValue::Fixed32(2)),
            ]
        );
    }

    #[test]
    fn negative_int32_is_a_ten_byte_varint() {
        let mut bytes: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&mut bytes).map(|v| v as i64), Ok(-1));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(fields(&[0x0a, 5, b'a']), Err(DecodeError::Truncated));
        assert_eq!(fields(&[0x08]), Err(DecodeError::Truncated));
        assert_eq!(fields(&[0x08, 0x80]), Err(DecodeError::Truncated));
        assert_eq!(fields(&[0x0b]), Err(DecodeError::UnsupportedWireType(3)));
        assert_eq!(
            fields(&[0x00, 0x01]),
            Err(DecodeError::InvalidFieldNumber(0))
        );
        assert_eq!(fields(&[0x09, 1, 2]), Err(DecodeError::Truncated));
        assert_eq!(
            fields(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(DecodeError::VarintOverflow)
        );
        let huge_length = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(fields(&huge_length), Err(DecodeError::Truncated));
    }
}
