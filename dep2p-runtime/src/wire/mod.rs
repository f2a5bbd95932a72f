//! The wire format (`docs/PROTOCOL.md` is the normative description) and the reader of
//! frames. Nothing here knows the public `Error`: failures are [`WireError`]s.

mod budget;
mod compress;
mod datagram;
mod error;
mod frame;
mod header;
mod reader;
mod writer;

pub(crate) use budget::{hold, Budget};
pub use compress::Compression;
pub(crate) use compress::{unpack_into, unpacked_len, Pack, TAG_CALL_PACKED};
pub(crate) use datagram::{decode_datagram, encode_datagram, method_id, DatagramHead};
pub(crate) use error::WireError;
pub(crate) use frame::*;
pub use frame::{Kind, ALPN, ALPN_V1};
pub(crate) use header::MAX_NAME;
pub(crate) use header::{
    decode_call, decode_metadata, encode_metadata, CallHeader, HeaderLimits, IncomingHeader,
};
pub(crate) use reader::FrameReader;
pub(crate) use writer::write_frame;
