//! SPDY/3.1 framing, as far as `kubectl port-forward` uses it: the frames of the
//! draft-3 spec (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
//! WINDOW_UPDATE and DATA) and the zlib compression of header blocks, primed with the
//! spec's dictionary and shared by every block one side sends.
//!
//! kubectl's SPDY stack (`moby/spdystream`) writes frames field by field, so frames
//! arrive split or glued across reads and WebSocket messages; [`FrameDecoder`] is a
//! [`tokio_util::codec::Decoder`] over the byte stream for that reason. No maintained
//! Rust crate implements SPDY any more, hence this module.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_util::codec::{Decoder, Encoder};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The flag that ends the sender's half of a stream (SYN_STREAM, SYN_REPLY, HEADERS, DATA).
pub const FLAG_FIN: u8 = 0x01;
/// The SYN_STREAM flag for a stream the receiver may not send on.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// RST_STREAM status: the frame broke the protocol.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream was refused before any processing.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is no longer needed.
pub const RST_CANCEL: u32 = 5;
/// The largest payload a frame's 24-bit length can carry.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Decompressed header blocks larger than this are refused, so a small compressed
/// block cannot make the server allocate without bound.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Control bit, version, type (or stream ID), flags and length.
const FRAME_HEADER_LEN: usize = 8;
const CONTROL_BIT: u8 = 0x80;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Header names (lowercase, as SPDY/3 requires) and values, in block order; a value
/// holding several NUL-separated values appears once per value.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Odd for streams the client opens.
        stream_id: u32,
        /// The stream this one belongs to (server push), 0 for none.
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// [`FLAG_FIN`] and [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// The replier has nothing to send on it.
        fin: bool,
        /// Reply headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why, one of the `RST_*` codes.
        status: u32,
    },
    /// Connection parameters, as (flags, ID, value) triples.
    Settings(Vec<(u8, u32, u32)>),
    /// A liveness check the receiver echoes unless it sent it (odd IDs are the client's).
    Ping(u32),
    /// The sender opens no more streams and will process none after `last_good_stream_id`.
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// Also ends the sender's half.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit (stream 0: the whole session).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Bytes the sender may send beyond its window.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream_id: u32,
        /// The sender's last frame on this stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this codec does not know; the spec says to ignore it.
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

/// A byte stream that is not valid SPDY/3.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A frame whose payload is too short or inconsistent for its type.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// A header block that does not inflate or does not parse.
    #[error("invalid header block: {0}")]
    HeaderBlock(String),
    /// A frame to send that does not fit a 24-bit length.
    #[error("a {0}-byte frame payload exceeds SPDY's 16 MiB limit")]
    TooLarge(usize),
    /// The underlying connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads frames, inflating header blocks with the peer's compression stream.
pub struct FrameDecoder {
    inflater: Decompress,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder {
            inflater: Decompress::new(true),
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if src.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let length = (usize::from(src[5]) << 16) | (usize::from(src[6]) << 8) | usize::from(src[7]);
        if src.len() < FRAME_HEADER_LEN + length {
            src.reserve(FRAME_HEADER_LEN + length - src.len());
            return Ok(None);
        }
        let head = src.split_to(FRAME_HEADER_LEN);
        let payload = src.split_to(length).freeze();
        let flags = head[4];
        if head[0] & CONTROL_BIT == 0 {
            return Ok(Some(Frame::Data {
                stream_id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0] & !CONTROL_BIT, head[1]]);
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let frame_type = u16::from_be_bytes([head[2], head[3]]);
        self.control_frame(frame_type, flags, payload).map(Some)
    }
}

impl FrameDecoder {
    fn control_frame(
        &mut self,
        frame_type: u16,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<Frame, SpdyError> {
        let fin = flags & FLAG_FIN != 0;
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                let [stream_id, associated_to] = words(&mut payload, "SYN_STREAM")?;
                if payload.remaining() < 2 {
                    return Err(SpdyError::Malformed("SYN_STREAM"));
                }
                let priority = payload.get_u8() >> 5;
                payload.advance(1); // the credential slot, unused since SPDY/3.1
                Frame::SynStream {
                    stream_id: stream_id & STREAM_ID_MASK,
                    associated_to: associated_to & STREAM_ID_MASK,
                    priority,
                    flags,
                    headers: self.headers(&payload)?,
                }
            }
            TYPE_SYN_REPLY => {
                let [stream_id] = words(&mut payload, "SYN_REPLY")?;
                Frame::SynReply {
                    stream_id: stream_id & STREAM_ID_MASK,
                    fin,
                    headers: self.headers(&payload)?,
                }
            }
            TYPE_HEADERS => {
                let [stream_id] = words(&mut payload, "HEADERS")?;
                Frame::Headers {
                    stream_id: stream_id & STREAM_ID_MASK,
                    fin,
                    headers: self.headers(&payload)?,
                }
            }
            TYPE_RST_STREAM => {
                let [stream_id, status] = words(&mut payload, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: stream_id & STREAM_ID_MASK,
                    status,
                }
            }
            TYPE_SETTINGS => {
                let [count] = words(&mut payload, "SETTINGS")?;
                if !payload.remaining().is_multiple_of(8)
                    || u32::try_from(payload.remaining() / 8) != Ok(count)
                {
                    return Err(SpdyError::Malformed("SETTINGS"));
                }
                let mut entries = Vec::new();
                while payload.has_remaining() {
                    let [flags_and_id, value] = words(&mut payload, "SETTINGS")?;
                    let flags = flags_and_id.to_be_bytes()[0];
                    entries.push((flags, flags_and_id & 0x00ff_ffff, value));
                }
                Frame::Settings(entries)
            }
            TYPE_PING => {
                let [id] = words(&mut payload, "PING")?;
                Frame::Ping(id)
            }
            TYPE_GOAWAY => {
                let [last_good_stream_id, status] = words(&mut payload, "GOAWAY")?;
                Frame::GoAway {
                    last_good_stream_id: last_good_stream_id & STREAM_ID_MASK,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                let [stream_id, delta] = words(&mut payload, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: stream_id & STREAM_ID_MASK,
                    delta: delta & STREAM_ID_MASK,
                }
            }
            frame_type => Frame::Unknown { frame_type },
        };
        Ok(frame)
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        parse_header_block(&inflate(&mut self.inflater, compressed)?)
    }
}

/// Takes `N` big-endian 32-bit words off the front of a payload.
fn words<const N: usize>(payload: &mut Bytes, frame: &'static str) -> Result<[u32; N], SpdyError> {
    if payload.remaining() < 4 * N {
        return Err(SpdyError::Malformed(frame));
    }
    Ok(std::array::from_fn(|_| payload.get_u32()))
}

/// Inflates one header block: the peer sync-flushes after each, so all of its bytes
/// come out now. The stream asks for the dictionary at its first block.
fn inflate(inflater: &mut Decompress, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
    let error = |e: flate2::DecompressError| SpdyError::HeaderBlock(e.to_string());
    let mut output = Vec::with_capacity(compressed.len().saturating_mul(4).max(256));
    let mut input = compressed;
    loop {
        let (consumed_before, produced_before) = (inflater.total_in(), output.len());
        let status = inflater.decompress_vec(input, &mut output, FlushDecompress::Sync);
        let consumed = usize::try_from(inflater.total_in() - consumed_before)
            .map_err(|_| SpdyError::HeaderBlock("overflow".into()))?;
        input = &input[consumed..];
        match status {
            Ok(Status::StreamEnd) => break,
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                inflater.set_dictionary(HEADER_DICTIONARY).map_err(error)?;
                continue;
            }
            Err(e) => return Err(error(e)),
        }
        if input.is_empty() && output.len() < output.capacity() {
            break;
        }
        if output.len() > MAX_HEADER_BLOCK {
            return Err(SpdyError::HeaderBlock(format!(
                "larger than {MAX_HEADER_BLOCK} bytes"
            )));
        }
        if consumed == 0 && output.len() == produced_before && output.len() < output.capacity() {
            return Err(SpdyError::HeaderBlock("truncated".into()));
        }
        output.reserve(output.capacity().max(256));
    }
    Ok(output)
}

/// Reads an inflated block: a count, then length-prefixed names and values.
fn parse_header_block(mut block: &[u8]) -> Result<Headers, SpdyError> {
    let malformed = || SpdyError::HeaderBlock("truncated name/value pairs".into());
    let field = |block: &mut &[u8]| -> Result<String, SpdyError> {
        if block.remaining() < 4 {
            return Err(malformed());
        }
        let length = usize::try_from(block.get_u32()).map_err(|_| malformed())?;
        if block.remaining() < length {
            return Err(malformed());
        }
        let (text, rest) = block.split_at(length);
        *block = rest;
        String::from_utf8(text.to_vec())
            .map_err(|_| SpdyError::HeaderBlock("a name or value is not UTF-8".into()))
    };
    if block.remaining() < 4 {
        return Err(malformed());
    }
    let count = block.get_u32();
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = field(&mut block)?.to_ascii_lowercase();
        let value = field(&mut block)?;
        headers.extend(value.split('\0').map(|v| (name.clone(), v.to_owned())));
    }
    Ok(headers)
}

/// Writes frames, deflating header blocks with this side's compression stream.
pub struct FrameEncoder {
    deflater: Compress,
    primed: bool,
}

impl Default for FrameEncoder {
    fn default() -> FrameEncoder {
        FrameEncoder {
            deflater: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Encoder<Frame> for FrameEncoder {
    type Error = SpdyError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let flags = if fin { FLAG_FIN } else { 0 };
                put_frame_header(dst, stream_id & STREAM_ID_MASK, flags, data.len())?;
                dst.extend_from_slice(&data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = self.header_block(&headers)?;
                put_control_header(dst, TYPE_SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(associated_to & STREAM_ID_MASK);
                dst.put_u8(priority << 5);
                dst.put_u8(0);
                dst.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                self.stream_headers(dst, TYPE_SYN_REPLY, stream_id, fin, &headers)?;
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                self.stream_headers(dst, TYPE_HEADERS, stream_id, fin, &headers)?;
            }
            Frame::RstStream { stream_id, status } => {
                put_control_words(dst, TYPE_RST_STREAM, &[stream_id & STREAM_ID_MASK, status])?;
            }
            Frame::Settings(entries) => {
                put_control_header(dst, TYPE_SETTINGS, 0, 4 + 8 * entries.len())?;
                dst.put_u32(
                    u32::try_from(entries.len()).map_err(|_| SpdyError::TooLarge(entries.len()))?,
                );
                for (flags, id, value) in entries {
                    dst.put_u32((u32::from(flags) << 24) | (id & 0x00ff_ffff));
                    dst.put_u32(value);
                }
            }
            Frame::Ping(id) => put_control_words(dst, TYPE_PING, &[id])?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control_words(
                    dst,
                    TYPE_GOAWAY,
                    &[last_good_stream_id & STREAM_ID_MASK, status],
                )?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control_words(
                    dst,
                    TYPE_WINDOW_UPDATE,
                    &[stream_id & STREAM_ID_MASK, delta & STREAM_ID_MASK],
                )?;
            }
            Frame::Unknown { frame_type } => put_control_header(dst, frame_type, 0, 0)?,
        }
        Ok(())
    }
}

impl FrameEncoder {
    /// SYN_REPLY and HEADERS: a stream ID, then a header block.
    fn stream_headers(
        &mut self,
        dst: &mut BytesMut,
        frame_type: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), SpdyError> {
        let block = self.header_block(headers)?;
        put_control_header(
            dst,
            frame_type,
            if fin { FLAG_FIN } else { 0 },
            4 + block.len(),
        )?;
        dst.put_u32(stream_id & STREAM_ID_MASK);
        dst.extend_from_slice(&block);
        Ok(())
    }

    /// Serializes and deflates a header block, sync-flushed so the peer can inflate
    /// it without waiting for later blocks.
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let error = |e: flate2::CompressError| SpdyError::HeaderBlock(e.to_string());
        if !self.primed {
            self.deflater
                .set_dictionary(HEADER_DICTIONARY)
                .map_err(error)?;
            self.primed = true;
        }
        let mut plain = BytesMut::new();
        let too_large = |n: usize| SpdyError::TooLarge(n);
        plain.put_u32(u32::try_from(headers.len()).map_err(|_| too_large(headers.len()))?);
        for (name, value) in headers {
            for field in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                plain.put_u32(u32::try_from(field.len()).map_err(|_| too_large(field.len()))?);
                plain.extend_from_slice(field);
            }
        }
        let mut compressed = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            let before = self.deflater.total_in();
            self.deflater
                .compress_vec(input, &mut compressed, FlushCompress::Sync)
                .map_err(error)?;
            let consumed = usize::try_from(self.deflater.total_in() - before)
                .map_err(|_| too_large(input.len()))?;
            input = &input[consumed..];
            // With a sync flush, spare output space means the flush is complete.
            if input.is_empty() && compressed.len() < compressed.capacity() {
                return Ok(compressed);
            }
            compressed.reserve(compressed.capacity().max(64));
        }
    }
}

fn put_frame_header(
    dst: &mut BytesMut,
    first_word: u32,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    if length > MAX_PAYLOAD {
        return Err(SpdyError::TooLarge(length));
    }
    dst.reserve(FRAME_HEADER_LEN + length);
    dst.put_u32(first_word);
    dst.put_u8(flags);
    dst.put_uint(length as u64, 3);
    Ok(())
}

fn put_control_header(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    let first_word =
        (u32::from(CONTROL_BIT) << 24) | (u32::from(VERSION) << 16) | u32::from(frame_type);
    put_frame_header(dst, first_word, flags, length)
}

fn put_control_words(dst: &mut BytesMut, frame_type: u16, words: &[u32]) -> Result<(), SpdyError> {
    put_control_header(dst, frame_type, 0, 4 * words.len())?;
    for word in words {
        dst.put_u32(*word);
    }
    Ok(())
}

/// The zlib dictionary of SPDY/3 (draft 3, section 2.6.10.1): both ends prime their
/// header compression streams with it.
pub(crate) const HEADER_DICTIONARY: &[u8; 1423] = b"\
    \x00\x00\x00\x07options\
    \x00\x00\x00\x04head\
    \x00\x00\x00\x04post\
    \x00\x00\x00\x03put\
    \x00\x00\x00\x06delete\
    \x00\x00\x00\x05trace\
    \x00\x00\x00\x06accept\
    \x00\x00\x00\x0eaccept-charset\
    \x00\x00\x00\x0faccept-encoding\
    \x00\x00\x00\x0faccept-language\
    \x00\x00\x00\x0daccept-ranges\
    \x00\x00\x00\x03age\
    \x00\x00\x00\x05allow\
    \x00\x00\x00\x0dauthorization\
    \x00\x00\x00\x0dcache-control\
    \x00\x00\x00\x0aconnection\
    \x00\x00\x00\x0ccontent-base\
    \x00\x00\x00\x10content-encoding\
    \x00\x00\x00\x10content-language\
    \x00\x00\x00\x0econtent-length\
    \x00\x00\x00\x10content-location\
    \x00\x00\x00\x0bcontent-md5\
    \x00\x00\x00\x0dcontent-range\
    \x00\x00\x00\x0ccontent-type\
    \x00\x00\x00\x04date\
    \x00\x00\x00\x04etag\
    \x00\x00\x00\x06expect\
    \x00\x00\x00\x07expires\
    \x00\x00\x00\x04from\
    \x00\x00\x00\x04host\
    \x00\x00\x00\x08if-match\
    \x00\x00\x00\x11if-modified-since\
    \x00\x00\x00\x0dif-none-match\
    \x00\x00\x00\x08if-range\
    \x00\x00\x00\x13if-unmodified-since\
    \x00\x00\x00\x0dlast-modified\
    \x00\x00\x00\x08location\
    \x00\x00\x00\x0cmax-forwards\
    \x00\x00\x00\x06pragma\
    \x00\x00\x00\x12proxy-authenticate\
    \x00\x00\x00\x13proxy-authorization\
    \x00\x00\x00\x05range\
    \x00\x00\x00\x07referer\
    \x00\x00\x00\x0bretry-after\
    \x00\x00\x00\x06server\
    \x00\x00\x00\x02te\
    \x00\x00\x00\x07trailer\
    \x00\x00\x00\x11transfer-encoding\
    \x00\x00\x00\x07upgrade\
    \x00\x00\x00\x0auser-agent\
    \x00\x00\x00\x04vary\
    \x00\x00\x00\x03via\
    \x00\x00\x00\x07warning\
    \x00\x00\x00\x10www-authenticate\
    \x00\x00\x00\x06method\
    \x00\x00\x00\x03get\
    \x00\x00\x00\x06status\
    \x00\x00\x00\x06200 OK\
    \x00\x00\x00\x07version\
    \x00\x00\x00\x08HTTP/1.1\
    \x00\x00\x00\x03url\
    \x00\x00\x00\x06public\
    \x00\x00\x00\x0aset-cookie\
    \x00\x00\x00\x0akeep-alive\
    \x00\x00\x00\x06origin\
    10010120120220520630030230330430530630740240540640740840941041141241341441541641\
    7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently40\
    0 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
    501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O\
    ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag\
    e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/\
    javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1\
    ,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SYN_STREAMs as C zlib writes them (level 9, SPDY dictionary, sync flush per
    /// block, one stream for both): kubectl's error and data streams of request 0.
    const ZLIB_SYN_STREAMS: [&[u8]; 2] = [
        &[
            0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x70,
            0x3a, 0x2b, 0x29, 0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86,
            0x14, 0xcb, 0x45, 0xa0, 0x24, 0xcc, 0x64, 0x61, 0x00, 0x24, 0x39, 0x8b, 0x20, 0x91,
            0x98, 0x09, 0x4a, 0xdc, 0x8c, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ],
        &[
            0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xc2, 0xaa, 0x15, 0x54, 0x0a, 0x25, 0x12, 0xd2, 0x09, 0x00,
            0x00, 0x00, 0xff, 0xff,
        ],
    ];

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn encode(encoder: &mut FrameEncoder, frame: Frame) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        encoder.encode(frame, &mut bytes).unwrap();
        bytes.to_vec()
    }

    /// Feeds `bytes` one byte at a time, as a peer writing field by field would.
    fn decode_trickled(decoder: &mut FrameDecoder, bytes: &[u8]) -> Vec<Frame> {
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for byte in bytes {
            buffer.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buffer.is_empty(), "left over: {buffer:?}");
        frames
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The Adler-32 that every SPDY/3 header stream names in its zlib header.
        let mut deflater = Compress::new(Compression::default(), true);
        assert_eq!(
            deflater.set_dictionary(HEADER_DICTIONARY).unwrap(),
            0xe3c6_a7c2
        );
    }

    #[test]
    fn header_blocks_from_zlib_inflate_with_the_dictionary() {
        let mut decoder = FrameDecoder::default();
        let frames = decode_trickled(&mut decoder, &ZLIB_SYN_STREAMS.concat());
        let stream = |stream_id, kind| Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(&[("streamtype", kind), ("port", "80"), ("requestid", "0")]),
        };
        assert_eq!(frames, [stream(1, "error"), stream(3, "data")]);
    }

    #[test]
    fn header_blocks_round_trip_through_one_compression_stream() {
        let mut encoder = FrameEncoder::default();
        let mut decoder = FrameDecoder::default();
        let reply = Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        };
        let first = encode(&mut encoder, reply.clone());
        // Control bit and version 3, SYN_REPLY, no flags; then stream 1 and a zlib
        // stream that announces the SPDY dictionary (FDICT, Adler-32 0xe3c6a7c2).
        assert_eq!(first[..4], [0x80, 0x03, 0x00, 0x02]);
        assert_eq!(usize::from(first[7]), first.len() - 8);
        assert_eq!(first[8..12], [0, 0, 0, 1]);
        assert_eq!(first[12] & 0x0f, 8, "deflate");
        assert_ne!(first[13] & 0x20, 0, "FDICT");
        assert_eq!(first[14..18], [0xe3, 0xc6, 0xa7, 0xc2]);
        assert_eq!(
            first[first.len() - 4..],
            [0x00, 0x00, 0xff, 0xff],
            "sync flush"
        );

        let headers = Frame::Headers {
            stream_id: 7,
            fin: true,
            headers: headers(&[("port", "8080"), ("x-multi", "a"), ("x-multi", "b")]),
        };
        let second = encode(&mut encoder, headers.clone());
        assert_eq!(second[..5], [0x80, 0x03, 0x00, 0x08, FLAG_FIN]);
        let frames = decode_trickled(&mut decoder, &[first, second].concat());
        assert_eq!(frames, [reply, headers]);
    }

    #[test]
    fn fixed_frames_are_byte_exact() {
        let mut encoder = FrameEncoder::default();
        let cases: [(Frame, &[u8]); 5] = [
            (
                Frame::Ping(1),
                &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1],
            ),
            (
                Frame::Data {
                    stream_id: 3,
                    fin: true,
                    data: Bytes::from_static(b"hi"),
                },
                &[0, 0, 0, 3, 0x01, 0, 0, 2, b'h', b'i'],
            ),
            (
                Frame::RstStream {
                    stream_id: 5,
                    status: RST_CANCEL,
                },
                &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 5],
            ),
            (
                Frame::GoAway {
                    last_good_stream_id: 9,
                    status: 0,
                },
                &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0],
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta: 0x1_0000,
                },
                &[0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0],
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(encode(&mut encoder, frame.clone()), bytes, "{frame:?}");
            assert_eq!(
                decode_trickled(&mut FrameDecoder::default(), bytes),
                [frame]
            );
        }
    }

    #[test]
    fn settings_and_unknown_control_frames_decode() {
        let settings = [
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 1, 0, 0,
        ];
        assert_eq!(
            decode_trickled(&mut FrameDecoder::default(), &settings),
            [Frame::Settings(vec![(1, 7, 0x1_0000)])]
        );
        let credential = [0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb];
        assert_eq!(
            decode_trickled(&mut FrameDecoder::default(), &credential),
            [Frame::Unknown { frame_type: 10 }]
        );
    }

    #[test]
    fn broken_frames_are_errors() {
        let mut decoder = FrameDecoder::default();
        let spdy2_ping = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            decoder.decode(&mut BytesMut::from(&spdy2_ping[..])),
            Err(SpdyError::UnsupportedVersion(2))
        ));
        let short_rst = [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            decoder.decode(&mut BytesMut::from(&short_rst[..])),
            Err(SpdyError::Malformed("RST_STREAM"))
        ));
        let garbage_block = [0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(matches!(
            FrameDecoder::default().decode(&mut BytesMut::from(&garbage_block[..])),
            Err(SpdyError::HeaderBlock(_))
        ));
        assert!(matches!(
            parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'p']),
            Err(SpdyError::HeaderBlock(_))
        ));
    }
}
